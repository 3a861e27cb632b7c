/**
 * The learned tier of triage: between the rules (heuristics.ts) and any model. A multinomial
 * logistic regression over the default embeddings (all-MiniLM-L6-v2, 384-d, from memory/) joined
 * with hashed word and character n-grams (which carry the keywords, the typos and the German,
 * French and Spanish mails MiniLM reads poorly), trained in-process on the labeled corpus's train
 * split plus the operator's own decisions. Its confidence is calibrated by temperature scaling
 * fitted on a held-out part of the training data.
 *
 * ```ts
 * const featurizer = await defaultFeaturizer(config);          // { featurizer } or { missing: 'why' }
 * const model = await LearnedTriage.train(corpusExamples('train'), featurizer);
 * const p = await model.predict('We will not need the service after March.');
 * // { intent: 'cancellation', confidence: 0.87, probs: { cancellation: 0.87, ... } }
 * ```
 *
 * No new dependency: the optimizer (Adam on the softmax cross-entropy with L2) and the calibration
 * are a few dozen lines each, tested in tests/agents/inbound/triage-learned.test.ts.
 */
import { createHash, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createEmbeddings, localMiniLMPresent, type KeelEmbeddings } from '../../memory/embeddings/index.ts';
import { z } from 'zod';
import { defineEntityType, isStateError, type Actor, type StateStore } from '../../shared-state/index.ts';
import { INTENTS, URGENCIES, cleanText, type Intent, type Urgency } from './heuristics.ts';

// ---- the corpus --------------------------------------------------------------------------------

/** One labeled message of agents/inbound/fixtures/triage-corpus.json (made by make-triage-corpus.ts). */
export interface CorpusItem {
  id: string;
  /** the hand-written message it was made from; its sendings share the split */
  base: string;
  split: 'train' | 'test';
  language: string;
  channel: 'email' | 'chat';
  subject?: string;
  text: string;
  intent: Intent;
  urgency: Urgency;
  escalate: boolean;
  /** the customer's messages in the 7 days before this one */
  priorContacts: number;
}

let corpus: CorpusItem[] | undefined;
/** The labeled triage corpus (read once). */
export function loadTriageCorpus(): CorpusItem[] {
  corpus ??= (JSON.parse(readFileSync(new URL('./fixtures/triage-corpus.json', import.meta.url), 'utf8')) as { items: CorpusItem[] }).items;
  return corpus;
}

/** A labeled example the learned tier trains on: from the corpus, or an operator's decision. */
export interface LabeledExample {
  id: string;
  text: string;
  subject?: string | undefined;
  intent: Intent;
  /** `corpus` or `operator` */
  source: string;
  /** examples of one group stay on one side of the calibration split (a corpus base; an operator example is its own) */
  group?: string;
  /** an operator's decision counts more than a corpus line (default 1; operator examples 3) */
  weight?: number;
}

/** The corpus's examples of one split, as training examples (the test split is for the bench only). */
export function corpusExamples(split: 'train'): LabeledExample[] {
  return loadTriageCorpus()
    .filter((c) => c.split === split)
    .map((c) => ({ id: c.id, text: c.text, subject: c.subject, intent: c.intent, source: 'corpus', group: c.base }));
}

/** What the learned tier reads of a message: the subject and the customer's own words. */
export const exampleText = (text: string, subject?: string) => [subject ?? '', cleanText(text)].filter(Boolean).join('\n');

// ---- features ----------------------------------------------------------------------------------

/** Turns texts into fixed-length vectors. */
export interface Featurizer {
  /** what it is, e.g. `local:all-minilm-l6-v2+ngrams:4096` */
  readonly id: string;
  readonly dim: number;
  features(texts: string[]): Promise<Float32Array[]>;
  /**
   * The cheap part of these features alone (the hashed n-grams, no model pass), when there is a
   * costly part: the learned tier trains a second, fast model on it and answers from that one
   * when it is sure, so most messages never wait for the embedding model.
   */
  readonly fast?: Featurizer;
}

function fnv1a(s: string, seed = 0): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/**
 * Hashed n-grams of a text into `out[offset .. offset+dim)`: words, word pairs, and character
 * 3- to 5-grams of each word (so "refnud" still shares most of "refund"); signed hashing, log
 * counts, unit length.
 */
