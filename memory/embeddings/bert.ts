/**
 * The BERT encoder of all-MiniLM-L6-v2 in plain TypeScript: token + position + type embeddings
 * and LayerNorm, then per layer multi-head self-attention, a residual LayerNorm, a GELU (erf)
 * feed-forward and another residual LayerNorm; then mean pooling and L2 normalization, as
 * sentence-transformers does.
 *
 * Batching: the tokens of all texts of a batch are stacked into one matrix (no padding rows at
 * all), so every linear layer is one large matrix product; attention runs per text over its
 * own tokens only, which is exactly what BERT's attention mask does to padded batches.
 *
 * Speed: the linear layers (~95% of the multiply-adds) go through a {@link LinearKernel}: the
 * WebAssembly SIMD one of kernel.ts (~10x faster), or {@link jsKernel}, plain TypeScript
 * (V8 does not vectorize, so it is register-tiled: 4 tokens × 2 outputs per inner loop, 6 loads
 * for 8 multiply-adds, over weights kept in PyTorch's `[out, in]` layout) kept as the fallback
 * and as the reference the WebAssembly one is tested against.
 */
import type { SafetensorsFile } from './safetensors.ts';

export interface BertConfig {
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  intermediateSize: number;
  vocabSize: number;
  maxPositions: number;
  typeVocabSize: number;
  layerNormEps: number;
}

export interface Linear {
  /** `[out, in]` row-major */
  w: Float32Array;
  b: Float32Array;
  in: number;
  out: number;
}

export interface LayerNorm {
  g: Float32Array;
  b: Float32Array;
}

interface Layer {
  q: Linear;
  k: Linear;
  v: Linear;
  o: Linear;
  ln1: LayerNorm;
  up: Linear;
  down: Linear;
  ln2: LayerNorm;
}

export interface BertWeights {
  config: BertConfig;
  wordEmb: Float32Array;
  posEmb: Float32Array;
  typeEmb: Float32Array;
  embLn: LayerNorm;
  layers: Layer[];
}

/** Reads the weights from a safetensors file, checking every shape against `config`. Accepts names with or without a `bert.` prefix. */
export function loadBertWeights(st: SafetensorsFile, config: BertConfig): BertWeights {
  const H = config.hiddenSize;
  const I = config.intermediateSize;
  const prefix = st.tensors.has('embeddings.word_embeddings.weight') ? '' : st.tensors.has('bert.embeddings.word_embeddings.weight') ? 'bert.' : '';
  const t = (name: string, shape: number[]): Float32Array => st.f32(prefix + name, shape);
  const lin = (name: string, out: number, inn: number): Linear => ({ w: t(`${name}.weight`, [out, inn]), b: t(`${name}.bias`, [out]), in: inn, out });
  const ln = (name: string): LayerNorm => ({ g: t(`${name}.weight`, [H]), b: t(`${name}.bias`, [H]) });
  const layers: Layer[] = [];
  for (let l = 0; l < config.numLayers; l++) {
    const p = `encoder.layer.${l}`;
    layers.push({
      q: lin(`${p}.attention.self.query`, H, H),
      k: lin(`${p}.attention.self.key`, H, H),
      v: lin(`${p}.attention.self.value`, H, H),
      o: lin(`${p}.attention.output.dense`, H, H),
      ln1: ln(`${p}.attention.output.LayerNorm`),
      up: lin(`${p}.intermediate.dense`, I, H),
      down: lin(`${p}.output.dense`, H, I),
      ln2: ln(`${p}.output.LayerNorm`),
    });
  }
  return {
    config,
    wordEmb: t('embeddings.word_embeddings.weight', [config.vocabSize, H]),
    posEmb: t('embeddings.position_embeddings.weight', [config.maxPositions, H]),
    typeEmb: t('embeddings.token_type_embeddings.weight', [config.typeVocabSize, H]),
    embLn: ln('embeddings.LayerNorm'),
    layers,
  };
}

