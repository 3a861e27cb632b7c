/**
 * How recall turns its four signals into one score; shared by both adapters so `--explain`
 * means the same thing everywhere.
 *
 * - vector: cosine similarity of the query and memory embeddings, clamped to 0..1 (negative
 *   similarity carries no useful "more unrelated" signal).
 * - lexical: BM25 (SQLite FTS5 `bm25()`, Qdrant's IDF-weighted sparse dot product) through a
 *   saturating transform `s / (s + LEXICAL_K)`. Chosen over max-normalization across the
 *   candidate set: with max-normalization the best of a set of weak matches would score 1.0,
 *   and a score would depend on which other memories happened to be candidates; the saturating
 *   form keeps a score a property of (query, memory) alone. LEXICAL_K = 4 puts a match on one
 *   rare term (BM25 ≈ 4..8 in a store of hundreds to 100k memories) at 0.5..0.67 and a match on
 *   several rare terms near 0.8..0.9.
 * - recency: exponential decay `0.5 ^ (age / halfLife)` of `createdAt`, half-life 30 days by
 *   default (a month-old memory weighs half a new one; a year-old one 0.0002); future dates count as now.
 * - importance: the stored 0..1 value.
 *
 * score = Σ weight_i · component_i / Σ weight_i (weights from `KEEL_MEMORY_WEIGHTS`).
 */
import type { ScoreComponents } from './types.ts';

export const DEFAULT_WEIGHTS: ScoreComponents = { vector: 0.55, lexical: 0.3, recency: 0.1, importance: 0.05 };
export const LEXICAL_K = 4;
export const DEFAULT_HALF_LIFE_DAYS = 30;
const DAY_MS = 86_400_000;

export function lexicalScore(bm25: number): number {
  const s = Math.max(0, bm25);
  return s / (s + LEXICAL_K);
}

export function vectorScore(cosine: number): number {
  if (!Number.isFinite(cosine)) return 0;
  return Math.min(1, Math.max(0, cosine));
}

export function recencyScore(createdAt: string, now: Date, halfLifeDays = DEFAULT_HALF_LIFE_DAYS): number {
  const t = Date.parse(createdAt);
  if (!Number.isFinite(t)) return 0;
  const ageDays = Math.max(0, now.getTime() - t) / DAY_MS;
  return Math.pow(0.5, ageDays / halfLifeDays);
}

/** Validates weights (finite, ≥ 0, not all 0) and returns them scaled to sum 1. */
export function normalizeWeights(w: ScoreComponents = DEFAULT_WEIGHTS): ScoreComponents {
  const vals = [w.vector, w.lexical, w.recency, w.importance];
  if (vals.some((x) => !Number.isFinite(x) || x < 0)) throw new RangeError(`memory weights must be finite and ≥ 0: ${JSON.stringify(w)}`);
  const sum = vals.reduce((a, b) => a + b, 0);
  if (sum <= 0) throw new RangeError('memory weights must not all be 0');
  return { vector: w.vector / sum, lexical: w.lexical / sum, recency: w.recency / sum, importance: w.importance / sum };
}

/** The weighted sum of components; `weights` must already be normalized. */
export function fuse(c: ScoreComponents, weights: ScoreComponents): number {
  return c.vector * weights.vector + c.lexical * weights.lexical + c.recency * weights.recency + c.importance * weights.importance;
}

/** English function words left out of lexical queries: they match most memories and carry no topic. */
const STOPWORDS = new Set(
  'a an and are as at be but by did do does for from had has have he her his how i if in into is it its me my no not of on or our she so than that the their them then there these they this to was we were what when where which who why will with would you your'.split(' '),
);

/** Words for lexical queries: lower-cased runs of letters and digits (any script), without English stopwords. */
export function queryTerms(text: string): string[] {
  const words = text.toLowerCase().normalize('NFKC').match(/[\p{L}\p{N}]+/gu) ?? [];
  return [...new Set(words.filter((w) => !STOPWORDS.has(w)))];
}

/** Cosine similarity of two vectors (0 when either has no length). */
export function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a[i]!;
    const y = b[i]!;
    dot += x * y;
    na += x * x;
    nb += y * y;
  }
  return na > 0 && nb > 0 ? dot / Math.sqrt(na * nb) : 0;
}
