/**
 * The memory port: what the engine remembers, why it recalls it, and where it came from.
 * Two adapters implement it (sqlite-vec embedded, Qdrant in production); one contract suite
 * (tests/memory/contract.ts) runs on both.
 */

/** Where a memory came from: every memory has one, and forgetting by source uses it. */
export interface MemorySource {
  /** the entity the memory is about or was derived from (a ticket, a customer, a product) */
  entityType?: string;
  entityId?: string;
  /** the change-log events it was written from (empty for an operator's note) */
  eventIds: string[];
}

/** What a writer hands to `put`; the store embeds `text`. */
export interface MemoryInput {
  /** stable id; a `put` with an id that exists replaces nothing and returns the stored memory (idempotent) */
  id?: string;
  text: string;
  /** `message` (a ticket message), `summary`, `history` (an entity's event history), `note` (operator) … */
  kind: string;
  customerId?: string;
  /** the entity it belongs to, for filters (usually the source entity) */
  entityType?: string;
  entityId?: string;
  source: MemorySource;
  /** who wrote it: an agent's name, or `operator:<name>` */
  writtenBy: string;
  /** 0..1, default 0.5 */
  importance?: number;
  /** when what it remembers happened; default now (ISO 8601) */
  createdAt?: string;
  /** ids this memory replaces (a summary of raw messages): they become `superseded`, not deleted */
  supersedes?: string[];
  /** free metadata (subject, language, …) */
  meta?: Record<string, unknown>;
}

export type MemoryStatus = 'active' | 'superseded';

export interface Memory {
  id: string;
  text: string;
  kind: string;
  customerId?: string;
  entityType?: string;
  entityId?: string;
  source: MemorySource;
  writtenBy: string;
  importance: number;
  createdAt: string;
  /** when it was stored */
  storedAt: string;
  status: MemoryStatus;
  /** the id of the memory that superseded it */
  supersededBy?: string;
  supersedes?: string[];
  /** the model that embedded it and the vector's dimension */
  embedding: { model: string; dim: number };
  meta?: Record<string, unknown>;
}

export interface RecallQuery {
  text: string;
  customerId?: string;
  entityType?: string;
  entityId?: string;
  kind?: string | string[];
  /** ISO 8601 bounds on createdAt */
  since?: string;
  until?: string;
  /** default 10 */
  limit?: number;
  /** default false: superseded memories are not recalled */
  includeSuperseded?: boolean;
}

/** Each component in 0..1 before weighting; `score` is their weighted sum (weights sum-normalized). */
export interface ScoreComponents {
  vector: number;
  lexical: number;
  recency: number;
  importance: number;
}

export interface RecallHit {
  memory: Memory;
  score: number;
  components: ScoreComponents;
}

export interface ForgetSelector {
  customerId?: string;
  /** every memory whose source entity (or entity) is this id */
  sourceEntityId?: string;
  ids?: string[];
}

export interface MemoryStoreInfo {
  adapter: 'sqlite-vec' | 'qdrant';
  /** the URL without credentials */
  url: string;
  /** `provider:model` of the store's current embedder */
  embeddingModel: string;
  dim: number;
}

export interface MemoryStore {
  readonly info: MemoryStoreInfo;
  /** Embeds and stores; idempotent by id; supersedes `supersedes` atomically with the insert where the adapter can. */
  put(inputs: MemoryInput[]): Promise<Memory[]>;
  get(id: string): Promise<Memory | null>;
  /** Hybrid recall: vector similarity, BM25, recency and importance fused by the store's weights. */
  search(q: RecallQuery): Promise<RecallHit[]>;
  /** Marks memories superseded by `by` (they stay until retention removes them). */
  supersede(ids: string[], by: string): Promise<number>;
  /** Removes memories and their vectors; returns the ids removed. */
  forget(sel: ForgetSelector): Promise<{ removed: number; ids: string[] }>;
  /** Pages through memories by id (for reindex, retention and export). */
  list(q?: { afterId?: string; limit?: number; kind?: string; customerId?: string; entityType?: string; status?: MemoryStatus; createdBefore?: string }): Promise<Memory[]>;
  count(q?: { customerId?: string; status?: MemoryStatus }): Promise<number>;
  /** Re-embeds memories whose embedding model is not the current one; resumable (skips done ones). */
  reindex(opts?: { batchSize?: number; signal?: AbortSignal; onProgress?: (done: number, total: number) => void }): Promise<{ reembedded: number; total: number }>;
  close(): Promise<void>;
}
