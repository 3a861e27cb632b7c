/**
 * The production memory store: Qdrant through `@qdrant/js-client-rest`.
 *
 * UNTESTED IN THIS REPOSITORY'S DEVELOPMENT SESSION: no Qdrant server could run where this was
 * written (no binary, no Docker engine). It follows the client's typed API (1.19.0) and the
 * Qdrant docs, and tests/memory/qdrant.int.test.ts runs the same contract suite as the
 * sqlite-vec adapter wherever `QDRANT_URL` is set or Docker answers.
 *
 * Layout: the alias `${prefix}_memory` points at the collection `${prefix}_memory_d${dim}`, whose
 * points carry a dense vector `dense` (cosine) and a sparse vector `lexical` with
 * `modifier: 'idf'` (Qdrant applies IDF at query time; documents carry a BM25-style saturated
 * term frequency, see `sparseDoc`), and the memory as payload with indexes on customerId,
 * entityType, entityId, sourceEntityId, kind, status, embeddingModel (keyword) and createdAt
 * (datetime). A dimension change builds `${prefix}_memory_d${newDim}` beside the old one and
 * moves the alias when every memory is in it (resumable: points already there are skipped).
 *
 * Differences from sqlite-vec: writes are not transactional (a put's supersession is a second
 * request; two writers of the same new id race, the last wins); `list` sorts by id on the client
 * (O(n) per page); lexical terms are not stemmed.
 */
import { createHash, randomUUID } from 'node:crypto';
import { QdrantClient, type Schemas } from '@qdrant/js-client-rest';
import type { KeelEmbeddings } from './embeddings/index.ts';
import { MemoryError, dimensionMismatch } from './errors.ts';
import { fuse, lexicalScore, normalizeWeights, queryTerms, recencyScore, vectorScore, DEFAULT_HALF_LIFE_DAYS } from './fusion.ts';
import { candidatePool, validateInput } from './common.ts';
import type { ForgetSelector, Memory, MemoryInput, MemoryStatus, MemoryStore, MemoryStoreInfo, RecallHit, RecallQuery, ScoreComponents } from './types.ts';

export interface QdrantMemoryOptions {
  embeddings: KeelEmbeddings;
  /** collection prefix (KeelConfig.subjectPrefix) */
  prefix: string;
  weights?: ScoreComponents;
  now?: () => Date;
  halfLifeDays?: number;
  allowDimensionChange?: boolean;
  /** Qdrant API key (default none) */
  apiKey?: string;
}

type Filter = Schemas['Filter'];
type Condition = Schemas['Condition'];
type Payload = Record<string, unknown>;

const DENSE = 'dense';
const LEXICAL = 'lexical';
/** BM25 parameters of the document-side term weights; the average length is a fixed assumption (short memories). */
const K1 = 1.2;
const B = 0.75;
const AVG_LEN = 24;
const KEYWORD_FIELDS = ['memoryId', 'customerId', 'entityType', 'entityId', 'sourceEntityId', 'kind', 'status', 'embeddingModel'];

