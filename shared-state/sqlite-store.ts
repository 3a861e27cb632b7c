/**
 * The embedded adapter: one SQLite file through `node:sqlite`, WAL, shared safely by several
 * local processes. Every write is one `BEGIN IMMEDIATE` transaction, so the change-log cursor
 * (the events table's INTEGER PRIMARY KEY) is assigned in commit order and a reader can never
 * see cursor N+1 before N. Internal: use `openStore`.
 */
import type { DatabaseSync, SQLInputValue, StatementSync } from 'node:sqlite';
import { openSqlite } from './health.ts';
import type { EntityTypeRegistry } from './entity-types.ts';
import {
  DEFAULT_LEASE_MS,
  ERASED_EVENT,
  COMPACTED_EVENT,
  planCompactedEvent,
  assertId,
  buildAuditRecord,
  checkActor,
  makeScrubber,
  eraseAuditDetails,
  planErasedEvent,
  scrub,
  type Scrubber,
  checkApprovalInput,
  checkAuditInput,
  checkDecision,
  clampInt,
  COST_DIMENSIONS,
  GENESIS_HASH,
  newId,
  normalizeQuery,
  nowIso,
  planAppend,
  basisAt,
  replay,
  searchTerms,
  searchTextOf,
  summarizeCosts,
  toCostRecord,
  toEntity,
  verifyChain,
  type EntitySnapshot,
  type NormalizedCondition,
} from './core.ts';
import {
  ApprovalExpiredError,
  ApprovalNotPendingError,
  IdempotencyLeaseLostError,
  NotFoundError,
  StateError,
  StoreBusyError,
  StorageFullError,
  VersionConflictError,
  InvalidQueryError,
} from './errors.ts';
import type {
  AppendOptions,
  AppendResult,
  Approval,
  ApprovalDecision,
  ApprovalInput,
  ApprovalState,
  AuditInput,
  AuditRecord,
  AuditVerification,
  CompactResult,
  CompactHistoryOptions,
  CompactHistoryResult,
  PruneIdempotencyResult,
  RedactCounts,
  RedactEntityOptions,
  RedactEntityResult,
  RedactRecordsOptions,
  ChangesPage,
  ChangesQuery,
  ClaimResult,
  CommittedEvent,
  CompleteOptions,
  CostInput,
  CostQuery,
  CostRecord,
  CostReport,
  Entity,
  EntityQuery,
  EventInput,
  EventMeta,
  IdempotencyRecord,
  QueryPage,
  SearchOptions,
  StateStore,
  StoreInfo,
} from './types.ts';

