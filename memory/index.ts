/**
 * Long-term memory: what the engine remembers, why it recalls it, and where it came from. One
 * port ({@link MemoryStore}), two adapters: sqlite-vec (embedded, one file) and Qdrant
 * (production). Recall is hybrid: vector similarity, BM25, recency and importance fused by
 * `KEEL_MEMORY_WEIGHTS`, each component returned for `--explain` (see fusion.ts).
 *
 * ```ts
 * import { openMemory, createEmbeddings } from './memory/index.ts';
 * const embeddings = createEmbeddings({ spec: cfg.embeddings, modelsDir: cfg.modelsDir, modelEnv: cfg.modelEnv });
 * const memory = await openMemory(cfg.memory, { embeddings, weights: cfg.memoryWeights, prefix: cfg.subjectPrefix });
 * await memory.put([{ id: 'm-1', text: 'Refund approved for order 1182', kind: 'summary', customerId: 'c-9',
 *   source: { entityType: 'ticket', entityId: 'T-7', eventIds: ['e1', 'e2'] }, writtenBy: 'memory' }]);
 * const hits = await memory.search({ text: 'did we give her money back?', customerId: 'c-9', limit: 5 });
 * hits[0]?.components;                                   // { vector, lexical, recency, importance }, each 0..1
 * await memory.forget({ customerId: 'c-9' });            // rows, vectors and FTS entries
 * await memory.close();
 * ```
 *
 * A store keeps the vector dimension of the embedder it was created with; opening it with an
 * embedder of another dimension fails with MEMORY_DIMENSION_MISMATCH unless
 * `allowDimensionChange: true` (what `keel memory reindex` passes), after which `reindex()`
 * re-embeds everything.
 */
import type { KeelEmbeddings } from './embeddings/index.ts';
import { MemoryError } from './errors.ts';
import { openSqliteVecMemory } from './sqlite-vec.ts';
import type { MemoryStore, ScoreComponents } from './types.ts';

export type * from './types.ts';
export * from './embeddings/index.ts';
export { MemoryError, isMemoryError } from './errors.ts';
export type { MemoryErrorCode, MemoryErrorOptions } from './errors.ts';
export { DEFAULT_WEIGHTS, DEFAULT_HALF_LIFE_DAYS, LEXICAL_K, fuse, normalizeWeights } from './fusion.ts';
// the context builder and the fidelity policy (context.ts, policy.ts)
export { buildContext, contextSpanAttributes, estimateTokens, renderMemory } from './context.ts';
export type { BuiltContext, ContextInput, ContextMessage, ContextRole, ContextSplit } from './context.ts';
export { DEFAULT_POLICY, effectivePolicy, extractiveSummary, policyProblems, summaryIdFor, sweepMemory } from './policy.ts';
export type { EffectivePolicy, FidelityPolicy, StoredPolicy, SweepOptions, SweepReport, SweepTypeReport } from './policy.ts';

export interface OpenMemoryOptions {
  embeddings: KeelEmbeddings;
  /** relative weights of the score components (KeelConfig.memoryWeights); default vector 0.55, lexical 0.3, recency 0.1, importance 0.05 */
  weights?: ScoreComponents;
  /** KeelConfig.subjectPrefix: the Qdrant collection is `${prefix}_memory` (default 'keel') */
  prefix?: string;
  /** clock for storedAt and recency (default the system clock) */
  now?: () => Date;
  /** recency half-life in days (default 30) */
  halfLifeDays?: number;
  /** open a store of another dimension so that `reindex()` can migrate it (default false: fail) */
  allowDimensionChange?: boolean;
  /**
   * sqlite-vec tuning: an exact scan below `annMinRows` memories (default 5000); above, a hamming
   * prefilter of `annCandidates` (default 2000), int8 scoring, exact rerank of `annRerank` (default 100)
   */
  sqliteVec?: { annMinRows?: number; annCandidates?: number; annRerank?: number };
}

/** Opens the store `url` names: `sqlite-vec:/abs/path.db` or a Qdrant `http(s)://host:6333` URL. */
export async function openMemory(url: string, o: OpenMemoryOptions): Promise<MemoryStore> {
  if (url.startsWith('sqlite-vec:')) {
    return openSqliteVecMemory(url, { embeddings: o.embeddings, weights: o.weights, now: o.now, halfLifeDays: o.halfLifeDays, allowDimensionChange: o.allowDimensionChange, ...o.sqliteVec });
  }
  if (url.startsWith('http://') || url.startsWith('https://')) {
    const { openQdrantMemory } = await import('./qdrant.ts');
    return openQdrantMemory(url, { embeddings: o.embeddings, weights: o.weights, now: o.now, halfLifeDays: o.halfLifeDays, allowDimensionChange: o.allowDimensionChange, prefix: o.prefix ?? 'keel' });
  }
  throw new MemoryError('MEMORY_BAD_URL', `KEEL_MEMORY '${url}' is neither sqlite-vec:PATH nor a Qdrant http(s):// URL`);
}
