/**
 * `LocalMiniLMEmbeddings`: sentence-transformers/all-MiniLM-L6-v2 run in-process from the files
 * `deploy/provision.sh` puts in `<modelsDir>/all-minilm-l6-v2/` (no network, no native code).
 * 384 dimensions, unit length, texts cut to 256 tokens. The model loads on first use, once per
 * process, directory and backend, however many instances ask for it.
 *
 * Backends: `wasm` (the default where WebAssembly SIMD runs, i.e. any Node 24): the linear
 * layers on the WebAssembly SIMD kernel of kernel.ts, ~5-10x faster; `js`: all plain
 * TypeScript, the fallback and the reference. Both give the same vectors to ~1e-6.
 * A long call does not hold the event loop: it yields between layers once ~20 ms have passed.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { Embeddings } from '@langchain/core/embeddings';
import { parseSafetensors } from './safetensors.ts';
import { WordPieceTokenizer, type WordPieceTokenizerJson } from './tokenizer.ts';
import { BertEncoder, jsKernel, loadBertWeights, type BertConfig } from './bert.ts';
import { WasmLinearKernel, wasmSimdSupported } from './kernel.ts';
import { EmbeddingsError } from './errors.ts';
import type { KeelEmbeddings } from './types.ts';

export const LOCAL_MINILM_NAME = 'all-minilm-l6-v2';
export const LOCAL_MINILM_ID = `local:${LOCAL_MINILM_NAME}`;
/** the files inference reads, relative to the model directory */
export const LOCAL_MINILM_FILES = ['model.safetensors', 'tokenizer.json', 'config.json', '1_Pooling/config.json'] as const;
export const PROVISION_HINT = 'run `npm run provision` (or `bash deploy/provision.sh all-minilm-l6-v2`)';

export interface LocalMiniLMOptions {
  /** `KeelConfig.modelsDir`; the files are read from `<modelsDir>/all-minilm-l6-v2/` */
  modelsDir: string;
  /** texts per forward pass (default 16): bigger batches make larger matrix products */
  batchSize?: number;
  /** tokens per forward pass (default 512; a longer text still goes alone) */
  maxBatchTokens?: number;
  /** `auto` (default): `wasm` where WebAssembly SIMD runs, else `js` */
  backend?: LocalMiniLMBackend;
}

export type LocalMiniLMBackend = 'auto' | 'wasm' | 'js';

/** how long a call may run before it lets the event loop in (between layers) */
const SLICE_MS = 20;

/** A loaded model: tokenizer + encoder, and what was read. */
export interface LoadedMiniLM {
  dir: string;
  tokenizer: WordPieceTokenizer;
  encoder: BertEncoder;
  /** which kernel runs the linear layers */
  backend: 'wasm' | 'js';
  dimensions: number;
  maxSeqLength: number;
  /** milliseconds the load took */
  loadMs: number;
}

const loaded = new Map<string, Promise<LoadedMiniLM>>();

/** The model directory under a models dir. */
export function localMiniLMDir(modelsDir: string): string {
  return join(modelsDir, LOCAL_MINILM_NAME);
}

/** Whether the files inference needs are present (does not read them). */
export async function localMiniLMPresent(modelsDir: string): Promise<boolean> {
  const dir = localMiniLMDir(modelsDir);
  for (const f of LOCAL_MINILM_FILES) {
    try {
      if (!(await stat(join(dir, f))).isFile()) return false;
    } catch {
      return false;
    }
  }
  return true;
}

function resolveBackend(b: LocalMiniLMBackend | undefined): 'wasm' | 'js' {
  if (b === 'js') return 'js';
  if (wasmSimdSupported()) return 'wasm';
  if (b === 'wasm') throw new EmbeddingsError('EMBEDDINGS_FAILED', `${LOCAL_MINILM_ID}: the wasm backend needs WebAssembly SIMD, which this runtime lacks (use backend 'js')`, { model: LOCAL_MINILM_ID });
  return 'js';
}

