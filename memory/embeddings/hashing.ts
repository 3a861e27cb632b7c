/**
 * `HashingEmbeddings`: a deterministic hashed bag of words. NOT a model: it knows no synonyms
 * and no meaning, only shared words. It exists for tests of store mechanics (put, filters,
 * ranking plumbing, dimension checks) that must run without model files or network.
 */
import { Embeddings } from '@langchain/core/embeddings';
import type { KeelEmbeddings } from './types.ts';

export interface HashingEmbeddingsOptions {
  /** vector length (default 256) */
  dim?: number;
}

/** 32-bit FNV-1a over the UTF-16 code units of `s`, with a seed mixed in. */
function fnv1a(s: string, seed: number): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** Lower-cased words of letters and digits (any script). */
export function hashingTokens(text: string): string[] {
  return text.toLowerCase().normalize('NFKC').match(/[\p{L}\p{N}]+/gu) ?? [];
}

export class HashingEmbeddings extends Embeddings implements KeelEmbeddings {
  readonly id: string;
  readonly dim: number;
  constructor(o: HashingEmbeddingsOptions = {}) {
    super({});
    const dim = o.dim ?? 256;
    if (!Number.isInteger(dim) || dim < 1) throw new RangeError(`HashingEmbeddings: dim must be a positive integer, got ${dim}`);
    this.dim = dim;
    this.id = `hashing:${dim}`;
  }

  dimensions(): Promise<number> {
    return Promise.resolve(this.dim);
  }

  /** The vector of one text, synchronously: each word adds ±1 at a hashed position; L2-normalized (all zeros for no words). */
  embedSync(text: string): number[] {
    const v = new Float64Array(this.dim);
    for (const w of hashingTokens(text)) {
      const h = fnv1a(w, 0);
      v[h % this.dim]! += (fnv1a(w, 0x9e3779b9) & 1) === 0 ? 1 : -1;
    }
    let n = 0;
    for (let i = 0; i < v.length; i++) n += v[i]! * v[i]!;
    n = Math.sqrt(n);
    return Array.from(v, (x) => (n > 0 ? x / n : 0));
  }

  embedDocuments(documents: string[]): Promise<number[][]> {
    return Promise.resolve(documents.map((d) => this.embedSync(d)));
  }

  embedQuery(document: string): Promise<number[]> {
    return Promise.resolve(this.embedSync(document));
  }
}