export function hashedNgrams(text: string, dim: number, out = new Float32Array(dim), offset = 0): Float32Array {
  const words = text.toLowerCase().normalize('NFKC').match(/[\p{L}\p{N}']+/gu) ?? [];
  const counts = new Map<number, number>();
  const add = (tok: string, w: number) => {
    const h = fnv1a(tok);
    const i = h % dim;
    const sign = (fnv1a(tok, 0x9e3779b9) & 1) === 0 ? 1 : -1;
    counts.set(i, (counts.get(i) ?? 0) + sign * w);
  };
  for (let k = 0; k < words.length; k++) {
    const w = words[k]!;
    add(`w:${w}`, 1);
    if (k > 0) add(`b:${words[k - 1]!} ${w}`, 1);
    const p = ` ${w} `;
    for (let n = 3; n <= 5; n++) for (let i = 0; i + n <= p.length; i++) add(`c:${p.slice(i, i + n)}`, 0.3);
  }
  let norm = 0;
  for (const [i, v] of counts) {
    const x = Math.sign(v) * Math.log1p(Math.abs(v));
    counts.set(i, x);
    norm += x * x;
  }
  norm = Math.sqrt(norm) || 1;
  for (const [i, v] of counts) out[offset + i] = v / norm;
  return out;
}

/** Hashed n-grams only: the learned tier's representation when no embedding model is there. */
export function ngramFeaturizer(dim = 4096): Featurizer {
  return { id: `ngrams:${dim}`, dim, features: (texts) => Promise.resolve(texts.map((t) => hashedNgrams(t, dim))) };
}

/** Words of a message the embedding model reads: about 64 word pieces (subject and opening); the n-grams read it all. */
export const EMBED_WORDS = 48;
/** The first `words` words of a text: what the embedding model is given (the cost of a pass grows with its length). */
export const embeddingHead = (text: string, words = EMBED_WORDS) => {
  const ws = text.split(/\s+/).filter(Boolean);
  return ws.length <= words ? text : ws.slice(0, words).join(' ');
};

/**
 * An embedding model's vectors (unit length) of each text's first {@link EMBED_WORDS} words,
 * joined with hashed n-grams of the whole text (`ngramDim` 0: embeddings
 * alone). `cacheFile`: vectors are kept there by text hash (the bench and retraining embed a text
 * once; the model id is in the file, a file of another model is ignored).
 */
export function embeddingFeaturizer(emb: KeelEmbeddings, embDim: number, ngramDim = 4096, cacheFile?: string, persist: (text: string) => boolean = () => true): Featurizer {
  let cache: Map<string, number[]> | undefined;
  // what is in the file: only texts `persist` allows (the corpus, not customers' mail; it is given the head the model reads) are written
  const saved = new Set<string>();
  const key = (t: string) => createHash('sha256').update(t).digest('hex').slice(0, 32);
  const load = () => {
    if (cache) return cache;
    cache = new Map();
    if (cacheFile && existsSync(cacheFile)) {
      try {
        const j = JSON.parse(readFileSync(cacheFile, 'utf8')) as { model: string; vectors: Record<string, number[]> };
        if (j.model === emb.id) {
          cache = new Map(Object.entries(j.vectors));
          for (const k of cache.keys()) saved.add(k);
        }
      } catch {
        // a broken cache is rebuilt
      }
    }
    return cache;
  };
  return {
    id: `${emb.id}${ngramDim ? `+ngrams:${ngramDim}` : ''}`,
    dim: embDim + ngramDim,
    ...(ngramDim ? { fast: ngramFeaturizer(ngramDim) } : {}),
    async features(full) {
      const c = load();
      // the model reads the head of each text (cache keys are of the head: a short text's key is unchanged)
      const texts = full.map((t) => embeddingHead(t));
      const missing = [...new Set(texts.filter((t) => !c.has(key(t))))];
      if (missing.length) {
        const got = await emb.embedDocuments(missing);
        missing.forEach((t, k) => c.set(key(t), got[k]!.map((v) => Math.round(v * 1e6) / 1e6)));
        if (cacheFile && missing.some(persist)) {
          mkdirSync(dirname(cacheFile), { recursive: true });
          const keep = new Set([...c.keys()].filter((k) => saved.has(k)));
          for (const t of missing) if (persist(t)) keep.add(key(t));
          for (const k of keep) saved.add(k);
          writeFileSync(cacheFile, JSON.stringify({ model: emb.id, vectors: Object.fromEntries([...keep].map((k) => [k, c.get(k)!])) }));
        }
      }
      const vecs = texts.map((t) => c.get(key(t))!);
      return full.map((t, k) => {
        const out = new Float32Array(embDim + ngramDim);
        const v = vecs[k]!;
        for (let i = 0; i < embDim; i++) out[i] = v[i] ?? 0;
        if (ngramDim) hashedNgrams(t, ngramDim, out, embDim);
        return out;
      });
    },
  };
}

/**
 * The featurizer triage uses: the configured embeddings (KEEL_EMBEDDINGS, default the local
 * MiniLM) joined with n-grams. When the local model is not provisioned: `missing` says so, and
 * triage stays with the rules.
 */
export async function defaultFeaturizer(cfg: { embeddings: string; modelsDir: string; modelEnv: Record<string, string> }, cacheFile?: string, persist?: (text: string) => boolean): Promise<{ featurizer: Featurizer } | { missing: string }> {
  if (cfg.embeddings.startsWith('local:') && !(await localMiniLMPresent(cfg.modelsDir))) {
    return { missing: `embedding model ${cfg.embeddings} is not provisioned in ${cfg.modelsDir} (run \`npm run provision\`)` };
  }
  try {
    const emb = createEmbeddings({ spec: cfg.embeddings, modelsDir: cfg.modelsDir, modelEnv: cfg.modelEnv });
    return { featurizer: embeddingFeaturizer(emb, await emb.dimensions(), 4096, cacheFile, persist) };
  } catch (err) {
    return { missing: `embedding model ${cfg.embeddings} unavailable: ${(err as Error).message}` };
  }
}

// ---- the classifier ----------------------------------------------------------------------------

export interface SoftmaxWeights {
  /** classes × dim, row-major */
  w: Float32Array;
  b: Float64Array;
}

export interface TrainOptions {
  /** L2 penalty (default 1e-4) */
  l2?: number;
  /** full passes over the data (default 60) */
  epochs?: number;
  /** Adam step (default 0.05) */
  lr?: number;
  /** start from these weights (incremental retraining) */
  init?: SoftmaxWeights;
  /** per-example weights (default 1) */
  weights?: number[];
}

/** Raw class scores W·x + b. */
export function logitsOf(m: SoftmaxWeights, classes: number, x: Float32Array): Float64Array {
  const dim = x.length;
  const out = new Float64Array(classes);
  for (let c = 0; c < classes; c++) {
    let s = m.b[c]!;
    const row = c * dim;
    for (let i = 0; i < dim; i++) s += m.w[row + i]! * x[i]!;
    out[c] = s;
  }
  return out;
}

/** softmax(z / t) */
export function softmax(z: ArrayLike<number>, t = 1): Float64Array {
  const out = new Float64Array(z.length);
  let max = -Infinity;
  for (let i = 0; i < z.length; i++) max = Math.max(max, z[i]! / t);
  let sum = 0;
  for (let i = 0; i < z.length; i++) sum += out[i] = Math.exp(z[i]! / t - max);
  for (let i = 0; i < z.length; i++) out[i]! /= sum;
  return out;
}

/** x / |x| */
function unit(x: Float32Array): Float32Array {
  let n = 0;
  for (let i = 0; i < x.length; i++) n += x[i]! * x[i]!;
  n = Math.sqrt(n) || 1;
  return Float32Array.from(x, (v) => v / n);
}

/** The indices of a vector's non-zero entries (hashed n-grams are sparse: training skips the zeros). */
function nonZero(x: Float32Array): Int32Array {
  const out: number[] = [];
  for (let i = 0; i < x.length; i++) if (x[i] !== 0) out.push(i);
  return Int32Array.from(out);
}

function sparseLogits(w: Float32Array, b: Float64Array, classes: number, dim: number, x: Float32Array, nz: Int32Array, out: Float64Array): Float64Array {
  for (let c = 0; c < classes; c++) {
    let s = b[c]!;
    const row = c * dim;
    for (let k = 0; k < nz.length; k++) {
      const i = nz[k]!;
      s += w[row + i]! * x[i]!;
    }
    out[c] = s;
  }
  return out;
}

/**
 * Multinomial logistic regression by full-batch Adam on the weighted mean cross-entropy plus
 * `l2`·‖W‖². Deterministic (zero init, or `init`); features dense, zeros skipped.
 */
export function trainSoftmax(X: Float32Array[], y: number[], classes: number, o: TrainOptions = {}): SoftmaxWeights {
  const steps = softmaxEpochs(X, y, classes, o);
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}

/** {@link trainSoftmax} that gives the event loop a turn after every epoch (an agent trains while it serves). */
export async function trainSoftmaxAsync(X: Float32Array[], y: number[], classes: number, o: TrainOptions = {}): Promise<SoftmaxWeights> {
  const steps = softmaxEpochs(X, y, classes, o);
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

/** The training loop, one epoch per step. */
function* softmaxEpochs(X: Float32Array[], y: number[], classes: number, o: TrainOptions): Generator<number, SoftmaxWeights> {
  const n = X.length;
  const dim = X[0]?.length ?? 0;
  const l2 = o.l2 ?? 1e-4;
  const lr = o.lr ?? 0.05;
  const epochs = o.epochs ?? 60;
  const sw = o.weights ?? X.map(() => 1);
  const total = sw.reduce((a, b) => a + b, 0) || 1;
  const w = o.init ? Float32Array.from(o.init.w) : new Float32Array(classes * dim);
  const b = o.init ? Float64Array.from(o.init.b) : new Float64Array(classes);
  const mw = new Float32Array(w.length), vw = new Float32Array(w.length);
  const mb = new Float64Array(classes), vb = new Float64Array(classes);
  const gw = new Float32Array(w.length), gb = new Float64Array(classes);
  const nzs = X.map(nonZero);
  const z = new Float64Array(classes);
  const b1 = 0.9, b2 = 0.999, eps = 1e-8;
  for (let ep = 1; ep <= epochs; ep++) {
    gw.fill(0);
    gb.fill(0);
    for (let k = 0; k < n; k++) {
      const x = X[k]!, nz = nzs[k]!;
      const p = softmax(sparseLogits(w, b, classes, dim, x, nz, z));
      p[y[k]!]! -= 1;
      const s = sw[k]! / total;
      for (let c = 0; c < classes; c++) {
        const g = p[c]! * s;
        gb[c]! += g;
        const row = c * dim;
        for (let j = 0; j < nz.length; j++) {
          const i = nz[j]!;
          gw[row + i]! += g * x[i]!;
        }
      }
    }
    const c1 = 1 - b1 ** ep, c2 = 1 - b2 ** ep;
    for (let i = 0; i < w.length; i++) {
      const g = gw[i]! + 2 * l2 * w[i]!;
      mw[i] = b1 * mw[i]! + (1 - b1) * g;
      vw[i] = b2 * vw[i]! + (1 - b2) * g * g;
      w[i]! -= (lr * (mw[i]! / c1)) / (Math.sqrt(vw[i]! / c2) + eps);
    }
    for (let c = 0; c < classes; c++) {
      const g = gb[c]!;
      mb[c] = b1 * mb[c]! + (1 - b1) * g;
      vb[c] = b2 * vb[c]! + (1 - b2) * g * g;
      b[c]! -= (lr * (mb[c]! / c1)) / (Math.sqrt(vb[c]! / c2) + eps);
    }
    yield ep;
  }
  return { w, b };
}

/** Mean negative log-likelihood of the labels under softmax(logits / t). */
export function nll(logits: ArrayLike<number>[], y: number[], t: number): number {
  let s = 0;
  logits.forEach((z, k) => (s -= Math.log(Math.max(1e-12, softmax(z, t)[y[k]!]!))));
  return s / Math.max(1, logits.length);
}

/**
 * Temperature scaling (Guo et al. 2017): the t in [0.05, 20] that minimizes the held-out NLL,
 * by a log-spaced grid and a golden-section refinement. t > 1 softens an overconfident model.
 */
export function fitTemperature(logits: ArrayLike<number>[], y: number[]): number {
  if (logits.length === 0) return 1;
  let best = 1, bestLoss = nll(logits, y, 1);
  for (let k = 0; k <= 60; k++) {
    const t = Math.exp(Math.log(0.05) + (k / 60) * (Math.log(20) - Math.log(0.05)));
    const l = nll(logits, y, t);
    if (l < bestLoss) [best, bestLoss] = [t, l];
  }
  let lo = Math.log(best) - 0.12, hi = Math.log(best) + 0.12;
  const phi = (Math.sqrt(5) - 1) / 2;
  for (let k = 0; k < 30; k++) {
    const a = hi - phi * (hi - lo), b = lo + phi * (hi - lo);
    if (nll(logits, y, Math.exp(a)) < nll(logits, y, Math.exp(b))) hi = b;
    else lo = a;
  }
  const t = Math.exp((lo + hi) / 2);
  return nll(logits, y, t) <= bestLoss ? t : best;
}

/** Expected calibration error: |accuracy − confidence| averaged over `bins` equal-width confidence bins, weighted by their size. */
export function expectedCalibrationError(confidence: number[], correct: boolean[], bins = 10): number {
  const n = confidence.length;
  if (n === 0) return 0;
  let e = 0;
  for (let b = 0; b < bins; b++) {
    const idx = confidence.map((c, i) => [c, i] as const).filter(([c]) => (b === 0 ? c >= 0 : c > b / bins) && c <= (b + 1) / bins).map(([, i]) => i);
    if (idx.length === 0) continue;
    const acc = idx.filter((i) => correct[i]).length / idx.length;
    const conf = idx.reduce((s, i) => s + confidence[i]!, 0) / idx.length;
    e += (idx.length / n) * Math.abs(acc - conf);
  }
  return e;
}

export interface LearnedPrediction {
  intent: Intent;
  /** answered by the fast n-gram model (no embedding pass): it was sure, or it agreed with the rules */
  fast?: boolean;
  /** calibrated probability of `intent` (or the similarity to the operator's example it follows) */
  confidence: number;
  probs: Record<Intent, number>;
  /** the operator's example this message is nearly the same as, which decided the intent */
  follows?: { id: string; intent: Intent; similarity: number };
}

/** A message at least this similar (cosine of the features) to an operator's example takes its intent. */
export const OPERATOR_EXAMPLE_SIMILARITY = 0.8;
/**
 * The fast n-gram model answers alone (no embedding pass) at this calibrated confidence, or when
 * it agrees with the rules. Chosen by 5-fold cross-validation on the train split (by base): it
 * skips the embedding for about 60 % of messages for about 1.5 points of accuracy.
 */
export const FAST_CONFIDENCE = 0.6;
/** A message this similar (n-gram cosine) to an operator's example takes the full path, where the operator's examples are matched. */
const FAST_OPERATOR_GUARD = 0.5;
/** The L2 penalty of the learned tier (5-fold cross-validation on the train split over 1e-5 … 3e-3). */
export const LEARNED_L2 = 3e-4;

export interface TrainReport {
  examples: number;
  operatorExamples: number;
  featurizer: string;
  /** fitted on `calibrationExamples` held out of training, then the model is refit on everything */
  temperature: number;
  calibrationExamples: number;
  /** on the calibration part, before and after temperature scaling */
  eceBefore: number;
  eceAfter: number;
  trainMs: number;
}

const inCalibration = (group: string) => createHash('sha256').update(`calibration:${group}`).digest()[0]! < 256 * 0.2;

/**
 * The learned intent classifier: train it on examples, ask it for a calibrated intent, retrain
 * it warm with the operator's new decisions.
 */
export class LearnedTriage {
  readonly classes: readonly Intent[] = INTENTS;
  readonly featurizer: Featurizer;
  readonly temperature: number;
  readonly report: TrainReport;
  private readonly weights: SoftmaxWeights;
  private readonly cache: Map<string, Float32Array>;
  /** the fast model over the featurizer's cheap part (when it has one), with its own temperature */
  private readonly fastModel: { featurizer: Featurizer; weights: SoftmaxWeights; temperature: number } | undefined;
  /** the operator's examples, unit-length: a near-identical message follows the operator at once */
  private readonly operator: Array<{ id: string; intent: Intent; x: Float32Array; fx?: Float32Array }>;
  private constructor(featurizer: Featurizer, weights: SoftmaxWeights, temperature: number, report: TrainReport, cache: Map<string, Float32Array>, operator: Array<{ id: string; intent: Intent; x: Float32Array; fx?: Float32Array }> = [], fastModel?: { featurizer: Featurizer; weights: SoftmaxWeights; temperature: number }) {
    this.fastModel = fastModel;
    this.operator = operator;
    this.featurizer = featurizer;
    this.weights = weights;
    this.temperature = temperature;
    this.report = report;
    this.cache = cache;
  }

  /**
   * Trains on `examples`: first without a calibration part (20 % of the groups, by hash) to fit
   * the temperature on it, then on everything, warm from the first fit. `previous` reuses a
   * model's feature cache and weights (incremental retraining after operator decisions).
   */
  static async train(examples: LabeledExample[], featurizer: Featurizer, o: TrainOptions & { previous?: LearnedTriage } = {}): Promise<LearnedTriage> {
    const t0 = performance.now();
    const cache = o.previous?.featurizer.id === featurizer.id ? o.previous.cache : new Map<string, Float32Array>();
    const texts = examples.map((e) => exampleText(e.text, e.subject));
    const todo = [...new Set(texts.filter((t) => !cache.has(t)))];
    for (let i = 0; i < todo.length; i += 32) {
      const batch = todo.slice(i, i + 32);
      (await featurizer.features(batch)).forEach((v, k) => cache.set(batch[k]!, v));
    }
    const X = texts.map((t) => cache.get(t)!);
    const y = examples.map((e) => INTENTS.indexOf(e.intent));
    if (y.some((c) => c < 0)) throw new RangeError(`unknown intent in training examples (known: ${INTENTS.join(', ')})`);
    const sw = examples.map((e) => e.weight ?? (e.source === 'operator' ? 3 : 1));
    const C = INTENTS.length;
    const warm = o.previous?.featurizer.id === featurizer.id ? o.previous.weights : undefined;
    const epochs = o.epochs ?? (warm ? 25 : 60);

    const cal = examples.map((e) => e.source !== 'operator' && inCalibration(e.group ?? e.id));
    const fitIdx = cal.flatMap((c, i) => (c ? [] : [i]));
    const calIdx = cal.flatMap((c, i) => (c ? [i] : []));
    const l2 = o.l2 ?? LEARNED_L2;
    const first = await trainSoftmaxAsync(fitIdx.map((i) => X[i]!), fitIdx.map((i) => y[i]!), C, { ...o, l2, epochs, weights: fitIdx.map((i) => sw[i]!), ...(warm ? { init: warm } : {}) });
    const calLogits = calIdx.map((i) => logitsOf(first, C, X[i]!));
    const calY = calIdx.map((i) => y[i]!);
    const temperature = fitTemperature(calLogits, calY);
    const eceAt = (t: number) => {
      const ps = calLogits.map((z) => softmax(z, t));
      return expectedCalibrationError(ps.map((p) => Math.max(...p)), ps.map((p, k) => p.indexOf(Math.max(...p)) === calY[k]));
    };
    const weights = await trainSoftmaxAsync(X, y, C, { ...o, l2, epochs: Math.max(10, Math.round(epochs / 3)), weights: sw, init: first });
    // the fast model: the same fit and calibration over the cheap features alone
    let fastModel: { featurizer: Featurizer; weights: SoftmaxWeights; temperature: number } | undefined;
    let FX: Float32Array[] = [];
    if (featurizer.fast) {
      const ff = featurizer.fast;
      FX = await ff.features(texts);
      const fwarm = o.previous?.featurizer.id === featurizer.id ? o.previous.fastModel?.weights : undefined;
      const ffirst = await trainSoftmaxAsync(fitIdx.map((i) => FX[i]!), fitIdx.map((i) => y[i]!), C, { ...o, l2, epochs, weights: fitIdx.map((i) => sw[i]!), ...(fwarm ? { init: fwarm } : {}) });
      const ft = fitTemperature(calIdx.map((i) => logitsOf(ffirst, C, FX[i]!)), calY);
      fastModel = { featurizer: ff, temperature: ft, weights: await trainSoftmaxAsync(FX, y, C, { ...o, l2, epochs: Math.max(10, Math.round(epochs / 3)), weights: sw, init: ffirst }) };
    }
    return new LearnedTriage(featurizer, weights, temperature, {
      examples: examples.length,
      operatorExamples: examples.filter((e) => e.source === 'operator').length,
      featurizer: featurizer.id,
      temperature: Math.round(temperature * 1000) / 1000,
      calibrationExamples: calIdx.length,
      eceBefore: Math.round(eceAt(1) * 1000) / 1000,
      eceAfter: Math.round(eceAt(temperature) * 1000) / 1000,
      trainMs: Math.round(performance.now() - t0),
    }, cache, examples.flatMap((e, i) => (e.source === 'operator' ? [{ id: e.id, intent: e.intent, x: unit(X[i]!), ...(FX[i] ? { fx: unit(FX[i]) } : {}) }] : [])), fastModel);
  }

  /**
   * The calibrated intent of one message (`text` raw: cleaned here). `rulesIntent`, the rules'
   * answer, lets the fast n-gram model answer alone when it agrees with it or is sure
   * ({@link FAST_CONFIDENCE}); else (or near an operator's example) the full model answers.
   */
  async predict(text: string, subject?: string, rulesIntent?: Intent): Promise<LearnedPrediction> {
    const t = exampleText(text, subject);
    if (this.fastModel) {
      const [fx] = await this.fastModel.featurizer.features([t]);
      const f = fx!;
      const u = unit(f);
      const nearOperator = this.operator.some((o) => o.fx !== undefined && dot(u, o.fx) >= FAST_OPERATOR_GUARD);
      if (!nearOperator) {
        const p = this.probsOf(this.fastModel.weights, this.fastModel.temperature, f);
        if (p.confidence >= FAST_CONFIDENCE || (rulesIntent !== undefined && p.intent === rulesIntent)) return { ...p, fast: true };
      }
    }
    const [x] = await this.featurizer.features([t]);
    return this.predictFeatures(x!);
  }

  private probsOf(m: SoftmaxWeights, temperature: number, x: Float32Array): LearnedPrediction {
    const p = softmax(sparseLogits(m.w, m.b, INTENTS.length, x.length, x, nonZero(x), new Float64Array(INTENTS.length)), temperature);
    let best = 0;
    for (let c = 1; c < p.length; c++) if (p[c]! > p[best]!) best = c;
    const probs = Object.fromEntries(INTENTS.map((i, c) => [i, Math.round(p[c]! * 1000) / 1000])) as Record<Intent, number>;
    return { intent: INTENTS[best]!, confidence: Math.round(p[best]! * 1000) / 1000, probs };
  }

  /** The same model reading through another featurizer of the same kind (e.g. one without a vector cache, to time a never-seen message). */
  withFeaturizer(f: Featurizer): LearnedTriage {
    if (f.id !== this.featurizer.id) throw new RangeError(`featurizer ${f.id} is not ${this.featurizer.id}`);
    return new LearnedTriage(f, this.weights, this.temperature, this.report, this.cache, this.operator, this.fastModel && f.fast ? { ...this.fastModel, featurizer: f.fast } : undefined);
  }

  /** The full model's calibrated intent for a feature vector (the operator's near-identical examples first). */
  predictFeatures(x: Float32Array): LearnedPrediction {
    const full = this.probsOf(this.weights, this.temperature, x);
    const probs = full.probs;
    // the operator's decision on a nearly identical message wins over the regression
    if (this.operator.length) {
      const u = unit(x);
      let near: { id: string; intent: Intent; similarity: number } | undefined;
      for (const o of this.operator) {
        let d = 0;
        for (let i = 0; i < u.length; i++) d += u[i]! * o.x[i]!;
        if (d >= OPERATOR_EXAMPLE_SIMILARITY && (!near || d > near.similarity)) near = { id: o.id, intent: o.intent, similarity: Math.round(d * 1000) / 1000 };
      }
      if (near) return { intent: near.intent, confidence: Math.max(probs[near.intent], near.similarity), probs, follows: near };
    }
    return full;
  }
}

function dot(a: Float32Array, b: Float32Array): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d += a[i]! * b[i]!;
  return d;
}

// ---- the operator's decisions ------------------------------------------------------------------

export const TRIAGE_EXAMPLE = 'triage_example';

const exampleLabels = {
  intent: z.enum(INTENTS),
  urgency: z.enum(URGENCIES).optional(),
  escalate: z.boolean().optional(),
};

/**
 * An operator's decision as a labeled example: the message, the labels the operator gave, what
 * triage had said, where it came from and who decided. Its change log (`keel state history
 * triage_example ID`) is the audit record; `forgotten` examples stay, out of training.
 */
const triageExampleSchema = z.strictObject({
    text: z.string().max(20_000),
    subject: z.string().max(1000).optional(),
    ...exampleLabels,
    /** triage's answer before the operator corrected it */
    previous: z.strictObject({ intent: z.string().max(64), urgency: z.string().max(16).optional(), escalate: z.boolean().optional(), tier: z.number().optional(), confidence: z.number().optional() }).optional(),
    /** `retriage` (keel ticket retriage) or `approval` (an edited approval) */
    source: z.enum(['retriage', 'approval']),
    ticketId: z.string().max(200).optional(),
    messageId: z.string().max(200).optional(),
    /** who decided (the operator's name) */
    by: z.string().min(1).max(200),
    at: z.iso.datetime({ offset: true }),
    status: z.enum(['active', 'forgotten']).default('active'),
    forgottenBy: z.string().max(200).optional(),
    forgottenAt: z.iso.datetime({ offset: true }).optional(),
});
export type TriageExampleState = z.infer<typeof triageExampleSchema>;

export const triageExampleType = defineEntityType({
  name: TRIAGE_EXAMPLE,
  schemaVersion: 1,
  schema: triageExampleSchema,
  searchFields: ['intent', 'status', 'source', 'ticketId', 'by'],
});

/** `tex-` + 16 hex of the ticket and message: a second decision on one message replaces the first. */
export const exampleIdFor = (ticketId: string, messageId: string) => `tex-${createHash('sha256').update(`${ticketId}:${messageId}`).digest('hex').slice(0, 16)}`;

type ExampleStore = Pick<StateStore, 'get' | 'append' | 'query'>;

/** Records (or replaces) an operator's decision on a message. */
export async function recordExample(store: ExampleStore, e: Omit<TriageExampleState, 'status' | 'at' | 'forgottenBy' | 'forgottenAt'> & { at?: string }, actor: Actor): Promise<{ id: string; replaced: boolean }> {
  const id = e.ticketId && e.messageId ? exampleIdFor(e.ticketId, e.messageId) : `tex-${randomUUID().slice(0, 16)}`;
  const data = { ...e, at: e.at ?? new Date().toISOString(), status: 'active' as const };
  // two decisions on one message at once (two operators, or a retriage racing an approval): the
  // one that appends last replaces the other; a version conflict is read again, not an error
  for (let attempt = 0; ; attempt++) {
    const cur = await store.get<TriageExampleState>(TRIAGE_EXAMPLE, id);
    try {
      if (!cur) {
        await store.append(TRIAGE_EXAMPLE, id, 0, [{ type: 'created', data }], { actor });
        return { id, replaced: false };
      }
      // a newer decision on the same message: its labels replace the old ones (the change log keeps both)
      const patch: Record<string, unknown> = { ...data };
      await store.append(TRIAGE_EXAMPLE, id, cur.version, [{ type: 'updated', data: patch }], { actor });
      return { id, replaced: true };
    } catch (err) {
      if (!isStateError(err, 'STATE_VERSION_CONFLICT') || attempt >= 20) throw err;
      await new Promise((r) => setTimeout(r, Math.random() * 10 * (attempt + 1)));
    }
  }
}

/** Takes an example out of training (kept, marked forgotten, with who and when). */
export async function forgetExample(store: ExampleStore, id: string, actor: Actor): Promise<TriageExampleState | undefined> {
  const cur = await store.get<TriageExampleState>(TRIAGE_EXAMPLE, id);
  if (!cur || cur.deleted) return undefined;
  if (cur.state.status === 'forgotten') return cur.state;
  const r = await store.append<TriageExampleState>(TRIAGE_EXAMPLE, id, cur.version, [{ type: 'updated', data: { status: 'forgotten', forgottenBy: actor.id, forgottenAt: new Date().toISOString() } }], { actor });
  return r.entity.state;
}

/** The operator's examples, newest first (`status` to filter). */
export async function listExamples(store: Pick<StateStore, 'query'>, o: { status?: 'active' | 'forgotten'; limit?: number } = {}): Promise<Array<TriageExampleState & { id: string; version: number }>> {
  const page = await store.query<TriageExampleState>(TRIAGE_EXAMPLE, { ...(o.status ? { filter: { status: o.status } } : {}), sort: { updatedAt: 'desc' }, limit: o.limit ?? 1000 });
  return page.items.map((e) => ({ ...e.state, id: e.entityId, version: e.version }));
}

/** The active examples as training examples. */
export const operatorExamples = (xs: ReadonlyArray<TriageExampleState & { id: string }>): LabeledExample[] =>
  xs.filter((x) => x.status === 'active').map((x) => ({ id: x.id, text: x.text, subject: x.subject, intent: x.intent, source: 'operator', group: x.id }));

/** A fingerprint of the active examples (ids and versions): a replica retrains when it changes. */
export const examplesFingerprint = (xs: ReadonlyArray<{ id: string; version: number; status: string }>) =>
  createHash('sha256').update(xs.filter((x) => x.status === 'active').map((x) => `${x.id}@${x.version}`).sort().join(',')).digest('hex').slice(0, 16);

// ---- the learned tier in a triage process ------------------------------------------------------

export interface LearnedTierAnswer {
  model?: LearnedTriage;
  /** why there is no model, or that it is being retrained */
  note?: string;
}

/**
 * The learned tier of one process: its featurizer, its model, and a background retraining
 * whenever the operator's active examples change (any replica notices on its next triage, or
 * when the `triage.learn` task reaches it). Until the first model is trained, triage uses the
 * rules and says so.
 */
export class LearnedTier {
  private featurizer: Promise<{ featurizer: Featurizer } | { missing: string }> | undefined;
  private model: LearnedTriage | undefined;
  private fingerprint: string | undefined;
  private training: Promise<void> | undefined;
  private trainingFor: string | undefined;
  private lastError: string | undefined;
  private readonly cfg: { embeddings: string; modelsDir: string; modelEnv: Record<string, string>; dataDir: string };

  constructor(cfg: { embeddings: string; modelsDir: string; modelEnv: Record<string, string>; dataDir: string }) {
    this.cfg = cfg;
  }

  /** The model to use now; `wait` waits for a retraining the examples call for (the `triage.learn` task does). */
  async current(store: Pick<StateStore, 'query'>, o: { wait?: boolean } = {}): Promise<LearnedTierAnswer> {
    // the corpus's vectors are kept beside the models (shared by every store on the machine); customers' mail is not written there
    this.featurizer ??= defaultFeaturizer(this.cfg, corpusEmbeddingsCache(this.cfg.modelsDir), isCorpusText);
    const f = await this.featurizer;
    if ('missing' in f) return { note: `learned tier off: ${f.missing}; rules only` };
    const examples = await listExamples(store, { status: 'active' });
    const fp = examplesFingerprint(examples);
    if (fp !== this.fingerprint && fp !== this.trainingFor) {
      const previous = this.model;
      this.trainingFor = fp;
      const run = LearnedTriage.train([...corpusExamples('train'), ...operatorExamples(examples)], f.featurizer, previous ? { previous } : {})
        .then((m) => {
          this.model = m;
          this.fingerprint = fp;
          this.lastError = undefined;
        })
        .catch((err: unknown) => {
          this.lastError = (err as Error).message;
        })
        .finally(() => {
          if (this.trainingFor === fp) this.trainingFor = undefined;
          if (this.training === run) this.training = undefined;
        });
      this.training = run;
    }
    if (o.wait && this.training) await this.training;
    if (this.lastError && !this.model) return { note: `learned tier failed to train (${this.lastError}); rules only` };
    if (!this.model) return { note: 'learned tier still training in the background; rules only for now' };
    return { model: this.model, ...(this.training ? { note: 'learned tier retraining in the background with new operator examples' } : {}) };
  }
}

/** Where the corpus's embedding vectors are cached: `<modelsDir>/../cache/triage-corpus-embeddings.json`. */
export const corpusEmbeddingsCache = (modelsDir: string) => join(modelsDir, '..', 'cache', 'triage-corpus-embeddings.json');
let corpusTexts: Set<string> | undefined;
const isCorpusText = (t: string) => (corpusTexts ??= new Set(loadTriageCorpus().map((c) => embeddingHead(exampleText(c.text, c.subject))))).has(t);

const tiers = new Map<string, LearnedTier>();
/** The process's learned tier for a configuration (one per embeddings, models dir and data dir). */
export function learnedTier(cfg: { embeddings: string; modelsDir: string; modelEnv: Record<string, string>; dataDir: string }): LearnedTier {
  const key = `${cfg.embeddings}|${cfg.modelsDir}|${cfg.dataDir}`;
  let t = tiers.get(key);
  if (!t) tiers.set(key, (t = new LearnedTier(cfg)));
  return t;
}