export interface SqliteStoreOptions {
  registry: EntityTypeRegistry;
  maxDocumentBytes: number;
  /** `FULL` (default: a commit survives power loss) or `NORMAL` (WAL: may lose the last commits on power loss, never corrupts) */
  synchronous?: 'FULL' | 'NORMAL';
  /** how long a writer waits for another process's lock before STATE_BUSY (default 10 s) */
  busyTimeoutMs?: number;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS events (
  cursor INTEGER PRIMARY KEY AUTOINCREMENT,
  event_id TEXT NOT NULL UNIQUE,
  entity_type TEXT NOT NULL,
  entity_id TEXT NOT NULL,
  version INTEGER NOT NULL,
  type TEXT NOT NULL,
  schema_version INTEGER NOT NULL,
  data TEXT NOT NULL,
  meta TEXT NOT NULL,
  time TEXT NOT NULL,
  published INTEGER NOT NULL DEFAULT 0,
  UNIQUE (entity_type, entity_id, version)
);
CREATE INDEX IF NOT EXISTS events_unpublished ON events (cursor) WHERE published = 0;
CREATE INDEX IF NOT EXISTS events_type_cursor ON events (entity_type, cursor);
CREATE TABLE IF NOT EXISTS entities (
  entity_type TEXT NOT NULL,
  entity_id TEXT NOT NULL,
  version INTEGER NOT NULL,
  state TEXT NOT NULL,
  deleted INTEGER NOT NULL,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  schema_version INTEGER NOT NULL,
  search_text TEXT NOT NULL,
  PRIMARY KEY (entity_type, entity_id)
);
CREATE INDEX IF NOT EXISTS entities_id ON entities (entity_id);
CREATE INDEX IF NOT EXISTS entities_updated ON entities (entity_type, updated_at);
CREATE TABLE IF NOT EXISTS idempotency (
  key TEXT PRIMARY KEY,
  status TEXT NOT NULL,
  token TEXT,
  attempt INTEGER NOT NULL,
  lease_until INTEGER,
  result TEXT,
  created_at TEXT NOT NULL,
  completed_at TEXT
);
CREATE TABLE IF NOT EXISTS costs (
  id TEXT PRIMARY KEY,
  time TEXT NOT NULL,
  agent TEXT, capability TEXT, run_id TEXT, customer_id TEXT, entity_type TEXT, entity_id TEXT, model TEXT,
  tokens_in INTEGER NOT NULL, tokens_out INTEGER NOT NULL, tokens_cached INTEGER NOT NULL,
  cost_usd REAL NOT NULL, compute_ms REAL NOT NULL,
  trace_id TEXT, details TEXT
);
CREATE INDEX IF NOT EXISTS costs_time ON costs (time);
CREATE INDEX IF NOT EXISTS costs_run ON costs (run_id);
CREATE INDEX IF NOT EXISTS costs_customer ON costs (customer_id);
CREATE TABLE IF NOT EXISTS approvals (
  id TEXT PRIMARY KEY,
  state TEXT NOT NULL,
  action TEXT NOT NULL,
  subject TEXT NOT NULL,
  payload TEXT NOT NULL,
  requested_by TEXT NOT NULL,
  created_at TEXT NOT NULL,
  deadline TEXT NOT NULL,
  deadline_ms INTEGER NOT NULL,
  correlation_id TEXT,
  decided_at TEXT,
  decided_by TEXT,
  reason TEXT,
  text TEXT
);
CREATE INDEX IF NOT EXISTS approvals_state ON approvals (state, deadline_ms);
CREATE TABLE IF NOT EXISTS audit (
  seq INTEGER PRIMARY KEY,
  time TEXT NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  subject TEXT NOT NULL,
  details TEXT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);
`;

type Row = Record<string, SQLInputValue>;

/** A completion made ready before the write lock is taken: the result as JSON, the cost checked. */
interface Completion {
  result: string;
  cost: CostRecord | undefined;
}

function completion(result: unknown, cost: CostInput | undefined): Completion {
  return { result: JSON.stringify(result ?? null), cost: cost ? toCostRecord(cost) : undefined };
}

const COST_COLUMNS: Record<string, string> = {
  agent: 'agent',
  capability: 'capability',
  runId: 'run_id',
  customerId: 'customer_id',
  entityType: 'entity_type',
  entityId: 'entity_id',
  model: 'model',
};

function isBusy(err: unknown): boolean {
  const e = err as { errcode?: number; message?: string };
  return e?.errcode === 5 || e?.errcode === 6 || /database is locked|SQLITE_BUSY/i.test(e?.message ?? '');
}

/** SQLITE_FULL (13, also in the low byte of its extended codes) or ENOSPC: the disk is full. */
function isFull(err: unknown): boolean {
  const e = err as { errcode?: number; code?: string; message?: string };
  return (typeof e?.errcode === 'number' && (e.errcode & 0xff) === 13) || e?.code === 'ENOSPC' || /database or disk is full|no space left on device/i.test(e?.message ?? '');
}

/**
 * While other processes hold the write lock (one was found holding it in the last
 * {@link CONTENDED_MS}), a flush waits this long for more writes to join it: each transaction
 * then costs the lock one fsync and one reload of the page cache for more writes.
 */
const LINGER_MS = 1;
const CONTENDED_MS = 200;
/**
 * Tries of a busy flush on the next turns of the event loop before it waits 1 ms between tries:
 * the holder is usually in its fsync, and a waiter spinning meanwhile takes CPU from it (50 tries
 * measured about 7 % slower than 3 in the workflow bench).
 */
const SPIN_TRIES = 3;
const SLEEPER = new Int32Array(new SharedArrayBuffer(4));

export class SqliteStore implements StateStore {
  readonly info: StoreInfo;
  readonly #db: DatabaseSync;
  readonly #reg: EntityTypeRegistry;
  readonly #max: number;
  readonly #stmts = new Map<string, StatementSync>();
  readonly #listeners = new Set<(events: CommittedEvent[]) => void>();
  #closed = false;
  #busyMs = 10_000;

  constructor(path: string, opts: SqliteStoreOptions) {
    this.#reg = opts.registry;
    this.#max = opts.maxDocumentBytes;
    // FULL (default; KEEL_SQLITE_SYNC) syncs every commit to disk; NORMAL (WAL) survives any
    // process crash but may lose the last commits on power loss, and is much faster
    const sync = opts.synchronous ?? 'FULL';
    const busy = opts.busyTimeoutMs ?? 10_000;
    this.#db = openSqlite(path);
    this.#busyMs = Math.trunc(busy);
    // 0: lock waits are done by #busyRetry (fine-grained); `busy` bounds them
    this.#db.exec(`PRAGMA synchronous = ${sync}; PRAGMA busy_timeout = 0;`);
    // Unicode lower-casing for the erasure's pre-filter (SQLite's lower() folds ASCII only)
    this.#db.function('keel_lower', { deterministic: true }, (v) => (typeof v === 'string' ? v.toLowerCase() : v));
    this.#tx(() => {
      this.#db.exec(SCHEMA);
      // stores created before approvals kept the edited text
      const cols = this.#db.prepare('PRAGMA table_info(approvals)').all() as Array<{ name: string }>;
      if (!cols.some((c) => c.name === 'text')) this.#db.exec('ALTER TABLE approvals ADD COLUMN text TEXT');
      // v2 audit records (erasable details): stores created before keep their v1 records as they are
      const auditCols = this.#db.prepare('PRAGMA table_info(audit)').all() as Array<{ name: string }>;
      for (const c of ['v INTEGER', 'details_digest TEXT', 'details_salt TEXT', 'erased TEXT', 'details_leaves TEXT', 'details_salts TEXT']) {
        if (!auditCols.some((x) => x.name === c.split(' ')[0])) this.#db.exec(`ALTER TABLE audit ADD COLUMN ${c}`);
      }
    });
    this.info = {
      kind: 'sqlite',
      location: path,
      durability: { journal_mode: 'WAL', synchronous: sync, busy_timeout_ms: busy, transaction: 'BEGIN IMMEDIATE', group_commit: 'the writes asked for in one event-loop turn, or while another process holds the write lock, share one transaction; while the lock is contended a flush waits 1 ms for more' },
      maxDocumentBytes: this.#max,
    };
  }

  #st(sql: string): StatementSync {
    let s = this.#stmts.get(sql);
    if (!s) {
      s = this.#db.prepare(sql);
      this.#stmts.set(sql, s);
    }
    return s;
  }

  /**
   * Waits for another process's write lock in fine steps (50 µs growing to 2 ms) instead of
   * SQLite's own busy handler, whose first sleep is a whole millisecond: a write transaction
   * here takes tens of microseconds, so the coarse sleeps dominated latency under contention.
   */
  #busyRetry<T>(fn: () => T): T {
    let deadline = 0;
    let pause = 0.05;
    for (;;) {
      try {
        return fn();
      } catch (err) {
        if (!isBusy(err)) throw err;
        const now = Date.now();
        if (deadline === 0) deadline = now + this.#busyMs;
        else if (now > deadline) throw err;
        Atomics.wait(SLEEPER, 0, 0, pause);
        pause = Math.min(pause * 1.5, 2);
      }
    }
  }

  #all(sql: string, ...params: SQLInputValue[]): Row[] {
    return this.#busyRetry(() => this.#st(sql).all(...params) as Row[]);
  }

  #get(sql: string, ...params: SQLInputValue[]): Row | undefined {
    return this.#busyRetry(() => this.#st(sql).get(...params) as Row | undefined);
  }

  #run(sql: string, ...params: SQLInputValue[]): { changes: number; lastInsertRowid: number } {
    const r = this.#busyRetry(() => this.#st(sql).run(...params));
    return { changes: Number(r.changes), lastInsertRowid: Number(r.lastInsertRowid) };
  }

  /** One write transaction; waits for other processes up to the busy timeout. */
  #tx<T>(fn: () => T): T {
    if (this.#closed) throw new StateError('STATE_UNAVAILABLE', 'the state store is closed');
    try {
      this.#busyRetry(() => this.#db.exec('BEGIN IMMEDIATE'));
    } catch (err) {
      if (isBusy(err)) throw new StoreBusyError(`SQLite file ${this.info?.location ?? ''} is locked by another process`, err);
      if (isFull(err)) throw new StorageFullError(this.info?.location ?? 'sqlite', err);
      throw err;
    }
    try {
      const r = fn();
      this.#db.exec('COMMIT');
      return r;
    } catch (err) {
      try {
        this.#db.exec('ROLLBACK');
      } catch {
        // already rolled back
      }
      if (isBusy(err)) throw new StoreBusyError('SQLite write lock lost to another process', err);
      if (isFull(err)) throw new StorageFullError(this.info?.location ?? 'sqlite', err);
      throw err;
    }
  }

  /**
   * Group commit: write operations requested in the same turn of the event loop (or, while other
   * processes contend for the write lock, within {@link LINGER_MS}) run in ONE
   * `BEGIN IMMEDIATE` transaction (one lock acquisition, one fsync under `synchronous=FULL`), each
   * in its own savepoint, so one operation's failure (a version conflict) rolls back only its own
   * writes and rejects only its caller. Operations run in the order they were asked for; each
   * caller's promise settles after the COMMIT that made its writes durable.
   */
  #group<T>(fn: () => T): Promise<T> {
    if (this.#closed) return Promise.reject(new StateError('STATE_UNAVAILABLE', 'the state store is closed'));
    return new Promise<T>((resolve, reject) => {
      this.#queue.push({ fn, resolve: resolve as (v: unknown) => void, reject });
      if (!this.#flushScheduled) {
        this.#flushScheduled = true;
        if (Date.now() - this.#lastBusy < CONTENDED_MS) setTimeout(() => this.#flush(), LINGER_MS);
        else setImmediate(() => this.#flush());
      }
    });
  }

  #queue: { fn: () => unknown; resolve: (v: unknown) => void; reject: (err: unknown) => void }[] = [];
  #flushScheduled = false;
  /** operations and transactions of the group commit, for `info.durability` and benches */
  readonly groupCommit = { transactions: 0, operations: 0 };

  /** when this process started waiting for the write lock (0: not waiting), and how many tries so far */
  #lockWait = { since: 0, tries: 0 };
  /** when BEGIN IMMEDIATE last found another process holding the write lock */
  #lastBusy = 0;

  /**
   * Takes the write lock without blocking the event loop: while another process holds it, the
   * flush is tried again shortly (the first tries on the next turn, then every millisecond), and
   * whatever is asked for meanwhile joins the batch, so a contended process commits more per
   * transaction instead of sleeping. Gives up after the busy timeout.
   */
  #flush(): void {
    this.#flushScheduled = false;
    if (this.#queue.length === 0) return;
    if (this.#closed) {
      for (const op of this.#queue.splice(0)) op.reject(new StateError('STATE_UNAVAILABLE', 'the state store is closed'));
      return;
    }
    try {
      this.#db.exec('BEGIN IMMEDIATE');
    } catch (err) {
      const now = Date.now();
      if (isBusy(err)) this.#lastBusy = now;
      if (isBusy(err) && (this.#lockWait.since === 0 || now - this.#lockWait.since < this.#busyMs)) {
        if (this.#lockWait.since === 0) this.#lockWait.since = now;
        this.#flushScheduled = true;
        if (++this.#lockWait.tries <= SPIN_TRIES) setImmediate(() => this.#flush());
        else setTimeout(() => this.#flush(), 0);
        return;
      }
      this.#lockWait = { since: 0, tries: 0 };
      const e = isBusy(err) ? new StoreBusyError(`SQLite file ${this.info?.location ?? ''} is locked by another process`, err) : isFull(err) ? new StorageFullError(this.info?.location ?? 'sqlite', err) : err;
      for (const op of this.#queue.splice(0)) op.reject(e);
      return;
    }
    this.#lockWait = { since: 0, tries: 0 };
    const batch = this.#queue.splice(0);
    this.groupCommit.transactions++;
    this.groupCommit.operations += batch.length;
    const outcomes: Array<{ ok: true; value: unknown } | { ok: false; err: unknown }> = [];
    try {
      for (const op of batch) {
        this.#db.exec('SAVEPOINT keel_op');
        try {
          const value = op.fn();
          this.#db.exec('RELEASE keel_op');
          outcomes.push({ ok: true, value });
        } catch (err) {
          // a busy or full-disk error here means the transaction itself is in trouble: give up the whole batch
          if (isBusy(err) || isFull(err)) throw err;
          this.#db.exec('ROLLBACK TO keel_op');
          this.#db.exec('RELEASE keel_op');
          outcomes.push({ ok: false, err });
        }
      }
      this.#db.exec('COMMIT');
    } catch (err) {
      try {
        this.#db.exec('ROLLBACK');
      } catch {
        // already rolled back
      }
      const e = isBusy(err) ? new StoreBusyError('SQLite write lock lost to another process', err) : isFull(err) ? new StorageFullError(this.info?.location ?? 'sqlite', err) : err;
      for (const op of batch) op.reject(e);
      return;
    }
    batch.forEach((op, i) => {
      const o = outcomes[i]!;
      if (o.ok) op.resolve(o.value);
      else op.reject(o.err);
    });
  }

  // ---- entities ----------------------------------------------------------------------------

  #rowToEvent(r: Row): CommittedEvent {
    return {
      eventId: r.event_id as string,
      entityType: r.entity_type as string,
      entityId: r.entity_id as string,
      version: Number(r.version),
      type: r.type as string,
      data: JSON.parse(r.data as string),
      schemaVersion: Number(r.schema_version),
      meta: JSON.parse(r.meta as string) as EventMeta,
      time: r.time as string,
      cursor: Number(r.cursor),
    };
  }

  #rowToEntity<S>(r: Row): Entity<S> {
    return {
      entityType: r.entity_type as string,
      entityId: r.entity_id as string,
      version: Number(r.version),
      state: JSON.parse(r.state as string) as S,
      deleted: Number(r.deleted) === 1,
      createdAt: r.created_at as string,
      updatedAt: r.updated_at as string,
      schemaVersion: Number(r.schema_version),
    };
  }

  #snapshotOf(p: Row): EntitySnapshot {
    const e = this.#rowToEntity<Record<string, unknown>>(p);
    return { version: Number(p.version), state: e.state, deleted: e.deleted, createdAt: e.createdAt, updatedAt: e.updatedAt, schemaVersion: e.schemaVersion };
  }

  #snapshot(type: string, id: string, version: number): EntitySnapshot | null {
    if (version === 0) return null;
    const p = this.#get('SELECT * FROM entities WHERE entity_type = ? AND entity_id = ?', type, id);
    if (p && Number(p.version) === version) {
      const e = this.#rowToEntity<Record<string, unknown>>(p);
      return { version, state: e.state, deleted: e.deleted, createdAt: e.createdAt, updatedAt: e.updatedAt, schemaVersion: e.schemaVersion };
    }
    const events = this.#all('SELECT * FROM events WHERE entity_type = ? AND entity_id = ? ORDER BY version', type, id).map((r) => this.#rowToEvent(r));
    return replay(this.#reg.get(type), events);
  }

  #writeProjection(type: string, id: string, s: EntitySnapshot, searchText: string, stateJson = JSON.stringify(s.state)): void {
    this.#run(
      `INSERT INTO entities (entity_type, entity_id, version, state, deleted, created_at, updated_at, schema_version, search_text)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (entity_type, entity_id) DO UPDATE SET version = excluded.version, state = excluded.state, deleted = excluded.deleted,
         updated_at = excluded.updated_at, schema_version = excluded.schema_version, search_text = excluded.search_text`,
      type,
      id,
      s.version,
      stateJson,
      s.deleted ? 1 : 0,
      s.createdAt,
      s.updatedAt,
      s.schemaVersion,
      searchText,
    );
  }

  async append<S = Record<string, unknown>>(entityType: string, entityId: string, expectedVersion: number, events: EventInput[], meta: EventMeta, opts: AppendOptions = {}): Promise<AppendResult<S>> {
    const def = this.#reg.get(entityType);
    assertId('entity id', entityId);
    if (!Number.isInteger(expectedVersion) || expectedVersion < 0) throw new InvalidQueryError(`expected version must be an integer >= 0 (got ${String(expectedVersion)})`);
    // Plan outside the write lock when the projection is at the expected version (the usual
    // case): validation and serialization then do not hold up other processes' writes; the
    // transaction only re-checks the version and inserts.
    const basis = basisAt(opts.basis, entityType, entityId, expectedVersion);
    const p = basis ? undefined : this.#get('SELECT * FROM entities WHERE entity_type = ? AND entity_id = ?', entityType, entityId);
    let early: ReturnType<typeof planAppend> | undefined;
    if (basis || (p ? Number(p.version) : 0) === expectedVersion) {
      try {
        early = planAppend(def, entityId, basis ?? (p ? this.#snapshotOf(p) : null), events, meta, this.#max);
      } catch {
        early = undefined; // decided under the lock, where a version conflict takes precedence
      }
    }
    const done = opts.complete ? completion(opts.complete.result, opts.complete.cost) : undefined;
    const committed = await this.#group(() => {
      const actual = Number(this.#get('SELECT COALESCE(MAX(version), 0) AS v FROM events WHERE entity_type = ? AND entity_id = ?', entityType, entityId)!.v);
      if (actual !== expectedVersion) throw new VersionConflictError(entityType, entityId, expectedVersion, actual);
      const plan = early ?? planAppend(def, entityId, this.#snapshot(entityType, entityId, actual), events, meta, this.#max);
      const out: CommittedEvent[] = [];
      for (const [i, e] of plan.events.entries()) {
        const r = this.#run(
          'INSERT INTO events (event_id, entity_type, entity_id, version, type, schema_version, data, meta, time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
          e.eventId,
          e.entityType,
          e.entityId,
          e.version,
          e.type,
          e.schemaVersion,
          plan.json.data[i]!,
          plan.json.meta,
          e.time,
        );
        out.push({ ...e, cursor: r.lastInsertRowid });
      }
      this.#writeProjection(entityType, entityId, plan.snapshot, plan.searchText, plan.json.state);
      if (opts.complete && !this.#completeIn(opts.complete.key, opts.complete.token, done!, opts.complete)) {
        throw new IdempotencyLeaseLostError(opts.complete.key, 'the claim was taken over or completed meanwhile');
      }
      return { events: out, entity: toEntity<S>(entityType, entityId, plan.snapshot) };
    });
    for (const l of this.#listeners) l(committed.events);
    return committed;
  }

  async get<S = Record<string, unknown>>(entityType: string, entityId: string): Promise<Entity<S> | null> {
    this.#reg.get(entityType);
    assertId('entity id', entityId);
    const r = this.#get('SELECT * FROM entities WHERE entity_type = ? AND entity_id = ?', entityType, entityId);
    return r ? this.#rowToEntity<S>(r) : null;
  }

  async getAt<S = Record<string, unknown>>(entityType: string, entityId: string, version: number): Promise<Entity<S> | null> {
    const def = this.#reg.get(entityType);
    assertId('entity id', entityId);
    if (!Number.isInteger(version) || version < 1) throw new InvalidQueryError('version must be an integer >= 1');
    const events = this.#all('SELECT * FROM events WHERE entity_type = ? AND entity_id = ? AND version <= ? ORDER BY version', entityType, entityId, version).map((r) => this.#rowToEvent(r));
    // a compacted history starts at its `compacted` event: earlier versions are gone
    if (events.at(-1)?.version !== version) return null;
    const s = replay(def, events, version);
    return s ? toEntity<S>(entityType, entityId, s) : null;
  }

  async history(entityType: string, entityId: string): Promise<CommittedEvent[]> {
    this.#reg.get(entityType);
    assertId('entity id', entityId);
    return this.#all('SELECT * FROM events WHERE entity_type = ? AND entity_id = ? ORDER BY version', entityType, entityId).map((r) => this.#rowToEvent(r));
  }

  async typesOf(entityId: string): Promise<string[]> {
    assertId('entity id', entityId);
    return this.#all('SELECT entity_type FROM entities WHERE entity_id = ? ORDER BY entity_type', entityId).map((r) => r.entity_type as string);
  }

  async changes(q: ChangesQuery = {}): Promise<ChangesPage> {
    const since = clampInt(q.since, 0, 0, Number.MAX_SAFE_INTEGER, 'since');
    const limit = clampInt(q.limit, 100, 1, 10_000, 'limit');
    const types = q.types ?? [];
    for (const t of types) this.#reg.get(t);
    const where = types.length ? ` AND entity_type IN (${types.map(() => '?').join(', ')})` : '';
    const rows = this.#all(`SELECT * FROM events WHERE cursor > ?${where} ORDER BY cursor LIMIT ?`, since, ...types, limit + 1);
    const events = rows.slice(0, limit).map((r) => this.#rowToEvent(r));
    return { events, cursor: events.at(-1)?.cursor ?? since, hasMore: rows.length > limit };
  }

  async headCursor(): Promise<number> {
    return Number(this.#get('SELECT COALESCE(MAX(cursor), 0) AS c FROM events')!.c);
  }

  #condSql(c: NormalizedCondition, params: SQLInputValue[]): string {
    const col =
      c.meta === 'id' ? 'entity_id' : c.meta === 'version' ? 'version' : c.meta === 'createdAt' ? 'created_at' : c.meta === 'updatedAt' ? 'updated_at' : null;
    const expr = col ?? 'json_extract(state, ?)';
    const path = `$.${c.field}`;
    const p = (v: unknown): SQLInputValue => (typeof v === 'boolean' ? (v ? 1 : 0) : (v as SQLInputValue));
    const withPath = () => {
      if (!col) params.push(path);
    };
    switch (c.op) {
      case '$eq':
        withPath();
        if (c.value === null) return `${expr} IS NULL`;
        params.push(p(c.value));
        return `${expr} = ?`;
      case '$ne':
        withPath();
        if (c.value === null) return `${expr} IS NOT NULL`;
        params.push(p(c.value));
        withPath();
        return `(${expr} != ? OR ${expr} IS NULL)`;
      case '$gt':
      case '$gte':
      case '$lt':
      case '$lte': {
        withPath();
        params.push(p(c.value));
        const op = { $gt: '>', $gte: '>=', $lt: '<', $lte: '<=' }[c.op];
        // compare like MongoDB: numbers with numbers, strings with strings
        withPath();
        return `(${expr} ${op} ? AND typeof(${expr}) ${typeof c.value === 'number' ? "IN ('integer', 'real')" : "= 'text'"})`;
      }
      case '$in': {
        const vals = c.value as unknown[];
        withPath();
        params.push(...vals.map(p));
        return `${expr} IN (${vals.map(() => '?').join(', ')})`;
      }
      case '$contains':
        if (col) throw new InvalidQueryError(`$contains applies to array fields, not '${c.field}'`);
        params.push(path, p(c.value));
        return `EXISTS (SELECT 1 FROM json_each(state, ?) WHERE value = ?)`;
      case '$exists':
        if (col) return c.value ? '1' : '0';
        params.push(path);
        return `json_type(state, ?) IS ${c.value ? 'NOT NULL' : 'NULL'}`;
    }
  }

  async query<S = Record<string, unknown>>(entityType: string, q: EntityQuery = {}): Promise<QueryPage<S>> {
    this.#reg.get(entityType);
    const nq = normalizeQuery(q);
    const params: SQLInputValue[] = [entityType];
    const where = ['entity_type = ?'];
    if (!nq.includeDeleted) where.push('deleted = 0');
    for (const c of nq.conditions) where.push(this.#condSql(c, params));
    const order: string[] = [];
    const orderParams: SQLInputValue[] = [];
    for (const s of nq.sort) {
      const col = s.meta === 'id' ? 'entity_id' : s.meta === 'version' ? 'version' : s.meta === 'createdAt' ? 'created_at' : s.meta === 'updatedAt' ? 'updated_at' : null;
      if (col) order.push(`${col} ${s.dir === 1 ? 'ASC' : 'DESC'}`);
      else {
        order.push(`json_extract(state, ?) ${s.dir === 1 ? 'ASC' : 'DESC'}`);
        orderParams.push(`$.${s.field}`);
      }
    }
    const w = where.join(' AND ');
    const total = Number(this.#get(`SELECT COUNT(*) AS n FROM entities WHERE ${w}`, ...params)!.n);
    const rows = this.#all(`SELECT * FROM entities WHERE ${w} ORDER BY ${order.join(', ')} LIMIT ? OFFSET ?`, ...params, ...orderParams, nq.limit, nq.offset);
    const next = nq.offset + rows.length;
    return { items: rows.map((r) => this.#rowToEntity<S>(r)), total, nextOffset: next < total ? next : null };
  }

  async search(text: string, opts: SearchOptions = {}): Promise<Entity[]> {
    const terms = searchTerms(text);
    const limit = clampInt(opts.limit, 20, 1, 1000, 'limit');
    const types = opts.types ?? [];
    for (const t of types) this.#reg.get(t);
    const where = terms.map(() => "instr(search_text, ?) > 0");
    const params: SQLInputValue[] = [...terms];
    if (types.length) {
      where.push(`entity_type IN (${types.map(() => '?').join(', ')})`);
      params.push(...types);
    }
    if (!opts.includeDeleted) where.push('deleted = 0');
    const rows = this.#all(`SELECT * FROM entities WHERE ${where.join(' AND ')} ORDER BY updated_at DESC, entity_type, entity_id LIMIT ?`, ...params, limit);
    return rows.map((r) => this.#rowToEntity(r));
  }

  async rebuildProjections(): Promise<number> {
    return this.#tx(() => {
      const known = this.#reg.names();
      const inKnown = `entity_type IN (${known.map(() => '?').join(', ')})`;
      this.#run(`DELETE FROM entities WHERE ${inKnown}`, ...known);
      let n = 0;
      let batch: CommittedEvent[] = [];
      const flush = () => {
        const first = batch[0];
        if (!first) return;
        const def = this.#reg.get(first.entityType);
        const s = replay(def, batch);
        if (s) {
          this.#writeProjection(first.entityType, first.entityId, s, searchTextOf(def, s.state));
          n++;
        }
        batch = [];
      };
      for (const r of this.#st(`SELECT * FROM events WHERE ${inKnown} ORDER BY entity_type, entity_id, version`).iterate(...known)) {
        const e = this.#rowToEvent(r as Row);
        const head = batch[0];
        if (head && (head.entityType !== e.entityType || head.entityId !== e.entityId)) flush();
        batch.push(e);
      }
      flush();
      return n;
    });
  }

  // ---- outbox ------------------------------------------------------------------------------

  onCommit(listener: (events: CommittedEvent[]) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  async pendingEvents(limit = 500): Promise<CommittedEvent[]> {
    return this.#all('SELECT * FROM events WHERE published = 0 ORDER BY cursor LIMIT ?', clampInt(limit, 500, 1, 10_000, 'limit')).map((r) => this.#rowToEvent(r));
  }

  async markPublished(eventIds: string[]): Promise<void> {
    if (eventIds.length === 0) return;
    await this.#group(() => {
      for (const id of eventIds) this.#run('UPDATE events SET published = 1 WHERE event_id = ?', id);
    });
  }

  // ---- idempotency -------------------------------------------------------------------------

  async claim(key: string, opts: { leaseMs?: number } = {}): Promise<ClaimResult> {
    if (typeof key !== 'string' || !key || key.length > 500) throw new InvalidQueryError('idempotency key must be a non-empty string of at most 500 characters');
    const leaseMs = clampInt(opts.leaseMs, DEFAULT_LEASE_MS, 1, 7 * 86_400_000, 'leaseMs');
    return this.#group((): ClaimResult => {
      const now = Date.now();
      const r = this.#get('SELECT * FROM idempotency WHERE key = ?', key);
      const token = newId();
      const leaseUntil = now + leaseMs;
      if (!r) {
        this.#run("INSERT INTO idempotency (key, status, token, attempt, lease_until, created_at) VALUES (?, 'running', ?, 1, ?, ?)", key, token, leaseUntil, nowIso());
        return { status: 'claimed', key, token, attempt: 1, leaseUntil: new Date(leaseUntil).toISOString() };
      }
      if (r.status === 'completed') return { status: 'completed', key, result: r.result === null ? null : JSON.parse(r.result as string), completedAt: r.completed_at as string };
      const attempt = Number(r.attempt);
      if (Number(r.lease_until) > now) return { status: 'running', key, attempt, leaseUntil: new Date(Number(r.lease_until)).toISOString() };
      this.#run('UPDATE idempotency SET token = ?, attempt = ?, lease_until = ? WHERE key = ?', token, attempt + 1, leaseUntil, key);
      return { status: 'claimed', key, token, attempt: attempt + 1, leaseUntil: new Date(leaseUntil).toISOString() };
    });
  }

  async complete(key: string, token: string, result: unknown = null, opts: CompleteOptions = {}): Promise<void> {
    const c = completion(result, opts.cost);
    const done = await this.#group(() => this.#completeIn(key, token, c, opts));
    if (!done) throw new IdempotencyLeaseLostError(key, await this.#leaseLostReason(key));
  }

  /**
   * Inside a write transaction: completes a claim (and records its cost); false if the claim is
   * not ours. Unclaimed: records the key completed unless it already is (one statement).
   */
  #completeIn(key: string, token: string, c: Completion, o: Pick<CompleteOptions, 'unclaimed' | 'attempt'> = {}): boolean {
    const at = nowIso();
    const r = o.unclaimed
      ? this.#run(
          `INSERT INTO idempotency (key, status, token, attempt, lease_until, result, created_at, completed_at) VALUES (?, 'completed', NULL, ?, NULL, ?, ?, ?)
           ON CONFLICT(key) DO UPDATE SET status = 'completed', result = excluded.result, completed_at = excluded.completed_at, token = NULL, lease_until = NULL WHERE status = 'running'`,
          key,
          Math.max(1, Math.trunc(o.attempt ?? 1)),
          c.result,
          at,
          at,
        )
      : this.#run(
      "UPDATE idempotency SET status = 'completed', result = ?, completed_at = ?, token = NULL, lease_until = NULL WHERE key = ? AND status = 'running' AND token = ?",
      c.result,
      at,
      key,
      token,
    );
    if (r.changes === 0) return false;
    if (c.cost) this.#insertCost(c.cost);
    return true;
  }

  async release(key: string, token: string): Promise<void> {
    const r = this.#run("DELETE FROM idempotency WHERE key = ? AND status = 'running' AND token = ?", key, token);
    if (r.changes === 0) throw new IdempotencyLeaseLostError(key, await this.#leaseLostReason(key));
  }

  async #leaseLostReason(key: string): Promise<string> {
    const rec = await this.getIdempotency(key);
    if (!rec) return 'no claim exists (released or never claimed)';
    if (rec.status === 'completed') return 'already completed by another claim';
    return `the lease expired and attempt ${rec.attempt} took it over`;
  }

  async getIdempotency(key: string): Promise<IdempotencyRecord | null> {
    const r = this.#get('SELECT * FROM idempotency WHERE key = ?', key);
    if (!r) return null;
    return {
      key,
      status: r.status as 'running' | 'completed',
      attempt: Number(r.attempt),
      leaseUntil: r.lease_until === null ? null : new Date(Number(r.lease_until)).toISOString(),
      result: r.result === null ? null : JSON.parse(r.result as string),
      createdAt: r.created_at as string,
      completedAt: (r.completed_at as string | null) ?? null,
    };
  }

  // ---- costs -------------------------------------------------------------------------------

  async recordCost(input: CostInput): Promise<CostRecord> {
    const c = toCostRecord(input);
    this.#insertCost(c);
    return c;
  }

  #insertCost(c: CostRecord): void {
    this.#run(
      `INSERT INTO costs (id, time, agent, capability, run_id, customer_id, entity_type, entity_id, model, tokens_in, tokens_out, tokens_cached, cost_usd, compute_ms, trace_id, details)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      c.id,
      c.time,
      c.agent,
      c.capability,
      c.runId,
      c.customerId,
      c.entityType,
      c.entityId,
      c.model,
      c.tokensIn,
      c.tokensOut,
      c.tokensCached,
      c.costUsd,
      c.computeMs,
      c.traceId,
      c.details ? JSON.stringify(c.details) : null,
    );
  }

  async costs(q: CostQuery = {}): Promise<CostReport> {
    const where: string[] = [];
    const params: SQLInputValue[] = [];
    if (q.since) {
      where.push('time >= ?');
      params.push(new Date(q.since).toISOString());
    }
    if (q.until) {
      where.push('time < ?');
      params.push(new Date(q.until).toISOString());
    }
    for (const [k, col] of Object.entries(COST_COLUMNS)) {
      const v = q[k as keyof CostQuery];
      if (typeof v === 'string') {
        where.push(`${col} = ?`);
        params.push(v);
      }
    }
    const by = q.by ?? [];
    for (const d of by) if (!COST_DIMENSIONS.includes(d)) throw new InvalidQueryError(`cannot group costs by '${d}'`);
    const rows = this.#st(`SELECT * FROM costs${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY time DESC, id`).iterate(...params);
    const recs = (function* () {
      for (const r of rows as Iterable<Row>) {
        yield {
          id: r.id as string,
          time: r.time as string,
          agent: r.agent as string | null,
          capability: r.capability as string | null,
          runId: r.run_id as string | null,
          customerId: r.customer_id as string | null,
          entityType: r.entity_type as string | null,
          entityId: r.entity_id as string | null,
          model: r.model as string | null,
          tokensIn: Number(r.tokens_in),
          tokensOut: Number(r.tokens_out),
          tokensCached: Number(r.tokens_cached),
          costUsd: Number(r.cost_usd),
          computeMs: Number(r.compute_ms),
          traceId: r.trace_id as string | null,
          details: r.details === null ? null : (JSON.parse(r.details as string) as Record<string, unknown>),
        } satisfies CostRecord;
      }
    })();
    return summarizeCosts(recs, by, q.records ?? 0);
  }

  // ---- approvals ---------------------------------------------------------------------------

  #rowToApproval(r: Row): Approval {
    return {
      id: r.id as string,
      state: r.state as ApprovalState,
      action: r.action as string,
      subject: r.subject as string,
      payload: JSON.parse(r.payload as string),
      requestedBy: JSON.parse(r.requested_by as string) as Approval['requestedBy'],
      createdAt: r.created_at as string,
      deadline: r.deadline as string,
      correlationId: (r.correlation_id as string | null) ?? null,
      decidedAt: (r.decided_at as string | null) ?? null,
      decidedBy: r.decided_by ? (JSON.parse(r.decided_by as string) as Approval['decidedBy']) : null,
      reason: (r.reason as string | null) ?? null,
      text: (r.text as string | null) ?? null,
    };
  }

  async createApproval(input: ApprovalInput): Promise<Approval> {
    const a = checkApprovalInput(input);
    const id = a.id ?? newId();
    const deadline = new Date(a.deadline);
    try {
      this.#run(
        "INSERT INTO approvals (id, state, action, subject, payload, requested_by, created_at, deadline, deadline_ms, correlation_id) VALUES (?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?)",
        id,
        a.action,
        a.subject,
        JSON.stringify(a.payload ?? null),
        JSON.stringify(a.requestedBy),
        nowIso(),
        deadline.toISOString(),
        deadline.getTime(),
        a.correlationId ?? null,
      );
    } catch (err) {
      if (/UNIQUE constraint/i.test((err as Error).message)) throw new InvalidQueryError(`approval '${id}' already exists`);
      throw err;
    }
    return (await this.getApproval(id))!;
  }

  async decideApproval(id: string, d: ApprovalDecision): Promise<Approval> {
    const dec = checkDecision(d);
    const now = Date.now();
    const r = this.#run(
      "UPDATE approvals SET state = ?, decided_at = ?, decided_by = ?, reason = ?, text = ? WHERE id = ? AND state = 'pending' AND deadline_ms > ?",
      dec.decision,
      new Date(now).toISOString(),
      JSON.stringify(dec.by),
      dec.reason ?? null,
      dec.text ?? null,
      id,
      now,
    );
    if (r.changes === 1) return (await this.getApproval(id))!;
    await this.expireApprovals(new Date(now));
    const cur = this.#get('SELECT * FROM approvals WHERE id = ?', id);
    if (!cur) throw new NotFoundError('approval', id);
    const a = this.#rowToApproval(cur);
    if (a.state === 'expired') throw new ApprovalExpiredError(id, a.deadline);
    throw new ApprovalNotPendingError(id, a.state);
  }

  async getApproval(id: string): Promise<Approval | null> {
    await this.expireApprovals();
    const r = this.#get('SELECT * FROM approvals WHERE id = ?', id);
    return r ? this.#rowToApproval(r) : null;
  }

  async listApprovals(q: { state?: ApprovalState; limit?: number } = {}): Promise<Approval[]> {
    await this.expireApprovals();
    const limit = clampInt(q.limit, 100, 1, 10_000, 'limit');
    const rows = q.state
      ? this.#all('SELECT * FROM approvals WHERE state = ? ORDER BY created_at DESC, id LIMIT ?', q.state, limit)
      : this.#all('SELECT * FROM approvals ORDER BY created_at DESC, id LIMIT ?', limit);
    return rows.map((r) => this.#rowToApproval(r));
  }

  async expireApprovals(now = new Date()): Promise<number> {
    return this.#run("UPDATE approvals SET state = 'expired', decided_at = ? WHERE state = 'pending' AND deadline_ms <= ?", now.toISOString(), now.getTime()).changes;
  }

  // ---- audit -------------------------------------------------------------------------------

  #rowToAudit(r: Row): AuditRecord {
    const rec: AuditRecord = {
      seq: Number(r.seq),
      time: r.time as string,
      actor: JSON.parse(r.actor as string) as AuditRecord['actor'],
      action: r.action as string,
      subject: r.subject as string,
      details: JSON.parse(r.details as string) as Record<string, unknown>,
      prevHash: r.prev_hash as string,
      hash: r.hash as string,
    };
    if (Number(r.v) === 2) {
      rec.v = 2;
      rec.detailsDigest = r.details_digest as string;
      if (r.details_salt) rec.detailsSalt = r.details_salt as string;
      if (r.details_leaves) rec.detailsLeaves = JSON.parse(r.details_leaves as string) as string[];
      if (r.details_salts) rec.detailsSalts = JSON.parse(r.details_salts as string) as Record<string, string>;
    }
    if (r.erased) rec.erased = JSON.parse(r.erased as string) as AuditRecord['erased'];
    return rec;
  }

  async appendAudit(input: AuditInput): Promise<AuditRecord> {
    checkAuditInput(input);
    return this.#tx(() => {
      const last = this.#get('SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1');
      const rec = buildAuditRecord(input, last ? Number(last.seq) + 1 : 1, last ? (last.hash as string) : GENESIS_HASH);
      this.#run(
        'INSERT INTO audit (seq, time, actor, action, subject, details, prev_hash, hash, v, details_digest, details_leaves, details_salts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 2, ?, ?, ?)',
        rec.seq,
        rec.time,
        JSON.stringify(rec.actor),
        rec.action,
        rec.subject,
        JSON.stringify(rec.details),
        rec.prevHash,
        rec.hash,
        rec.detailsDigest!,
        JSON.stringify(rec.detailsLeaves),
        JSON.stringify(rec.detailsSalts),
      );
      return rec;
    });
  }

  async exportAudit(opts: { sinceSeq?: number; limit?: number } = {}): Promise<AuditRecord[]> {
    const since = clampInt(opts.sinceSeq, 0, 0, Number.MAX_SAFE_INTEGER, 'sinceSeq');
    const limit = clampInt(opts.limit, Number.MAX_SAFE_INTEGER, 1, Number.MAX_SAFE_INTEGER, 'limit');
    return this.#all('SELECT * FROM audit WHERE seq > ? ORDER BY seq LIMIT ?', since, limit).map((r) => this.#rowToAudit(r));
  }

  async verifyAudit(): Promise<AuditVerification> {
    const rows = this.#st('SELECT * FROM audit ORDER BY seq').iterate() as Iterable<Row>;
    const toAudit = (r: Row) => this.#rowToAudit(r);
    return verifyChain(
      (function* () {
        for (const r of rows) yield toAudit(r);
      })(),
    );
  }

  // ---- erasure -----------------------------------------------------------------------------

  /**
   * A write transaction with `secure_delete` on: SQLite overwrites the content it frees (old row
   * versions, freed pages) with zeros, so erased values do not linger in free space.
   */
  #secureTx<T>(fn: () => T): T {
    const before = Number((this.#db.prepare('PRAGMA secure_delete').get() as { secure_delete: number }).secure_delete);
    this.#db.exec('PRAGMA secure_delete = ON');
    try {
      return this.#tx(fn);
    } finally {
      this.#db.exec(`PRAGMA secure_delete = ${before === 1 ? 'ON' : before === 2 ? 'FAST' : 'OFF'}`);
    }
  }

  /** Inside a transaction: scrubs one entity's stored events and projection; returns the events changed. */
  #scrubEntityIn(type: string, id: string, sc: Scrubber): { events: CommittedEvent[]; changed: number; stateChanged: boolean } {
    const events = this.#all('SELECT * FROM events WHERE entity_type = ? AND entity_id = ? ORDER BY version', type, id).map((r) => this.#rowToEvent(r));
    let changed = 0;
    for (const e of events) {
      if (e.type === ERASED_EVENT) continue;
      const r = scrub(e.data, sc);
      if (!r.changed) continue;
      e.data = r.value;
      this.#run('UPDATE events SET data = ? WHERE cursor = ?', JSON.stringify(r.value), e.cursor);
      changed++;
    }
    let stateChanged = false;
    const p = this.#get('SELECT * FROM entities WHERE entity_type = ? AND entity_id = ?', type, id);
    if (p) {
      const st = scrub(JSON.parse(p.state as string), sc);
      const text = this.#reg.has(type) ? null : String(p.search_text);
      if (st.changed) {
        stateChanged = true;
        const def = this.#reg.has(type) ? this.#reg.get(type) : null;
        const search = def ? searchTextOf(def, st.value as Record<string, unknown>) : scrubText(text ?? '', sc);
        this.#run('UPDATE entities SET state = ?, search_text = ? WHERE entity_type = ? AND entity_id = ?', JSON.stringify(st.value), search, type, id);
      }
    }
    return { events, changed, stateChanged };
  }

  async redactEntity(entityType: string, entityId: string, opts: RedactEntityOptions): Promise<RedactEntityResult> {
    const def = this.#reg.get(entityType);
    assertId('entity id', entityId);
    const actor = checkActor('erasure', opts.actor);
    const sc = makeScrubber(opts.fields, opts.values);
    if (!sc.fields && !sc.match) throw new InvalidQueryError('redactEntity needs fields or values to erase');
    const out = this.#secureTx(() => {
      const { events, changed } = this.#scrubEntityIn(entityType, entityId, sc);
      if (events.length === 0) return { result: { entityType, entityId, events: 0, version: 0 }, committed: [] as CommittedEvent[] };
      const snap = replay(def, events)!;
      // a state derived by the type's reducer may still hold a field: scrub it too
      snap.state = scrub(snap.state, sc).value as Record<string, unknown>;
      const data = { reason: opts.reason, fields: opts.fields === 'all' ? 'all' : (opts.fields ?? []), values: opts.values?.length ?? 0, events: changed, ...(opts.delete ? { deleted: true } : {}) };
      const plan = planErasedEvent(def, entityId, snap, data, { actor });
      const r = this.#run(
        'INSERT INTO events (event_id, entity_type, entity_id, version, type, schema_version, data, meta, time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
        plan.event.eventId,
        entityType,
        entityId,
        plan.event.version,
        plan.event.type,
        plan.event.schemaVersion,
        JSON.stringify(plan.event.data),
        JSON.stringify(plan.event.meta),
        plan.event.time,
      );
      this.#writeProjection(entityType, entityId, plan.snapshot, plan.searchText);
      return { result: { entityType, entityId, events: changed, version: plan.event.version }, committed: [{ ...plan.event, cursor: r.lastInsertRowid }] };
    });
    if (out.committed.length) for (const l of this.#listeners) l(out.committed);
    return out.result;
  }

  async redactRecords(opts: RedactRecordsOptions): Promise<RedactCounts> {
    checkActor('erasure', opts.actor);
    const sc = makeScrubber(undefined, opts.values);
    const all = makeScrubber('all', undefined);
    const counts: RedactCounts = { entities: 0, events: 0, audit: 0, auditUnerasable: 0, approvals: 0, idempotency: 0, costs: 0 };
    // keel_lower: JavaScript's toLowerCase (SQLite's lower() folds ASCII only); the needles include their JSON-escaped forms
    const like = (col: string) => (sc.jsonNeedles.length ? `(${sc.jsonNeedles.map(() => `instr(keel_lower(${col}), ?) > 0`).join(' OR ')})` : '0');
    const types = opts.entityTypes ? new Set(opts.entityTypes) : null;
    const erasedAt = JSON.stringify({ time: nowIso(), reason: opts.reason });
    this.#secureTx(() => {
      // entities whose events or current state hold a value
      const found = new Map<string, [string, string]>();
      for (const r of this.#all(`SELECT DISTINCT entity_type, entity_id FROM events WHERE ${like('data')}`, ...sc.jsonNeedles)) found.set(`${String(r.entity_type)}/${String(r.entity_id)}`, [r.entity_type as string, r.entity_id as string]);
      for (const r of this.#all(`SELECT entity_type, entity_id FROM entities WHERE ${like('state')}`, ...sc.jsonNeedles)) found.set(`${String(r.entity_type)}/${String(r.entity_id)}`, [r.entity_type as string, r.entity_id as string]);
      for (const [type, id] of found.values()) {
        if (types && !types.has(type)) continue;
        const r = this.#scrubEntityIn(type, id, sc);
        if (r.changed || r.stateChanged) counts.entities++;
        counts.events += r.changed;
      }
      // audit details: v2 records with leaf digests are rewritten (their digests stay in the chain), older ones cannot be
      for (const row of this.#all(`SELECT * FROM audit WHERE ${like('details')}`, ...sc.jsonNeedles)) {
        const rec = this.#rowToAudit(row);
        const r = eraseAuditDetails(rec, sc);
        if (r === 'unerasable') counts.auditUnerasable++;
        if (!r || r === 'unerasable') continue;
        this.#run('UPDATE audit SET details = ?, details_salts = ?, erased = ? WHERE seq = ?', JSON.stringify(r.details), JSON.stringify(r.detailsSalts), erasedAt, rec.seq);
        counts.audit++;
      }
      const runs = new Set(opts.correlationIds ?? []);
      for (const row of this.#all(`SELECT id, payload, text, reason, correlation_id FROM approvals WHERE ${like('payload')} OR ${like('coalesce(text, \'\')')} OR ${like('coalesce(reason, \'\')')}${runs.size ? ` OR correlation_id IN (${[...runs].map(() => '?').join(', ')})` : ''}`, ...sc.jsonNeedles, ...sc.jsonNeedles, ...sc.jsonNeedles, ...runs)) {
        const s = runs.has(row.correlation_id as string) ? all : sc;
        const payload = scrub(JSON.parse(row.payload as string), s);
        const text = scrub(row.text ?? null, s);
        const reason = scrub(row.reason ?? null, s);
        if (!payload.changed && !text.changed && !reason.changed) continue;
        this.#run('UPDATE approvals SET payload = ?, text = ?, reason = ? WHERE id = ?', JSON.stringify(payload.value), text.value as string | null, reason.value as string | null, row.id as string);
        counts.approvals++;
      }
      const keys = opts.keysContaining?.filter(Boolean) ?? [];
      const byKey = keys.length ? ` OR ${keys.map(() => 'instr(key, ?) > 0').join(' OR ')}` : '';
      for (const row of this.#all(`SELECT key, result FROM idempotency WHERE result IS NOT NULL AND (${like('result')}${byKey})`, ...sc.jsonNeedles, ...keys)) {
        const r = scrub(JSON.parse(row.result as string), keys.some((k) => (row.key as string).includes(k)) ? all : sc);
        if (!r.changed) continue;
        this.#run('UPDATE idempotency SET result = ? WHERE key = ?', JSON.stringify(r.value), row.key as string);
        counts.idempotency++;
      }
      // the ledger keeps the amounts; the customer's records lose every string of their details
      const costRows = [
        ...(opts.customerId ? this.#all('SELECT id, details FROM costs WHERE customer_id = ? AND details IS NOT NULL', opts.customerId).map((r) => ({ r, sc: all })) : []),
        ...this.#all(`SELECT id, details FROM costs WHERE details IS NOT NULL AND ${like('details')}`, ...sc.jsonNeedles).map((r) => ({ r, sc })),
      ];
      const done = new Set<string>();
      for (const { r: row, sc: s } of costRows) {
        if (done.has(row.id as string)) continue;
        const r = scrub(JSON.parse(row.details as string), s);
        if (!r.changed) continue;
        done.add(row.id as string);
        this.#run('UPDATE costs SET details = ? WHERE id = ?', JSON.stringify(r.value), row.id as string);
        counts.costs++;
      }
    });
    return counts;
  }

  async compact(opts: { vacuum?: boolean } = {}): Promise<CompactResult> {
    if (this.#closed) throw new StateError('STATE_UNAVAILABLE', 'the state store is closed');
    let vacuumed = false;
    if (opts.vacuum !== false) {
      // rebuilds the file: no free page or freed cell keeps an old row version
      this.#busyRetry(() => this.#db.exec('VACUUM'));
      vacuumed = true;
    }
    // the WAL still holds the pages as they were before: copy them back and empty it
    let walTruncated = false;
    for (let i = 0; i < 20 && !walTruncated; i++) {
      const r = this.#db.prepare('PRAGMA wal_checkpoint(TRUNCATE)').get() as { busy: number; log: number; checkpointed: number };
      walTruncated = Number(r.busy) === 0;
      if (!walTruncated) await new Promise((res) => setTimeout(res, 50));
    }
    const page = this.#db.prepare('PRAGMA page_count').get() as { page_count: number };
    const size = this.#db.prepare('PRAGMA page_size').get() as { page_size: number };
    return { walTruncated, vacuumed, bytes: Number(page.page_count) * Number(size.page_size) };
  }

  // ---- retention ---------------------------------------------------------------------------

  async compactHistory(entityType: string, entityId: string, opts: CompactHistoryOptions): Promise<CompactHistoryResult> {
    const def = this.#reg.get(entityType);
    assertId('entity id', entityId);
    const actor = checkActor('compaction', opts.actor);
    return this.#group((): CompactHistoryResult => {
      const rows = this.#all('SELECT cursor, version, type, published FROM events WHERE entity_type = ? AND entity_id = ? ORDER BY version', entityType, entityId);
      const last = rows.at(-1);
      const actual = last ? Number(last.version) : 0;
      if (opts.expectedVersion !== undefined && actual !== opts.expectedVersion) throw new VersionConflictError(entityType, entityId, opts.expectedVersion, actual);
      const base = { entityType, entityId, events: 0, version: actual };
      if (!last) return { ...base, skipped: 'missing' };
      if (rows.length === 1 && last.type === COMPACTED_EVENT) return { ...base, skipped: 'compacted' };
      if (rows.some((r) => Number(r.published) === 0)) return { ...base, skipped: 'unpublished' };
      const cur = this.#snapshot(entityType, entityId, actual)!;
      const plan = planCompactedEvent(def, entityId, cur, { events: rows.length, firstCursor: Number(rows[0]!.cursor), lastCursor: Number(last.cursor) }, opts.reason, { actor });
      this.#run('DELETE FROM events WHERE entity_type = ? AND entity_id = ?', entityType, entityId);
      this.#run(
        'INSERT INTO events (event_id, entity_type, entity_id, version, type, schema_version, data, meta, time, published) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1)',
        plan.event.eventId,
        entityType,
        entityId,
        plan.event.version,
        plan.event.type,
        plan.event.schemaVersion,
        JSON.stringify(plan.event.data),
        JSON.stringify(plan.event.meta),
        plan.event.time,
      );
      this.#writeProjection(entityType, entityId, plan.snapshot, plan.searchText);
      return { ...base, events: rows.length, version: plan.event.version };
    });
  }

  async pruneIdempotency(before: Date, opts: { limit?: number } = {}): Promise<PruneIdempotencyResult> {
    const limit = clampInt(opts.limit, 5000, 1, 100_000, 'limit');
    const iso = before.toISOString();
    return this.#group(() => {
      const completed = this.#run("DELETE FROM idempotency WHERE rowid IN (SELECT rowid FROM idempotency WHERE status = 'completed' AND completed_at < ? LIMIT ?)", iso, limit).changes;
      const abandoned = this.#run("DELETE FROM idempotency WHERE rowid IN (SELECT rowid FROM idempotency WHERE status = 'running' AND lease_until < ? LIMIT ?)", before.getTime(), Math.max(0, limit - completed)).changes;
      return { completed, abandoned };
    });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#listeners.clear();
    this.#db.close();
  }
}

/** Lower-cased search text with the scrubber's values replaced (for entity types this store does not know). */
function scrubText(text: string, sc: Scrubber): string {
  let t = text;
  for (const n of sc.needles) t = t.split(n).join('[erased]');
  return t;
}