async function load(dir: string, backend: 'wasm' | 'js'): Promise<LoadedMiniLM> {
  const started = performance.now();
  const missing: string[] = [];
  for (const f of LOCAL_MINILM_FILES) {
    try {
      await stat(join(dir, f));
    } catch {
      missing.push(f);
    }
  }
  if (missing.length) {
    throw new EmbeddingsError('EMBEDDINGS_MODEL_MISSING', `the embedding model ${LOCAL_MINILM_ID} is not provisioned: ${dir} lacks ${missing.join(', ')}; ${PROVISION_HINT}, or set KEEL_MODELS_DIR to where it is, or KEEL_EMBEDDINGS=openai:…/ollama:… for a remote model`, {
      model: LOCAL_MINILM_ID,
      path: dir,
    });
  }
  const fail = (what: string, err: unknown): EmbeddingsError =>
    new EmbeddingsError('EMBEDDINGS_FAILED', `the embedding model in ${dir} cannot be used (${what}): ${(err as Error).message ?? String(err)}; re-run ${PROVISION_HINT} after deleting that directory`, { cause: err, model: LOCAL_MINILM_ID, path: dir });
  let config: BertConfig;
  let maxSeqLength = 256;
  try {
    const c = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    const num = (k: string, d?: number): number => {
      const v = c[k] ?? d;
      if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`config.json: '${k}' is not a number`);
      return v;
    };
    config = {
      hiddenSize: num('hidden_size'),
      numLayers: num('num_hidden_layers'),
      numHeads: num('num_attention_heads'),
      intermediateSize: num('intermediate_size'),
      vocabSize: num('vocab_size'),
      maxPositions: num('max_position_embeddings'),
      typeVocabSize: num('type_vocab_size', 2),
      layerNormEps: num('layer_norm_eps', 1e-12),
    };
    if (c.hidden_act !== undefined && c.hidden_act !== 'gelu') throw new Error(`config.json: hidden_act '${String(c.hidden_act)}' is not supported (gelu only)`);
    if (config.hiddenSize % config.numHeads !== 0 || config.hiddenSize % 2 !== 0 || config.intermediateSize % 2 !== 0) throw new Error('config.json: unsupported sizes');
    const pooling = JSON.parse(await readFile(join(dir, '1_Pooling', 'config.json'), 'utf8')) as Record<string, unknown>;
    if (pooling.pooling_mode_mean_tokens !== true) throw new Error('1_Pooling/config.json: only mean pooling is supported');
    try {
      const sb = JSON.parse(await readFile(join(dir, 'sentence_bert_config.json'), 'utf8')) as { max_seq_length?: unknown };
      if (typeof sb.max_seq_length === 'number') maxSeqLength = sb.max_seq_length;
    } catch {
      /* optional: 256 is all-MiniLM-L6-v2's published max_seq_length */
    }
    maxSeqLength = Math.min(maxSeqLength, config.maxPositions);
  } catch (err) {
    throw fail('config', err);
  }
  let tokenizer: WordPieceTokenizer;
  try {
    tokenizer = new WordPieceTokenizer(JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8')) as WordPieceTokenizerJson, { maxLength: maxSeqLength });
  } catch (err) {
    throw fail('tokenizer.json', err);
  }
  let encoder: BertEncoder;
  try {
    const buf = await readFile(join(dir, 'model.safetensors'));
    const weights = loadBertWeights(parseSafetensors(buf), config);
    // the weights are this load's own: the wasm kernel keeps the only copy of the linear layers
    encoder = new BertEncoder(weights, backend === 'wasm' ? new WasmLinearKernel(weights, { release: true }) : jsKernel());
  } catch (err) {
    throw fail('model.safetensors', err);
  }
  return { dir, tokenizer, encoder, backend, dimensions: config.hiddenSize, maxSeqLength, loadMs: performance.now() - started };
}

/** The process-wide model for a models dir and backend, loaded on the first call (a failed load is retried by the next call). */
export function loadLocalMiniLM(modelsDir: string, o: { backend?: LocalMiniLMBackend } = {}): Promise<LoadedMiniLM> {
  const dir = localMiniLMDir(modelsDir);
  let backend: 'wasm' | 'js';
  try {
    backend = resolveBackend(o.backend);
  } catch (err) {
    return Promise.reject(err as Error);
  }
  const key = `${backend}:${dir}`;
  let p = loaded.get(key);
  if (!p) {
    p = load(dir, backend);
    loaded.set(key, p);
    p.catch(() => loaded.delete(key));
  }
  return p;
}

