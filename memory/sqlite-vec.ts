/**
 * The embedded memory store: one SQLite file through `node:sqlite` with the sqlite-vec extension.
 *
 * Tables (all written in one `BEGIN IMMEDIATE` transaction per call):
 * - `memories`: one row per memory (JSON source, supersedes and meta; status; embedding model,
 *   dimension and the float32 vector used for exact cosine),
 * - `memory_vec`: a sqlite-vec `vec0` table of the vectors' sign bits (`bit[D]`, sqlite-vec's
 *   binary quantization), the persistent source of the in-process prefilter (see sign-index.ts),
 * - `memory_fts`: an FTS5 table (porter stemming) for BM25,
 * - `memory_meta`: the store's dimension and model, and a generation counter bumped by every
 *   change that is not an append (forget, supersede, reindex) so other processes' indexes reload.
 *
 * Vector recall: below `annMinRows` memories (and for filtered queries that match few rows) an
 * exact scan with sqlite-vec's `vec_distance_cosine`; above it a hamming prefilter of
 * `annCandidates` memories, the best `annRerank` of them by int8 codes, reranked with exact
 * float32 cosine (sign-index.ts). Only vectors of the current embedder are
 * compared: after a model change the old ones wait for `reindex`.
 *
 * WAL + a 5 s busy timeout: the memory agent and the CLI both write the file.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { randomUUID } from 'node:crypto';
import { DatabaseSync, type SQLInputValue } from 'node:sqlite';
import { getLoadablePath } from 'sqlite-vec';
import type { KeelEmbeddings } from './embeddings/index.ts';
import { MemoryError, dimensionMismatch } from './errors.ts';
import { cosine, fuse, lexicalScore, normalizeWeights, queryTerms, recencyScore, vectorScore, DEFAULT_HALF_LIFE_DAYS } from './fusion.ts';
import { SignIndex, signBits } from './sign-index.ts';
import { validateInput, candidatePool } from './common.ts';
import type { ForgetSelector, Memory, MemoryInput, MemoryStatus, MemoryStore, MemoryStoreInfo, RecallHit, RecallQuery, ScoreComponents } from './types.ts';

export interface SqliteVecMemoryOptions {
  embeddings: KeelEmbeddings;
  weights?: ScoreComponents;
  now?: () => Date;
  /** recency half-life in days (default 30) */
  halfLifeDays?: number;
  /** below this many stored vectors vector recall scans exactly (default 5000) */
  annMinRows?: number;
  /** how many hamming-nearest memories the ANN path scores with int8 codes (default 2000) */
  annCandidates?: number;
  /** how many of those, best by int8 score, it reranks with exact cosine (default 100, at least 2 × the recall pool) */
  annRerank?: number;
  /**
   * Open a store whose vectors have another dimension than the embedder's instead of failing:
   * `put` and `search` then refuse with MEMORY_DIMENSION_MISMATCH and `reindex` migrates it
   * (what `keel memory reindex` does). Default false: opening fails with that error.
   */
  allowDimensionChange?: boolean;
}

interface Row {
  rowid: number;
  id: string;
  text: string;
  kind: string;
  customer_id: string | null;
  entity_type: string | null;
  entity_id: string | null;
  source_json: string;
  written_by: string;
  importance: number;
  created_at: string;
  stored_at: string;
  status: MemoryStatus;
  superseded_by: string | null;
  supersedes_json: string | null;
  meta_json: string | null;
  embedding_model: string;
  embedding_dim: number;
}

const COLS = 'rowid, id, text, kind, customer_id, entity_type, entity_id, source_json, written_by, importance, created_at, stored_at, status, superseded_by, supersedes_json, meta_json, embedding_model, embedding_dim';

function toMemory(r: Row): Memory {
  const m: Memory = {
    id: r.id,
    text: r.text,
    kind: r.kind,
    source: JSON.parse(r.source_json) as Memory['source'],
    writtenBy: r.written_by,
    importance: r.importance,
    createdAt: r.created_at,
    storedAt: r.stored_at,
    status: r.status,
    embedding: { model: r.embedding_model, dim: r.embedding_dim },
  };
  if (r.customer_id !== null) m.customerId = r.customer_id;
  if (r.entity_type !== null) m.entityType = r.entity_type;
  if (r.entity_id !== null) m.entityId = r.entity_id;
  if (r.superseded_by !== null) m.supersededBy = r.superseded_by;
  if (r.supersedes_json !== null) m.supersedes = JSON.parse(r.supersedes_json) as string[];
  if (r.meta_json !== null) m.meta = JSON.parse(r.meta_json) as Record<string, unknown>;
  return m;
}