/** y[n, out] = x[n, in] · Wᵀ + b, W in `[out, in]` layout. `out` must be even. */
export function linear(x: Float32Array, n: number, L: Linear, y: Float32Array): void {
  const { w, b, in: K, out: O } = L;
  let i = 0;
  for (; i + 3 < n; i += 4) {
    const x0 = i * K;
    const x1 = x0 + K;
    const x2 = x1 + K;
    const x3 = x2 + K;
    for (let o = 0; o < O; o += 2) {
      const w0 = o * K;
      const w1 = w0 + K;
      let a00 = 0, a01 = 0, a10 = 0, a11 = 0, a20 = 0, a21 = 0, a30 = 0, a31 = 0;
      for (let k = 0; k < K; k++) {
        const wa = w[w0 + k]!;
        const wb = w[w1 + k]!;
        const v0 = x[x0 + k]!;
        const v1 = x[x1 + k]!;
        const v2 = x[x2 + k]!;
        const v3 = x[x3 + k]!;
        a00 += v0 * wa; a01 += v0 * wb;
        a10 += v1 * wa; a11 += v1 * wb;
        a20 += v2 * wa; a21 += v2 * wb;
        a30 += v3 * wa; a31 += v3 * wb;
      }
      const ba = b[o]!;
      const bb = b[o + 1]!;
      const y0 = i * O + o;
      y[y0] = a00 + ba; y[y0 + 1] = a01 + bb;
      y[y0 + O] = a10 + ba; y[y0 + O + 1] = a11 + bb;
      y[y0 + 2 * O] = a20 + ba; y[y0 + 2 * O + 1] = a21 + bb;
      y[y0 + 3 * O] = a30 + ba; y[y0 + 3 * O + 1] = a31 + bb;
    }
  }
  for (; i < n; i++) {
    const x0 = i * K;
    for (let o = 0; o < O; o += 2) {
      const w0 = o * K;
      const w1 = w0 + K;
      let a0 = 0, a1 = 0;
      for (let k = 0; k < K; k++) {
        const v = x[x0 + k]!;
        a0 += v * w[w0 + k]!;
        a1 += v * w[w1 + k]!;
      }
      y[i * O + o] = a0 + b[o]!;
      y[i * O + o + 1] = a1 + b[o + 1]!;
    }
  }
}

/** x[row] = LayerNorm(x[row] + r[row]) in place, for n rows of width H (r optional). */
function addLayerNorm(x: Float32Array, r: Float32Array | undefined, n: number, H: number, ln: LayerNorm, eps: number): void {
  const { g, b } = ln;
  for (let i = 0; i < n; i++) {
    const o = i * H;
    let mean = 0;
    if (r) for (let h = 0; h < H; h++) mean += (x[o + h] = x[o + h]! + r[o + h]!);
    else for (let h = 0; h < H; h++) mean += x[o + h]!;
    mean /= H;
    let v = 0;
    for (let h = 0; h < H; h++) {
      const d = x[o + h]! - mean;
      v += d * d;
    }
    const inv = 1 / Math.sqrt(v / H + eps);
    for (let h = 0; h < H; h++) x[o + h] = (x[o + h]! - mean) * inv * g[h]! + b[h]!;
  }
}

/**
 * erf via the Chebyshev-fitted erfc of Numerical Recipes (`erfcc`): fractional error below
 * 1.2e-7 everywhere, about float32's own precision, which is what the GELU needs.
 */
export function erf(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const erfc =
    t *
    Math.exp(
      -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
    );
  return x >= 0 ? 1 - erfc : erfc - 1;
}

/**
 * Where a forward pass's buffers live and how its linear layers are computed.
 */
export interface LinearKernel {
  readonly name: 'js' | 'wasm-simd';
  /** Float32Arrays (not zeroed) of at least the given sizes, by name; valid until the next call */
  buffers<K extends string>(sizes: Record<K, number>): Record<K, Float32Array>;
  /** y[n, out] = x[n, in] · Wᵀ + b, x and y from `buffers` */
  linear(x: Float32Array, n: number, L: Linear, y: Float32Array): void;
  /** {@link attend} (same contract), on `buffers` */
  attend(q: Float32Array, k: Float32Array, v: Float32Array, ctx: Float32Array, base: number, L: number, H: number, nh: number, scores: Float32Array): void;
}

/**
 * Multi-head self-attention of one text: rows base..base+L-1 of q, k, v (`[n, H]`, nh heads of
 * H/nh columns) give the same rows of ctx; `scores` holds at least L×L floats.
 */