export class LocalMiniLMEmbeddings extends Embeddings implements KeelEmbeddings {
  readonly id = LOCAL_MINILM_ID;
  readonly modelsDir: string;
  readonly batchSize: number;
  readonly maxBatchTokens: number;
  readonly backend: LocalMiniLMBackend;
  /** one forward pass at a time per loaded model (passes share the encoder's buffers) */
  private static readonly running = new WeakMap<BertEncoder, Promise<unknown>>();
  constructor(o: LocalMiniLMOptions) {
    // no retries: a missing or broken model does not fix itself
    super({ maxRetries: 0 });
    this.modelsDir = o.modelsDir;
    this.batchSize = Math.max(1, o.batchSize ?? 16);
    this.maxBatchTokens = Math.max(1, o.maxBatchTokens ?? 512);
    this.backend = o.backend ?? 'auto';
  }

  /** Loads the model now rather than on the first embedding (e.g. at start-up, to fail early). */
  load(): Promise<LoadedMiniLM> {
    return loadLocalMiniLM(this.modelsDir, { backend: this.backend });
  }

  /** One forward pass, letting the event loop in between layers once SLICE_MS have passed; passes on one encoder queue up. */
  private async pass(encoder: BertEncoder, seqs: Int32Array[]): Promise<Float32Array[]> {
    const before = LocalMiniLMEmbeddings.running.get(encoder);
    const run = (async () => {
      if (before) await before.catch(() => undefined);
      const steps = encoder.encodeSteps(seqs);
      let since = performance.now();
      for (;;) {
        const r = steps.next();
        if (r.done) return r.value;
        if (performance.now() - since > SLICE_MS) {
          await yieldToLoop();
          since = performance.now();
        }
      }
    })();
    LocalMiniLMEmbeddings.running.set(encoder, run);
    try {
      return await run;
    } finally {
      if (LocalMiniLMEmbeddings.running.get(encoder) === run) LocalMiniLMEmbeddings.running.delete(encoder);
    }
  }

  /** The vector length, from the model's config.json: opening a store does not load the weights (~140 MB). */
  async dimensions(): Promise<number> {
    if (this.dims !== undefined) return this.dims;
    try {
      const c = JSON.parse(await readFile(join(localMiniLMDir(this.modelsDir), 'config.json'), 'utf8')) as { hidden_size?: unknown };
      if (typeof c.hidden_size === 'number' && c.hidden_size > 0) return (this.dims = c.hidden_size);
    } catch {
      /* not provisioned or unreadable: load() names the problem */
    }
    return (this.dims = (await this.load()).dimensions);
  }
  private dims: number | undefined;

  /** Vectors as Float32Array (what the model computes), in the order of `texts`. */
  async embedF32(texts: readonly string[]): Promise<Float32Array[]> {
    const m = await this.load();
    const enc = texts.map((t) => m.tokenizer.encode(t).ids);
    // similar lengths together keeps the attention loops even; results go back in input order
    const order = enc.map((_, i) => i).sort((a, b) => enc[a]!.length - enc[b]!.length);
    const out = new Array<Float32Array>(texts.length);
    for (let s = 0; s < order.length; ) {
      // up to batchSize texts and maxBatchTokens tokens (at least one text)
      let e = s + 1;
      let tokens = enc[order[s]!]!.length;
      while (e < order.length && e - s < this.batchSize && tokens + enc[order[e]!]!.length <= this.maxBatchTokens) tokens += enc[order[e++]!]!.length;
      const idx = order.slice(s, e);
      s = e;
      let vecs: Float32Array[];
      try {
        vecs = await this.pass(m.encoder, idx.map((i) => enc[i]!));
      } catch (err) {
        throw new EmbeddingsError('EMBEDDINGS_FAILED', `${LOCAL_MINILM_ID}: inference failed: ${(err as Error).message}`, { cause: err, model: LOCAL_MINILM_ID });
      }
      idx.forEach((i, k) => (out[i] = vecs[k]!));
    }
    return out;
  }

  async embedDocuments(documents: string[]): Promise<number[][]> {
    return (await this.embedF32(documents)).map((v) => Array.from(v));
  }

  async embedQuery(document: string): Promise<number[]> {
    return Array.from((await this.embedF32([document]))[0]!);
  }
}