function f32(u8: Uint8Array): Float32Array {
  if (u8.byteOffset % 4 === 0) return new Float32Array(u8.buffer, u8.byteOffset, u8.byteLength / 4);
  return new Float32Array(u8.buffer.slice(u8.byteOffset, u8.byteOffset + u8.byteLength));
}

function blob(v: ArrayLike<number>): Uint8Array {
  return new Uint8Array(Float32Array.from(v).buffer);
}

/** Parses `sqlite-vec:/abs/path.db`. */
export function parseSqliteVecUrl(url: string): string {
  const path = url.slice('sqlite-vec:'.length);
  if (!url.startsWith('sqlite-vec:') || !path) throw new MemoryError('MEMORY_BAD_URL', `KEEL_MEMORY '${url}' names no file: use sqlite-vec:/path/to/memory.db`);
  return path;
}

export async function openSqliteVecMemory(url: string, o: SqliteVecMemoryOptions): Promise<MemoryStore> {
  const path = parseSqliteVecUrl(url);
  const dim = await o.embeddings.dimensions();
  const s = new SqliteVecMemory(url, path, dim, o);
  return s;
}

class SqliteVecMemory implements MemoryStore {
  readonly info: MemoryStoreInfo;
  readonly #db: DatabaseSync;
  readonly #emb: KeelEmbeddings;
  readonly #dim: number;
  readonly #weights: ScoreComponents;
  readonly #now: () => Date;
  readonly #halfLife: number;
  readonly #annMinRows: number;
  readonly #annCandidates: number;
  readonly #annRerank: number;
  /** set while the stored vectors have another dimension than the embedder's */
  #blocked: MemoryError | null = null;
  #index: SignIndex | null = null;
  #indexGen = -1;
  #dataVersion = -1;
  #closed = false;
  /** the mean vector subtracted before sign quantization (null until the store is large enough for ANN), and the generation it was read at */
  #center: Float32Array | null = null;
  #centerGen = -1;