export function attend(q: Float32Array, k: Float32Array, v: Float32Array, ctx: Float32Array, base: number, L: number, H: number, nh: number, scores: Float32Array): void {
  const dh = H / nh;
  const scale = 1 / Math.sqrt(dh);
  for (let hd = 0; hd < nh; hd++) {
    const ho = hd * dh;
    for (let i = 0; i < L; i++) {
      const qo = (base + i) * H + ho;
      let max = -Infinity;
      for (let j = 0; j < L; j++) {
        const ko = (base + j) * H + ho;
        let dot = 0;
        for (let d = 0; d < dh; d++) dot += q[qo + d]! * k[ko + d]!;
        dot *= scale;
        scores[j] = dot;
        if (dot > max) max = dot;
      }
      let sum = 0;
      for (let j = 0; j < L; j++) {
        const e = Math.exp(scores[j]! - max);
        scores[j] = e;
        sum += e;
      }
      const inv = 1 / sum;
      const co = (base + i) * H + ho;
      for (let d = 0; d < dh; d++) ctx[co + d] = 0;
      for (let j = 0; j < L; j++) {
        const p = scores[j]! * inv;
        const vo = (base + j) * H + ho;
        for (let d = 0; d < dh; d++) ctx[co + d] = ctx[co + d]! + p * v[vo + d]!;
      }
    }
  }
}

/** Row-wise softmax of `rows` rows of `cols` scores, each scaled by `scale` first, in place. */
export function softmaxRows(s: Float32Array, rows: number, cols: number, scale: number): void {
  for (let i = 0; i < rows; i++) {
    const o = i * cols;
    let max = -Infinity;
    for (let j = 0; j < cols; j++) if (s[o + j]! > max) max = s[o + j]!;
    let sum = 0;
    for (let j = 0; j < cols; j++) {
      const e = Math.exp((s[o + j]! - max) * scale);
      s[o + j] = e;
      sum += e;
    }
    const inv = 1 / sum;
    for (let j = 0; j < cols; j++) s[o + j] = s[o + j]! * inv;
  }
}

/** The plain TypeScript kernel: buffers on the JS heap, {@link linear}. */
export function jsKernel(): LinearKernel {
  const scratch = new Scratch();
  return {
    name: 'js',
    buffers<K extends string>(sizes: Record<K, number>): Record<K, Float32Array> {
      const out = {} as Record<K, Float32Array>;
      for (const k of Object.keys(sizes) as K[]) out[k] = scratch.get(k, sizes[k]);
      return out;
    },
    linear,
    attend,
  };
}

/**
 * erf from a table: cubic Hermite interpolation of {@link erf} and its derivative 2/√π·e^(−x²)
 * at steps of 1/128 over [0, 6] (erf(6) is 1 in float32), odd symmetry below 0. Within 2e-7 of
 * `erf` (tests/memory/embeddings-wasm.test.ts checks), and no `exp` per call: the GELU is one
 * call per element of the feed-forward (N × 1536 a layer).
 */
const ERF_STEPS = 128;
const ERF_MAX = 6;
const ERF_N = ERF_MAX * ERF_STEPS;
const ERF_V = new Float64Array(ERF_N + 2);
const ERF_D = new Float64Array(ERF_N + 2);
for (let i = 0; i <= ERF_N + 1; i++) {
  const x = i / ERF_STEPS;
  ERF_V[i] = i === 0 ? 0 : erf(x); // erf(0) is 0 exactly (the fit is off by 3e-8 there)
  ERF_D[i] = (2 / Math.sqrt(Math.PI)) * Math.exp(-x * x) / ERF_STEPS; // derivative per step
}
export function erfFast(x: number): number {
  const z = Math.abs(x) * ERF_STEPS;
  if (z >= ERF_N) return x >= 0 ? 1 : -1;
  const i = z | 0;
  const t = z - i;
  const p0 = ERF_V[i]!;
  const p1 = ERF_V[i + 1]!;
  const m0 = ERF_D[i]!;
  const m1 = ERF_D[i + 1]!;
  const t2 = t * t;
  const t3 = t2 * t;
  const y = (2 * t3 - 3 * t2 + 1) * p0 + (t3 - 2 * t2 + t) * m0 + (-2 * t3 + 3 * t2) * p1 + (t3 - t2) * m1;
  return x >= 0 ? y : -y;
}

/** Reusable scratch buffers, grown on demand. */
class Scratch {
  private bufs = new Map<string, Float32Array>();
  get(name: string, size: number): Float32Array {
    let b = this.bufs.get(name);
    if (!b || b.length < size) {
      b = new Float32Array(size);
      this.bufs.set(name, b);
    }
    return b;
  }
}