/** A stable UUID for a memory id (Qdrant ids are unsigned integers or UUIDs). */
export function pointId(memoryId: string): string {
  const h = createHash('sha1').update(`keel-memory:${memoryId}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${((parseInt(h.slice(16, 17), 16) & 0x3) | 0x8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

function termIndex(term: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < term.length; i++) h = Math.imul(h ^ term.charCodeAt(i), 0x01000193) >>> 0;
  return h >>> 0;
}

/** Document side: BM25 term-frequency saturation per hashed term. */
export function sparseDoc(text: string): { indices: number[]; values: number[] } {
  const words = text.toLowerCase().normalize('NFKC').match(/[\p{L}\p{N}]+/gu) ?? [];
  const tf = new Map<number, number>();
  for (const w of words) tf.set(termIndex(w), (tf.get(termIndex(w)) ?? 0) + 1);
  const norm = K1 * (1 - B + (B * words.length) / AVG_LEN);
  const indices = [...tf.keys()];
  return { indices, values: indices.map((i) => (tf.get(i)! * (K1 + 1)) / (tf.get(i)! + norm)) };
}

/** Query side: each distinct term once; Qdrant multiplies by IDF (`modifier: 'idf'`). */
export function sparseQuery(text: string): { indices: number[]; values: number[] } {
  const indices = [...new Set(queryTerms(text).map(termIndex))];
  return { indices, values: indices.map(() => 1) };
}

function wrap(err: unknown, what: string): MemoryError {
  if (err instanceof MemoryError) return err;
  const status = (err as { status?: number }).status;
  const retryable = status === undefined || status >= 500 || status === 429;
  return new MemoryError('MEMORY_UNAVAILABLE', `qdrant: ${what} failed: ${(err as Error).message ?? String(err)}`, { cause: err, retryable });
}

function toMemory(p: Payload): Memory {
  const m: Memory = {
    id: p.memoryId as string,
    text: p.text as string,
    kind: p.kind as string,
    source: p.source as Memory['source'],
    writtenBy: p.writtenBy as string,
    importance: p.importance as number,
    createdAt: p.createdAt as string,
    storedAt: p.storedAt as string,
    status: p.status as MemoryStatus,
    embedding: { model: p.embeddingModel as string, dim: p.embeddingDim as number },
  };
  for (const k of ['customerId', 'entityType', 'entityId', 'supersededBy'] as const) if (typeof p[k] === 'string') m[k] = p[k];
  if (Array.isArray(p.supersedes)) m.supersedes = p.supersedes as string[];
  if (p.meta && typeof p.meta === 'object') m.meta = p.meta as Record<string, unknown>;
  return m;
}

const match = (key: string, value: string): Condition => ({ key, match: { value } });

export async function openQdrantMemory(url: string, o: QdrantMemoryOptions): Promise<MemoryStore> {
  const client = new QdrantClient({ url, ...(o.apiKey ? { apiKey: o.apiKey } : {}), checkCompatibility: false });
  const dim = await o.embeddings.dimensions();
  const s = new QdrantMemory(client, url, dim, o);
  await s.init();
  return s;
}

class QdrantMemory implements MemoryStore {
  readonly info: MemoryStoreInfo;
  readonly #client: QdrantClient;
  readonly #emb: KeelEmbeddings;
  readonly #dim: number;
  readonly #alias: string;
  readonly #prefix: string;
  readonly #weights: ScoreComponents;
  readonly #now: () => Date;
  readonly #halfLife: number;
  readonly #allowDimensionChange: boolean;
  /** the collection the alias points at */
  #coll = '';
  #blocked: MemoryError | null = null;
  #closed = false;

  constructor(client: QdrantClient, url: string, dim: number, o: QdrantMemoryOptions) {
    this.#client = client;
    this.#emb = o.embeddings;
    this.#dim = dim;
    this.#prefix = o.prefix;
    this.#alias = `${o.prefix}_memory`;
    this.#weights = normalizeWeights(o.weights);
    this.#now = o.now ?? (() => new Date());
    this.#halfLife = o.halfLifeDays ?? DEFAULT_HALF_LIFE_DAYS;
    this.#allowDimensionChange = !!o.allowDimensionChange;
    this.info = { adapter: 'qdrant', url: url.replace(/\/\/[^@/]*@/, '//'), embeddingModel: o.embeddings.id, dim };
  }

  #collName(dim: number): string {
    return `${this.#prefix}_memory_d${dim}`;
  }

  async #ensureCollection(name: string, dim: number): Promise<void> {
    if ((await this.#client.collectionExists(name)).exists) return;
    await this.#client.createCollection(name, { vectors: { [DENSE]: { size: dim, distance: 'Cosine' } }, sparse_vectors: { [LEXICAL]: { modifier: 'idf' } } });
    for (const f of KEYWORD_FIELDS) await this.#client.createPayloadIndex(name, { field_name: f, field_schema: 'keyword', wait: true });
    await this.#client.createPayloadIndex(name, { field_name: 'createdAt', field_schema: 'datetime', wait: true });
  }

  async #aliasTarget(): Promise<string | undefined> {
    const { aliases } = await this.#client.getAliases();
    return aliases.find((a) => a.alias_name === this.#alias)?.collection_name;
  }

  async init(): Promise<void> {
    try {
      let target = await this.#aliasTarget();
      if (!target) {
        target = this.#collName(this.#dim);
        await this.#ensureCollection(target, this.#dim);
        await this.#client.updateCollectionAliases({ actions: [{ create_alias: { collection_name: target, alias_name: this.#alias } }] });
      }
      this.#coll = target;
      const info = await this.#client.getCollection(target);
      const vectors = info.config.params.vectors as Record<string, { size: number }> | undefined;
      const storeDim = vectors?.[DENSE]?.size ?? this.#dim;
      if (storeDim !== this.#dim) {
        const sample = await this.#client.scroll(target, { limit: 1, with_payload: ['embeddingModel'] });
        const err = dimensionMismatch(storeDim, (sample.points[0]?.payload?.embeddingModel as string | undefined) ?? 'unknown', this.#dim, this.#emb.id);
        if (!this.#allowDimensionChange) throw err;
        this.#blocked = err;
      }
    } catch (err) {
      throw wrap(err, `opening '${this.#alias}'`);
    }
  }

  #usable(): void {
    if (this.#closed) throw new MemoryError('MEMORY_CLOSED', 'the memory store is closed');
    if (this.#blocked) throw this.#blocked;
  }

  async #retrieve(ids: string[]): Promise<Payload[]> {
    if (!ids.length) return [];
    const pts = await this.#client.retrieve(this.#coll, { ids: ids.map(pointId), with_payload: true });
    return pts.map((p) => p.payload as Payload);
  }

  async put(inputs: MemoryInput[]): Promise<Memory[]> {
    this.#usable();
    for (const i of inputs) validateInput(i);
    const ids = inputs.map((i) => i.id ?? randomUUID());
    try {
      const known = new Set((await this.#retrieve(ids)).map((p) => p.memoryId as string));
      const fresh = inputs.map((inp, k) => ({ inp, id: ids[k]! })).filter((x, k) => !known.has(x.id) && ids.indexOf(x.id) === k);
      if (fresh.length) {
        const vecs = await this.#emb.embedDocuments(fresh.map((x) => x.inp.text));
        const storedAt = this.#now().toISOString();
        const points = fresh.map(({ inp, id }, k) => {
          const v = vecs[k]!;
          if (v.length !== this.#dim) throw dimensionMismatch(this.#dim, this.#emb.id, v.length, `${this.#emb.id} (as returned)`);
          const payload: Payload = {
            memoryId: id, text: inp.text, kind: inp.kind, source: { ...inp.source, eventIds: inp.source.eventIds ?? [] }, writtenBy: inp.writtenBy,
            importance: inp.importance ?? 0.5, createdAt: inp.createdAt ? new Date(inp.createdAt).toISOString() : storedAt, storedAt, status: 'active',
            embeddingModel: this.#emb.id, embeddingDim: this.#dim, sourceEntityId: inp.source.entityId ?? null, sourceEntityType: inp.source.entityType ?? null,
            customerId: inp.customerId ?? null, entityType: inp.entityType ?? null, entityId: inp.entityId ?? null,
          };
          if (inp.supersedes?.length) payload.supersedes = inp.supersedes;
          if (inp.meta) payload.meta = inp.meta;
          return { id: pointId(id), vector: { [DENSE]: v, [LEXICAL]: sparseDoc(inp.text) }, payload };
        });
        await this.#client.upsert(this.#coll, { wait: true, points });
        for (const { inp, id } of fresh) if (inp.supersedes?.length) await this.#supersede(inp.supersedes.filter((s) => s !== id), id, false);
      }
      const byId = new Map((await this.#retrieve(ids)).map((p) => [p.memoryId as string, toMemory(p)]));
      return ids.map((id) => byId.get(id)).filter((m): m is Memory => m !== undefined);
    } catch (err) {
      throw wrap(err, 'put');
    }
  }

  async get(id: string): Promise<Memory | null> {
    if (this.#closed) throw new MemoryError('MEMORY_CLOSED', 'the memory store is closed');
    try {
      const [p] = await this.#retrieve([id]);
      return p ? toMemory(p) : null;
    } catch (err) {
      throw wrap(err, 'get');
    }
  }

  #filter(q: RecallQuery): Filter {
    const must: Condition[] = [];
    if (!q.includeSuperseded) must.push(match('status', 'active'));
    if (q.customerId !== undefined) must.push(match('customerId', q.customerId));
    if (q.entityType !== undefined) must.push(match('entityType', q.entityType));
    if (q.entityId !== undefined) must.push(match('entityId', q.entityId));
    if (q.kind !== undefined) must.push({ key: 'kind', match: { any: Array.isArray(q.kind) ? q.kind : [q.kind] } });
    if (q.since !== undefined || q.until !== undefined) {
      must.push({ key: 'createdAt', range: { ...(q.since ? { gte: new Date(q.since).toISOString() } : {}), ...(q.until ? { lte: new Date(q.until).toISOString() } : {}) } });
    }
    return { must };
  }

  async #query(using: string, query: number[] | { indices: number[]; values: number[] }, filter: Filter, limit: number): Promise<Map<string, { score: number; payload: Payload }>> {
    const res = await this.#client.query(this.#coll, { query, using, filter, limit, with_payload: true });
    return new Map(res.points.map((p) => [String(p.id), { score: p.score, payload: p.payload as Payload }]));
  }

  async search(q: RecallQuery): Promise<RecallHit[]> {
    this.#usable();
    const limit = q.limit ?? 10;
    if (!Number.isInteger(limit) || limit < 1) throw new MemoryError('MEMORY_INVALID_INPUT', `recall limit must be a positive integer, got ${String(q.limit)}`);
    try {
      const qv = await this.#emb.embedQuery(q.text);
      const sq = sparseQuery(q.text);
      const pool = candidatePool(limit);
      const f = this.#filter(q);
      const modelOnly: Filter = { must: [...(f.must as Condition[]), match('embeddingModel', this.#emb.id)] };
      // a retriever whose weight is 0 brings no candidates (its component is still computed for --explain)
      const none = () => new Map<string, { score: number; payload: Payload }>();
      const vec = this.#weights.vector > 0 ? await this.#query(DENSE, qv, modelOnly, pool) : none();
      const lex = sq.indices.length && this.#weights.lexical > 0 ? await this.#query(LEXICAL, sq, f, pool) : none();
      // the other component of each one-sided candidate, by id
      const missVec = [...lex.keys()].filter((id) => !vec.has(id));
      if (missVec.length) for (const [id, v] of await this.#query(DENSE, qv, { must: [...(modelOnly.must as Condition[]), { has_id: missVec }] }, missVec.length)) vec.set(id, v);
      const missLex = [...vec.keys()].filter((id) => !lex.has(id));
      if (missLex.length && sq.indices.length) for (const [id, v] of await this.#query(LEXICAL, sq, { must: [...(f.must as Condition[]), { has_id: missLex }] }, missLex.length)) lex.set(id, v);
      const now = this.#now();
      const hits: RecallHit[] = [];
      for (const id of new Set([...vec.keys(), ...lex.keys()])) {
        const payload = (vec.get(id) ?? lex.get(id))!.payload;
        const memory = toMemory(payload);
        const components: ScoreComponents = {
          vector: vectorScore(vec.get(id)?.score ?? 0),
          lexical: lexicalScore(lex.get(id)?.score ?? 0),
          recency: recencyScore(memory.createdAt, now, this.#halfLife),
          importance: memory.importance,
        };
        hits.push({ memory, score: fuse(components, this.#weights), components });
      }
      hits.sort((a, b) => b.score - a.score || (a.memory.id < b.memory.id ? -1 : 1));
      return hits.slice(0, limit);
    } catch (err) {
      throw wrap(err, 'search');
    }
  }

  async #supersede(ids: string[], by: string, onlyActive: boolean): Promise<number> {
    const targets = (await this.#retrieve(ids)).filter((p) => p.memoryId !== by && (!onlyActive || p.status === 'active'));
    if (!targets.length) return 0;
    await this.#client.setPayload(this.#coll, { wait: true, payload: { status: 'superseded', supersededBy: by }, points: targets.map((p) => pointId(p.memoryId as string)) });
    return targets.length;
  }

  async supersede(ids: string[], by: string): Promise<number> {
    if (this.#closed) throw new MemoryError('MEMORY_CLOSED', 'the memory store is closed');
    try {
      return await this.#supersede(ids, by, true);
    } catch (err) {
      throw wrap(err, 'supersede');
    }
  }

  async #scrollAll(coll: string, filter: Filter, withPayload: boolean | string[] = true): Promise<Array<{ id: string; payload: Payload }>> {
    const out: Array<{ id: string; payload: Payload }> = [];
    let offset: Schemas['ExtendedPointId'] | null | undefined;
    do {
      const page = await this.#client.scroll(coll, { filter, limit: 256, with_payload: withPayload, ...(offset !== undefined && offset !== null ? { offset } : {}) });
      for (const p of page.points) out.push({ id: String(p.id), payload: (p.payload ?? {}) as Payload });
      offset = page.next_page_offset as Schemas['ExtendedPointId'] | null | undefined;
    } while (offset !== undefined && offset !== null);
    return out;
  }

  async forget(sel: ForgetSelector): Promise<{ removed: number; ids: string[] }> {
    if (this.#closed) throw new MemoryError('MEMORY_CLOSED', 'the memory store is closed');
    const must: Condition[] = [];
    if (sel.customerId !== undefined) must.push(match('customerId', sel.customerId));
    if (sel.sourceEntityId !== undefined) must.push({ should: [match('sourceEntityId', sel.sourceEntityId), match('entityId', sel.sourceEntityId)] });
    if (sel.ids !== undefined) must.push({ key: 'memoryId', match: { any: sel.ids.length ? sel.ids : ['\u0000'] } });
    if (!must.length) throw new MemoryError('MEMORY_INVALID_INPUT', 'forget needs customerId, sourceEntityId or ids (it never forgets everything)');
    try {
      const found = await this.#scrollAll(this.#coll, { must }, ['memoryId']);
      if (found.length) await this.#client.delete(this.#coll, { wait: true, points: found.map((p) => p.id) });
      const ids = found.map((p) => p.payload.memoryId as string).sort();
      return { removed: ids.length, ids };
    } catch (err) {
      throw wrap(err, 'forget');
    }
  }

  async list(q: Parameters<MemoryStore['list']>[0] = {}): Promise<Memory[]> {
    if (this.#closed) throw new MemoryError('MEMORY_CLOSED', 'the memory store is closed');
    const must: Condition[] = [];
    if (q.kind !== undefined) must.push(match('kind', q.kind));
    if (q.customerId !== undefined) must.push(match('customerId', q.customerId));
    if (q.entityType !== undefined) must.push(match('entityType', q.entityType));
    if (q.status !== undefined) must.push(match('status', q.status));
    if (q.createdBefore !== undefined) must.push({ key: 'createdAt', range: { lt: new Date(q.createdBefore).toISOString() } });
    try {
      const all = (await this.#scrollAll(this.#coll, { must })).map((p) => toMemory(p.payload)).filter((m) => q.afterId === undefined || m.id > q.afterId);
      all.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      return all.slice(0, q.limit ?? 100);
    } catch (err) {
      throw wrap(err, 'list');
    }
  }

  async count(q: { customerId?: string; status?: MemoryStatus } = {}): Promise<number> {
    if (this.#closed) throw new MemoryError('MEMORY_CLOSED', 'the memory store is closed');
    const must: Condition[] = [];
    if (q.customerId !== undefined) must.push(match('customerId', q.customerId));
    if (q.status !== undefined) must.push(match('status', q.status));
    try {
      return (await this.#client.count(this.#coll, { filter: { must }, exact: true })).count;
    } catch (err) {
      throw wrap(err, 'count');
    }
  }

  async reindex(opts: Parameters<MemoryStore['reindex']>[0] = {}): Promise<{ reembedded: number; total: number }> {
    if (this.#closed) throw new MemoryError('MEMORY_CLOSED', 'the memory store is closed');
    const batchSize = opts.batchSize ?? 64;
    const model = this.#emb.id;
    try {
      const target = this.#collName(this.#dim);
      const migrating = this.#coll !== target && this.#blocked !== null;
      if (migrating) await this.#ensureCollection(target, this.#dim);
      // what is still to do: every point of the old collection not yet in the new one, or every point of another model
      const pending = migrating
        ? await (async () => {
            const old = await this.#scrollAll(this.#coll, {}, true);
            const there = new Set((await this.#scrollAll(target, {}, ['memoryId'])).map((p) => p.id));
            return old.filter((p) => !there.has(p.id));
          })()
        : await this.#scrollAll(this.#coll, { must_not: [match('embeddingModel', model)] }, true);
      const total = pending.length;
      let done = 0;
      opts.onProgress?.(0, total);
      for (let i = 0; i < pending.length; i += batchSize) {
        if (opts.signal?.aborted) throw new MemoryError('MEMORY_ABORTED', `reindex stopped after ${done} of ${total} memories; run it again to continue`, { cause: opts.signal.reason });
        const batch = pending.slice(i, i + batchSize);
        const vecs = await this.#emb.embedDocuments(batch.map((p) => p.payload.text as string));
        const points = batch.map((p, k) => ({
          id: p.id,
          vector: { [DENSE]: vecs[k]!, [LEXICAL]: sparseDoc(p.payload.text as string) },
          payload: { ...p.payload, embeddingModel: model, embeddingDim: this.#dim },
        }));
        await this.#client.upsert(migrating ? target : this.#coll, { wait: true, points });
        done += batch.length;
        opts.onProgress?.(done, total);
      }
      if (migrating) {
        const old = this.#coll;
        await this.#client.updateCollectionAliases({ actions: [{ delete_alias: { alias_name: this.#alias } }, { create_alias: { collection_name: target, alias_name: this.#alias } }] });
        await this.#client.deleteCollection(old);
        this.#coll = target;
        this.#blocked = null;
      }
      return { reembedded: done, total };
    } catch (err) {
      throw wrap(err, 'reindex');
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
  }
}