  constructor(url: string, path: string, dim: number, o: SqliteVecMemoryOptions) {
    this.#emb = o.embeddings;
    this.#dim = dim;
    this.#weights = normalizeWeights(o.weights);
    this.#now = o.now ?? (() => new Date());
    this.#halfLife = o.halfLifeDays ?? DEFAULT_HALF_LIFE_DAYS;
    this.#annMinRows = o.annMinRows ?? 5000;
    this.#annCandidates = o.annCandidates ?? 2000;
    this.#annRerank = o.annRerank ?? 100;
    this.info = { adapter: 'sqlite-vec', url, embeddingModel: o.embeddings.id, dim };
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    this.#db = new DatabaseSync(path, { allowExtension: true, timeout: 5_000 });
    try {
      this.#db.loadExtension(getLoadablePath());
      this.#db.enableLoadExtension(false);
    } catch (err) {
      this.#db.close();
      throw new MemoryError('MEMORY_EXTENSION_FAILED', `could not load the sqlite-vec extension: ${(err as Error).message}`, { cause: err });
    }
    this.#db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;');
    this.#tx(() => this.#migrate());
    const storeDim = Number(this.#meta('dim'));
    if (storeDim !== dim) {
      const err = dimensionMismatch(storeDim, this.#meta('model') ?? 'unknown', dim, o.embeddings.id);
      if (!o.allowDimensionChange) {
        this.#db.close();
        throw err;
      }
      this.#blocked = err;
    }
  }

  #migrate(): void {
    this.#db.exec(`
      CREATE TABLE IF NOT EXISTS memory_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS memories (
        rowid INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        text TEXT NOT NULL,
        kind TEXT NOT NULL,
        customer_id TEXT,
        entity_type TEXT,
        entity_id TEXT,
        source_entity_type TEXT,
        source_entity_id TEXT,
        source_json TEXT NOT NULL,
        written_by TEXT NOT NULL,
        importance REAL NOT NULL,
        created_at TEXT NOT NULL,
        stored_at TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'active',
        superseded_by TEXT,
        supersedes_json TEXT,
        meta_json TEXT,
        embedding_model TEXT NOT NULL,
        embedding_dim INTEGER NOT NULL,
        embedding BLOB
      );
      CREATE INDEX IF NOT EXISTS memories_customer ON memories (customer_id, created_at);
      CREATE INDEX IF NOT EXISTS memories_entity ON memories (entity_type, entity_id);
      CREATE INDEX IF NOT EXISTS memories_source ON memories (source_entity_id);
      CREATE INDEX IF NOT EXISTS memories_kind ON memories (kind);
      CREATE INDEX IF NOT EXISTS memories_created ON memories (created_at);
      CREATE INDEX IF NOT EXISTS memories_status ON memories (status);
      CREATE INDEX IF NOT EXISTS memories_model ON memories (embedding_model);
      CREATE VIRTUAL TABLE IF NOT EXISTS memory_fts USING fts5 (text, tokenize = 'porter unicode61');
    `);
    if (this.#meta('dim') === undefined) {
      this.#setMeta('dim', String(this.#dim));
      this.#setMeta('model', this.#emb.id);
      this.#setMeta('generation', '0');
      this.#createVecTable(this.#dim);
    }
  }

  #createVecTable(dim: number): void {
    this.#db.exec(`CREATE VIRTUAL TABLE memory_vec USING vec0 (embedding bit[${Math.ceil(dim / 8) * 8}])`);
  }

  #meta(key: string): string | undefined {
    const r = this.#db.prepare('SELECT value FROM memory_meta WHERE key = ?').get(key) as { value: string } | undefined;
    return r?.value;
  }

  #setMeta(key: string, value: string): void {
    this.#db.prepare('INSERT INTO memory_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value').run(key, value);
  }

  /** Bumps the generation (inside a transaction); keeps our index valid only if nobody else bumped it meanwhile. */
  #bump(): void {
    const g = Number(this.#meta('generation') ?? '0');
    this.#setMeta('generation', String(g + 1));
    if (this.#index && g === this.#indexGen) this.#indexGen = g + 1;
    else this.#index = null;
  }

  #tx<T>(fn: () => T): T {
    this.#db.exec('BEGIN IMMEDIATE');
    try {
      const out = fn();
      this.#db.exec('COMMIT');
      return out;
    } catch (err) {
      this.#db.exec('ROLLBACK');
      throw err;
    }
  }

  #open(): void {
    if (this.#closed) throw new MemoryError('MEMORY_CLOSED', 'the memory store is closed');
  }

  #usable(): void {
    this.#open();
    if (this.#blocked) throw this.#blocked;
  }

  async put(inputs: MemoryInput[]): Promise<Memory[]> {
    this.#usable();
    for (const i of inputs) validateInput(i);
    const ids = inputs.map((i) => i.id ?? randomUUID());
    const known = new Set(this.#rowsByIds(ids).map((r) => r.id));
    const fresh = inputs.map((inp, k) => ({ inp, id: ids[k]! })).filter((x, k) => !known.has(x.id) && ids.indexOf(x.id) === k);
    const vecs = fresh.length ? await this.#emb.embedDocuments(fresh.map((x) => x.inp.text)) : [];
    for (const v of vecs) {
      if (v.length !== this.#dim) throw dimensionMismatch(this.#dim, this.#emb.id, v.length, `${this.#emb.id} (as returned)`);
    }
    this.#open();
    const storedAt = this.#now().toISOString();
    const insRow = this.#db.prepare(`INSERT INTO memories (id, text, kind, customer_id, entity_type, entity_id, source_entity_type, source_entity_id, source_json, written_by,
      importance, created_at, stored_at, status, supersedes_json, meta_json, embedding_model, embedding_dim, embedding)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'active', ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING RETURNING rowid`);
    const insVec = this.#db.prepare('INSERT INTO memory_vec (rowid, embedding) VALUES (?, vec_bit(?))');
    const insFts = this.#db.prepare('INSERT INTO memory_fts (rowid, text) VALUES (?, ?)');
    const sup = this.#db.prepare("UPDATE memories SET status = 'superseded', superseded_by = ? WHERE id = ? AND id <> ? RETURNING rowid");
    const added: Array<{ rowid: number; sig: Uint8Array; v: number[] }> = [];
    const superseded: number[] = [];
    this.#tx(() => {
      this.#syncCenter();
      fresh.forEach(({ inp, id }, k) => {
        const v = vecs[k]!;
        const createdAt = inp.createdAt ? new Date(inp.createdAt).toISOString() : storedAt;
        const r = insRow.get(
          id, inp.text, inp.kind, inp.customerId ?? null, inp.entityType ?? null, inp.entityId ?? null,
          inp.source.entityType ?? null, inp.source.entityId ?? null, JSON.stringify({ ...inp.source, eventIds: inp.source.eventIds ?? [] }), inp.writtenBy,
          inp.importance ?? 0.5, createdAt, storedAt, inp.supersedes?.length ? JSON.stringify(inp.supersedes) : null, inp.meta ? JSON.stringify(inp.meta) : null,
          this.#emb.id, this.#dim, blob(v),
        ) as { rowid: number } | undefined;
        if (!r) return; // another writer stored this id between our check and the insert
        const sig = this.#sig(v);
        insVec.run(BigInt(r.rowid), sig);
        insFts.run(BigInt(r.rowid), inp.text);
        added.push({ rowid: r.rowid, sig, v });
        for (const old of inp.supersedes ?? []) for (const s of sup.all(id, old, id) as Array<{ rowid: number }>) superseded.push(s.rowid);
      });
      if (superseded.length) this.#bump();
    });
    // own commits do not change PRAGMA data_version, so the cached one still tells other writers' commits apart
    if (this.#index) {
      for (const a of added) this.#index.add(a.rowid, a.sig, true, a.v);
      for (const r of superseded) this.#index.setActive(r, false);
    }
    const byId = new Map(this.#rowsByIds(ids).map((r) => [r.id, toMemory(r)]));
    return ids.map((id) => byId.get(id)).filter((m): m is Memory => m !== undefined);
  }

  #rowsByIds(ids: string[]): Row[] {
    if (!ids.length) return [];
    return this.#db.prepare(`SELECT ${COLS} FROM memories WHERE id IN (SELECT value FROM json_each(?))`).all(JSON.stringify(ids)) as unknown as Row[];
  }

  #rowsByRowids(rowids: number[]): Row[] {
    if (!rowids.length) return [];
    return this.#db.prepare(`SELECT ${COLS} FROM memories WHERE rowid IN (SELECT value FROM json_each(?))`).all(JSON.stringify(rowids)) as unknown as Row[];
  }

  async get(id: string): Promise<Memory | null> {
    this.#open();
    const r = this.#db.prepare(`SELECT ${COLS} FROM memories WHERE id = ?`).get(id) as Row | undefined;
    return r ? toMemory(r) : null;
  }

  /** SQL conditions (on alias `m`) for a recall query's filters. */
  #filters(q: RecallQuery): { sql: string; args: SQLInputValue[]; narrowing: boolean } {
    const where = new Where();
    if (!q.includeSuperseded) where.add("m.status = 'active'");
    if (q.customerId !== undefined) where.add('m.customer_id = ?', q.customerId);
    if (q.entityType !== undefined) where.add('m.entity_type = ?', q.entityType);
    if (q.entityId !== undefined) where.add('m.entity_id = ?', q.entityId);
    if (q.kind !== undefined) {
      const kinds = Array.isArray(q.kind) ? q.kind : [q.kind];
      where.add('m.kind IN (SELECT value FROM json_each(?))', JSON.stringify(kinds));
    }
    if (q.since !== undefined) where.add('m.created_at >= ?', new Date(q.since).toISOString());
    if (q.until !== undefined) where.add('m.created_at <= ?', new Date(q.until).toISOString());
    return { sql: where.sql, args: where.args, narrowing: where.args.length > 0 };
  }

  #pragmaDataVersion(): number {
    return (this.#db.prepare('PRAGMA data_version').get() as { data_version: number }).data_version;
  }

  /** The in-process sign index, loaded or refreshed after other processes' commits. */
  /**
   * Sign bits of `v - center`. Sentence embeddings share a common direction (MiniLM: unrelated
   * texts have cosine ≈ 0.15), so raw signs agree on many bits for every pair; centering first
   * makes the bits discriminate. Without a center yet, raw signs (vec_quantize_binary's).
   */
  #sig(v: ArrayLike<number>): Uint8Array {
    const c = this.#center;
    if (!c) return signBits(v);
    const d = new Float32Array(v.length);
    for (let i = 0; i < v.length; i++) d[i] = v[i]! - (c[i] ?? 0);
    return signBits(d);
  }

  /** Re-reads the stored center when another writer changed the generation (call inside a transaction). */
  #syncCenter(): void {
    const gen = Number(this.#meta('generation') ?? '0');
    if (gen === this.#centerGen) return;
    const raw = this.#meta('center');
    const model = this.#meta('center_model');
    this.#center = raw && model === this.#emb.id ? new Float32Array(Uint8Array.from(Buffer.from(raw, 'base64')).buffer) : null;
    if (this.#center && this.#center.length !== this.#dim) this.#center = null;
    this.#centerGen = gen;
  }

  /**
   * Sets the center to the mean of the current vectors and rewrites every stored signature with
   * it, once, when the store first needs the ANN path (and again after a reindex to a new model).
   */
  #establishCenter(): void {
    this.#tx(() => {
      this.#syncCenter();
      if (this.#center) return;
      const sum = new Float64Array(this.#dim);
      let n = 0;
      const all = this.#db.prepare('SELECT embedding FROM memories WHERE embedding_model = ? AND embedding_dim = ?');
      for (const r of all.iterate(this.#emb.id, this.#dim) as Iterable<{ embedding: Uint8Array }>) {
        const v = f32(r.embedding);
        for (let i = 0; i < v.length; i++) sum[i]! += v[i]!;
        n++;
      }
      if (!n) return;
      const center = Float32Array.from(sum, (x) => x / n);
      this.#setMeta('center', Buffer.from(center.buffer).toString('base64'));
      this.#setMeta('center_model', this.#emb.id);
      this.#center = center;
      const del = this.#db.prepare('DELETE FROM memory_vec WHERE rowid = ?');
      const ins = this.#db.prepare('INSERT INTO memory_vec (rowid, embedding) VALUES (?, vec_bit(?))');
      const rows = this.#db.prepare('SELECT rowid, embedding FROM memories WHERE embedding_model = ? AND embedding_dim = ?');
      for (const r of rows.all(this.#emb.id, this.#dim) as Array<{ rowid: number; embedding: Uint8Array }>) {
        del.run(BigInt(r.rowid));
        ins.run(BigInt(r.rowid), this.#sig(f32(r.embedding)));
      }
      this.#bump();
      this.#centerGen = Number(this.#meta('generation'));
    });
    this.#index = null;
  }

  #signIndex(): SignIndex {
    this.#syncCenter();
    if (!this.#center) this.#establishCenter();
    const dv = this.#pragmaDataVersion();
    const gen = Number(this.#meta('generation') ?? '0');
    if (this.#index && gen === this.#indexGen && dv === this.#dataVersion) return this.#index;
    let idx = this.#index;
    let after = idx?.loadedUpTo ?? 0;
    if (!idx || gen !== this.#indexGen) {
      idx = new SignIndex(this.#dim, this.#center);
      after = 0;
    }
    const rows = this.#db
      .prepare('SELECT v.rowid AS rowid, v.embedding AS sig, m.status AS status, m.embedding AS vec FROM memory_vec v JOIN memories m ON m.rowid = v.rowid WHERE v.rowid > ? AND m.embedding_model = ?')
      .iterate(after, this.#emb.id) as Iterable<{ rowid: number; sig: Uint8Array; status: string; vec: Uint8Array }>;
    for (const r of rows) {
      idx.add(r.rowid, r.sig, r.status === 'active', f32(r.vec));
      if (r.rowid > idx.loadedUpTo) idx.loadedUpTo = r.rowid;
    }
    this.#index = idx;
    this.#indexGen = gen;
    this.#dataVersion = dv;
    return idx;
  }

  /** Exact cosine of `qv` against the stored float vectors of `rowids` (current model only). */
  #exactCosine(qv: Float32Array, rowids: number[]): Map<number, number> {
    const out = new Map<number, number>();
    if (!rowids.length) return out;
    const rows = this.#db
      .prepare('SELECT rowid, embedding, embedding_model AS model, embedding_dim AS dim FROM memories WHERE rowid IN (SELECT value FROM json_each(?))')
      .all(JSON.stringify(rowids)) as Array<{ rowid: number; embedding: Uint8Array | null; model: string; dim: number }>;
    for (const r of rows) if (r.embedding && r.model === this.#emb.id && r.dim === this.#dim) out.set(r.rowid, cosine(qv, f32(r.embedding)));
    return out;
  }

  #vectorCandidates(qv: Float32Array, q: RecallQuery, want: number): Map<number, number> {
    const f = this.#filters(q);
    const exact = (): Map<number, number> => {
      const rows = this.#db
        .prepare(`SELECT m.rowid AS rowid, vec_distance_cosine(m.embedding, ?) AS d FROM memories m
          WHERE ${f.sql} AND m.embedding_model = ? AND m.embedding_dim = ? AND m.embedding IS NOT NULL AND d IS NOT NULL ORDER BY d LIMIT ?`)
        .all(blob(qv), ...f.args, this.#emb.id, this.#dim, want) as Array<{ rowid: number; d: number }>;
      // scores from the same float64 cosine as the ANN path, so both paths rank ties alike
      return this.#exactCosine(qv, rows.map((r) => r.rowid));
    };
    const stored = (this.#db.prepare('SELECT count(*) AS n FROM memories').get() as { n: number }).n; // b-tree count: O(1) pages
    if (stored < this.#annMinRows) return exact();
    if (f.narrowing) {
      const matching = (this.#db.prepare(`SELECT count(*) AS n FROM memories m WHERE ${f.sql}`).get(...f.args) as { n: number }).n;
      if (matching <= this.#annMinRows) return exact();
    }
    const idx = this.#signIndex();
    const cand = idx.nearest(this.#sig(qv), qv, Math.max(this.#annCandidates, want * 4), Math.max(this.#annRerank, want * 2), !!q.includeSuperseded);
    let allowed = cand;
    if (f.narrowing) {
      const ok = this.#db.prepare(`SELECT m.rowid AS rowid FROM memories m WHERE m.rowid IN (SELECT value FROM json_each(?)) AND ${f.sql}`).all(JSON.stringify(cand), ...f.args) as Array<{ rowid: number }>;
      allowed = ok.map((r) => r.rowid);
      if (allowed.length < want) return exact();
    }
    const sims = [...this.#exactCosine(qv, allowed)].sort((a, b) => b[1] - a[1]).slice(0, want);
    return new Map(sims);
  }

  /**
   * BM25 of every memory matching any term (FTS5 alone, best first, capped at LEXICAL_SCAN), then
   * the best `want` of them that pass the filters. Joining FTS5 with the memory rows in SQL costs
   * 4–6× more than this; memories beyond the cap count as no lexical match.
   */
  #lexicalCandidates(terms: string[], q: RecallQuery, want: number): { top: Map<number, number>; all: Map<number, number> } {
    if (!terms.length) return { top: new Map(), all: new Map() };
    const rows = this.#db
      .prepare('SELECT rowid, bm25(memory_fts) AS b FROM memory_fts WHERE memory_fts MATCH ? ORDER BY b LIMIT ?')
      .all(ftsQuery(terms), LEXICAL_SCAN) as Array<{ rowid: number; b: number }>;
    const all = new Map(rows.map((r) => [r.rowid, -r.b]));
    const f = this.#filters(q);
    const top = new Map<number, number>();
    const check = this.#db.prepare(`SELECT m.rowid AS rowid FROM memories m WHERE m.rowid IN (SELECT value FROM json_each(?)) AND ${f.sql}`);
    for (let i = 0; i < rows.length && top.size < want; i += want * 2) {
      const chunk = rows.slice(i, i + want * 2);
      const ok = new Set((check.all(JSON.stringify(chunk.map((r) => r.rowid)), ...f.args) as Array<{ rowid: number }>).map((r) => r.rowid));
      for (const r of chunk) if (ok.has(r.rowid) && top.size < want) top.set(r.rowid, -r.b);
    }
    return { top, all };
  }

  async search(q: RecallQuery): Promise<RecallHit[]> {
    this.#usable();
    const limit = q.limit ?? 10;
    if (!Number.isInteger(limit) || limit < 1) throw new MemoryError('MEMORY_INVALID_INPUT', `recall limit must be a positive integer, got ${String(q.limit)}`);
    const qv = Float32Array.from(await this.#emb.embedQuery(q.text));
    this.#open();
    const pool = candidatePool(limit);
    const terms = queryTerms(q.text);
    // a retriever whose weight is 0 brings no candidates (its component is still computed for --explain)
    const vec = this.#weights.vector > 0 ? this.#vectorCandidates(qv, q, pool) : new Map<number, number>();
    const { top: lexTop, all: bm25 } = this.#lexicalCandidates(terms, q, pool);
    const lex = this.#weights.lexical > 0 ? lexTop : new Map<number, number>();
    const missingVec = [...lex.keys()].filter((r) => !vec.has(r));
    for (const [r, s] of this.#exactCosine(qv, missingVec)) vec.set(r, s);
    for (const r of vec.keys()) if (!lex.has(r) && bm25.has(r)) lex.set(r, bm25.get(r)!);
    const rowids = [...new Set([...vec.keys(), ...lex.keys()])];
    const now = this.#now();
    const hits = this.#rowsByRowids(rowids).map((r) => {
      const components: ScoreComponents = {
        vector: vectorScore(vec.get(r.rowid) ?? 0),
        lexical: lexicalScore(lex.get(r.rowid) ?? 0),
        recency: recencyScore(r.created_at, now, this.#halfLife),
        importance: r.importance,
      };
      return { memory: toMemory(r), score: fuse(components, this.#weights), components };
    });
    hits.sort((a, b) => b.score - a.score || (a.memory.id < b.memory.id ? -1 : 1));
    return hits.slice(0, limit);
  }

  async supersede(ids: string[], by: string): Promise<number> {
    this.#open();
    if (!ids.length) return 0;
    const rows = this.#tx(() => {
      const r = this.#db
        .prepare("UPDATE memories SET status = 'superseded', superseded_by = ? WHERE id IN (SELECT value FROM json_each(?)) AND status = 'active' AND id <> ? RETURNING rowid")
        .all(by, JSON.stringify(ids), by) as Array<{ rowid: number }>;
      if (r.length) this.#bump();
      return r;
    });
    for (const r of rows) this.#index?.setActive(r.rowid, false);
    return rows.length;
  }

  async forget(sel: ForgetSelector): Promise<{ removed: number; ids: string[] }> {
    this.#open();
    const where = new Where();
    if (sel.customerId !== undefined) where.add('customer_id = ?', sel.customerId);
    if (sel.sourceEntityId !== undefined) where.add('(source_entity_id = ? OR entity_id = ?)', sel.sourceEntityId, sel.sourceEntityId);
    if (sel.ids !== undefined) where.add('id IN (SELECT value FROM json_each(?))', JSON.stringify(sel.ids));
    if (!where.args.length) throw new MemoryError('MEMORY_INVALID_INPUT', 'forget needs customerId, sourceEntityId or ids (it never forgets everything)');
    const gone = this.#tx(() => {
      const rows = this.#db.prepare(`SELECT rowid, id FROM memories WHERE ${where.sql} ORDER BY id`).all(...where.args) as Array<{ rowid: number; id: string }>;
      if (!rows.length) return rows;
      const list = JSON.stringify(rows.map((r) => r.rowid));
      this.#db.prepare('DELETE FROM memory_vec WHERE rowid IN (SELECT value FROM json_each(?))').run(list);
      this.#db.prepare('DELETE FROM memory_fts WHERE rowid IN (SELECT value FROM json_each(?))').run(list);
      this.#db.prepare('DELETE FROM memories WHERE rowid IN (SELECT value FROM json_each(?))').run(list);
      this.#bump();
      return rows;
    });
    for (const r of gone) this.#index?.remove(r.rowid);
    return { removed: gone.length, ids: gone.map((r) => r.id) };
  }

  async list(q: Parameters<MemoryStore['list']>[0] = {}): Promise<Memory[]> {
    this.#open();
    const where = new Where();
    if (q.afterId !== undefined) where.add('id > ?', q.afterId);
    if (q.kind !== undefined) where.add('kind = ?', q.kind);
    if (q.customerId !== undefined) where.add('customer_id = ?', q.customerId);
    if (q.entityType !== undefined) where.add('entity_type = ?', q.entityType);
    if (q.status !== undefined) where.add('status = ?', q.status);
    if (q.createdBefore !== undefined) where.add('created_at < ?', new Date(q.createdBefore).toISOString());
    const rows = this.#db
      .prepare(`SELECT ${COLS} FROM memories WHERE ${where.sql} ORDER BY id LIMIT ?`)
      .all(...where.args, q.limit ?? 100) as unknown as Row[];
    return rows.map(toMemory);
  }

  async count(q: { customerId?: string; status?: MemoryStatus } = {}): Promise<number> {
    this.#open();
    const where = new Where();
    if (q.customerId !== undefined) where.add('customer_id = ?', q.customerId);
    if (q.status !== undefined) where.add('status = ?', q.status);
    const r = this.#db.prepare(`SELECT count(*) AS n FROM memories WHERE ${where.sql}`).get(...where.args) as { n: number };
    return r.n;
  }

  async reindex(opts: Parameters<MemoryStore['reindex']>[0] = {}): Promise<{ reembedded: number; total: number }> {
    this.#open();
    const batchSize = opts.batchSize ?? 64;
    const model = this.#emb.id;
    const dim = this.#dim;
    if (Number(this.#meta('dim')) !== dim) {
      // vec0 has a fixed dimension: recreate it. Every row still carries its old model, so each is re-embedded below.
      this.#tx(() => {
        this.#db.exec('DROP TABLE IF EXISTS memory_vec');
        this.#createVecTable(dim);
        this.#setMeta('dim', String(dim));
        this.#setMeta('model', model);
        this.#bump();
      });
      this.#index = null;
    }
    this.#blocked = null;
    const stale = 'embedding_model <> ? OR embedding_dim <> ?';
    const total = (this.#db.prepare(`SELECT count(*) AS n FROM memories WHERE ${stale}`).get(model, dim) as { n: number }).n;
    if (total > 0) {
      // the center belongs to the old model's vectors: signatures go raw until the next ANN use sets a new one
      this.#tx(() => {
        this.#db.prepare("DELETE FROM memory_meta WHERE key IN ('center', 'center_model')").run();
        this.#bump();
      });
      this.#center = null;
      this.#centerGen = -1;
      this.#index = null;
    }
    let done = 0;
    opts.onProgress?.(0, total);
    for (;;) {
      if (opts.signal?.aborted) throw new MemoryError('MEMORY_ABORTED', `reindex stopped after ${done} of ${total} memories; run it again to continue`, { cause: opts.signal.reason });
      const rows = this.#db.prepare(`SELECT rowid, text FROM memories WHERE ${stale} ORDER BY rowid LIMIT ?`).all(model, dim, batchSize) as Array<{ rowid: number; text: string }>;
      if (!rows.length) break;
      const vecs = await this.#emb.embedDocuments(rows.map((r) => r.text));
      this.#open();
      const upd = this.#db.prepare('UPDATE memories SET embedding = ?, embedding_model = ?, embedding_dim = ? WHERE rowid = ?');
      const del = this.#db.prepare('DELETE FROM memory_vec WHERE rowid = ?');
      const ins = this.#db.prepare('INSERT INTO memory_vec (rowid, embedding) VALUES (?, vec_bit(?))');
      this.#tx(() => {
        this.#syncCenter();
        rows.forEach((r, k) => {
          const v = vecs[k]!;
          if (v.length !== dim) throw dimensionMismatch(dim, model, v.length, `${model} (as returned)`);
          upd.run(blob(v), model, dim, r.rowid);
          del.run(BigInt(r.rowid));
          ins.run(BigInt(r.rowid), this.#sig(v));
        });
        this.#setMeta('model', model);
        this.#bump();
      });
      this.#index = null;
      done += rows.length;
      opts.onProgress?.(done, total);
    }
    return { reembedded: done, total };
  }

  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#db.close();
    }
  }
}

/** SQL conditions joined by AND, with their arguments in order. */
class Where {
  readonly parts: string[] = [];
  readonly args: SQLInputValue[] = [];
  add(sql: string, ...args: SQLInputValue[]): void {
    this.parts.push(sql);
    this.args.push(...args);
  }
  get sql(): string {
    return this.parts.length ? this.parts.join(' AND ') : '1';
  }
}

/** How many lexical matches (best BM25 first) a recall looks at. */
const LEXICAL_SCAN = 5000;

function ftsQuery(terms: string[]): string {
  return terms.map((t) => `"${t.replaceAll('"', '""')}"`).join(' OR ');
}