/**
 * One forward pass over a batch of token id sequences (each already `[CLS] … [SEP]`, within
 * `maxPositions`): the mean-pooled, L2-normalized sentence vector of each.
 */
export class BertEncoder {
  readonly w: BertWeights;
  readonly kernel: LinearKernel;
  constructor(w: BertWeights, kernel: LinearKernel = jsKernel()) {
    this.w = w;
    this.kernel = kernel;
  }

  encode(seqs: readonly Int32Array[]): Float32Array[] {
    const steps = this.encodeSteps(seqs);
    for (;;) {
      const r = steps.next();
      if (r.done) return r.value;
    }
  }

  /**
   * {@link encode} in steps: the generator pauses after the embeddings and after each layer
   * (so a caller can let the event loop run between them) and returns the vectors. Do not
   * interleave two of these on one encoder: they share its buffers.
   */
  *encodeSteps(seqs: readonly Int32Array[]): Generator<void, Float32Array[], void> {
    const { config: c, layers } = this.w;
    const H = c.hiddenSize;
    const I = c.intermediateSize;
    const nh = c.numHeads;
    const offsets: number[] = [];
    let N = 0;
    for (const s of seqs) {
      if (s.length > c.maxPositions) throw new Error(`a sequence of ${s.length} tokens exceeds the model's ${c.maxPositions} positions`);
      offsets.push(N);
      N += s.length;
    }
    let maxLen = 0;
    for (const s of seqs) maxLen = Math.max(maxLen, s.length);
    const NH = N * H;
    const kern = this.kernel;
    const { x, q, k, v, ctx, tmp, mid, scores } = kern.buffers({ x: NH, q: NH, k: NH, v: NH, ctx: NH, tmp: NH, mid: N * I, scores: maxLen * maxLen });

    // embeddings: word + position + token type 0, then LayerNorm
    const { wordEmb, posEmb, typeEmb } = this.w;
    seqs.forEach((s, si) => {
      for (let p = 0; p < s.length; p++) {
        const id = s[p]!;
        if (id < 0 || id >= c.vocabSize) throw new Error(`token id ${id} is outside the vocabulary (${c.vocabSize})`);
        const row = (offsets[si]! + p) * H;
        const wo = id * H;
        const po = p * H;
        for (let h = 0; h < H; h++) x[row + h] = wordEmb[wo + h]! + posEmb[po + h]! + typeEmb[h]!;
      }
    });
    addLayerNorm(x, undefined, N, H, this.w.embLn, c.layerNormEps);

    for (const layer of layers) {
      yield;
      kern.linear(x, N, layer.q, q);
      kern.linear(x, N, layer.k, k);
      kern.linear(x, N, layer.v, v);
      // attention, per text over its own tokens
      seqs.forEach((s, si) => kern.attend(q, k, v, ctx, offsets[si]!, s.length, H, nh, scores));
      kern.linear(ctx, N, layer.o, tmp);
      addLayerNorm(x, tmp, N, H, layer.ln1, c.layerNormEps);
      kern.linear(x, N, layer.up, mid);
      const NI = N * I;
      for (let e = 0; e < NI; e++) {
        const a = mid[e]!;
        mid[e] = 0.5 * a * (1 + erfFast(a * Math.SQRT1_2));
      }
      kern.linear(mid, N, layer.down, tmp);
      addLayerNorm(x, tmp, N, H, layer.ln2, c.layerNormEps);
    }

    // mean pooling over each text's tokens, then L2 normalization
    return seqs.map((s, si) => {
      const out = new Float32Array(H);
      const acc = new Float64Array(H);
      const base = offsets[si]!;
      for (let p = 0; p < s.length; p++) {
        const row = (base + p) * H;
        for (let h = 0; h < H; h++) acc[h] = acc[h]! + x[row + h]!;
      }
      let norm = 0;
      for (let h = 0; h < H; h++) {
        acc[h] = acc[h]! / s.length;
        norm += acc[h]! * acc[h]!;
      }
      const inv = norm > 0 ? 1 / Math.max(Math.sqrt(norm), 1e-12) : 0;
      for (let h = 0; h < H; h++) out[h] = acc[h]! * inv;
      return out;
    });
  }
}
