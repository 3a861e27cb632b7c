import type { Embeddings } from '@langchain/core/embeddings';

export interface EmbeddingThroughput {
  /** texts embedded in the timed run */
  texts: number;
  /** wall time of the timed run, milliseconds */
  ms: number;
  /** texts per second */
  textsPerSecond: number;
  /** mean length of the texts, in words (white-space separated) */
  meanWords: number;
}

/**
 * Embeddings per second over `texts` with `embedDocuments`: one untimed warm-up call (model
 * load, JIT) on the first few texts, then the timed call(s) over all of them. For benches.
 */
export async function embeddingThroughput(emb: Embeddings, texts: readonly string[], o: { rounds?: number; warmup?: number } = {}): Promise<EmbeddingThroughput> {
  if (texts.length === 0) throw new RangeError('embeddingThroughput: no texts');
  const rounds = Math.max(1, o.rounds ?? 1);
  await emb.embedDocuments(texts.slice(0, Math.max(1, o.warmup ?? 4)));
  const started = performance.now();
  for (let r = 0; r < rounds; r++) await emb.embedDocuments([...texts]);
  const ms = performance.now() - started;
  const n = texts.length * rounds;
  const meanWords = texts.reduce((a, t) => a + (t.trim() ? t.trim().split(/\s+/).length : 0), 0) / texts.length;
  return { texts: n, ms, textsPerSecond: (n * 1000) / ms, meanWords };
}
