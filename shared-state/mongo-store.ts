/**
 * The MongoDB adapter (official driver). No multi-document transactions, no change streams, and
 * no reliance on conditional updates being atomic: FerretDB 1.x runs `findOneAndUpdate`,
 * `$inc` and filtered `updateOne` as read-then-write, so concurrent callers all "win". The one
 * arbiter used for correctness is a unique index: an insert either lands or fails with 11000.
 *
 * - An append is ONE insert of a "commit" document holding all its events (atomic). Unique
 *   indexes on (entityKey, firstVersion) and on firstCursor: of two appends at the same expected
 *   version exactly one lands, the other gets {@link VersionConflictError}.
 * - The change-log cursor is dense: a writer takes max(lastCursor)+1 and the unique index on
 *   firstCursor refuses a second taker, who re-reads and tries again. A writer can only take N+1
 *   after it has seen N committed, so cursor order is commit order for readers.
 * - The projection (current state) is written after the commit, conditional on version, and
 *   checked against the log afterwards (repaired if a late writer overwrote it); `get` also
 *   checks it against the log, and `rebuildProjections` recomputes everything.
 * - Idempotency completions, lease take-overs, approval decisions and audit records are inserts
 *   with unique ids, so exactly one of several racing callers succeeds.
 *
 * Internal: use `openStore`.
 */
import { MongoClient, MongoServerError, type Collection, type Db, type Document, type Filter, type WriteConcernSettings } from 'mongodb';
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
  mayContain,
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
  InvalidQueryError,
  NotFoundError,
  StateError,
  StoreBusyError,
  StoreUnavailableError,
  StorageFullError,
  VersionConflictError,
} from './errors.ts';
import { redactMongoUrl } from './health.ts';
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

export interface MongoStoreOptions {
  registry: EntityTypeRegistry;
  maxDocumentBytes: number;
  /** database name; default the URL's path, else `keel` */
  database?: string;
  /** default `{ w: 'majority', journal: true }` */
  writeConcern?: WriteConcernSettings;
  serverSelectionTimeoutMS?: number;
}

interface StoredEvent {
  eventId: string;
  version: number;
  cursor: number;
  type: string;
  data: unknown;
  schemaVersion: number;
}

interface CommitDoc {
  _id: string;
  entityKey: string;
  entityType: string;
  entityId: string;
  firstVersion: number;
  lastVersion: number;
  firstCursor: number;
  lastCursor: number;
  time: string;
  meta: EventMeta | null;
  events: StoredEvent[];
  published: boolean;
}

interface EntityDoc {
  _id: string;
  entityType: string;
  entityId: string;
  version: number;
  state: Record<string, unknown>;
  deleted: boolean;
  createdAt: string;
  updatedAt: string;
  schemaVersion: number;
  searchText: string;
}

interface IdemDoc {
  _id: string;
  /** distinguishes a re-claim after `release` from the claims before it */
  gen: string;
  token: string;
  attempt: number;
  leaseUntil: number;
  createdAt: string;
}

interface IdemDoneDoc {
  _id: string;
  attempt: number;
  resultJson: string;
  createdAt: string;
  completedAt: string;
}

interface DecisionDoc {
  _id: string;
  state: 'approved' | 'rejected' | 'expired' | 'superseded';
  decidedAt: string;
  decidedBy: Approval['decidedBy'];
  reason: string | null;
  /** absent in decisions recorded before edited texts were kept */
  text?: string | null;
}

interface ApprovalDoc {
  _id: string;
  state: ApprovalState;
  action: string;
  subject: string;
  payloadJson: string;
  requestedBy: Approval['requestedBy'];
  createdAt: string;
  deadline: string;
  deadlineMs: number;
  correlationId: string | null;
  decidedAt: string | null;
  decidedBy: Approval['decidedBy'];
  reason: string | null;
  text?: string | null;
}

interface AuditDoc {
  _id: number;
  time: string;
  actor: AuditRecord['actor'];
  action: string;
  subject: string;
  detailsJson: string;
  prevHash: string;
  hash: string;
  v?: 2;
  detailsDigest?: string;
  detailsSalt?: string;
  /** the leaves' digests (v2 with leaf digests) */
  detailsLeaves?: string[];
  /** JSON of path -> salt (paths hold dots, which MongoDB field names should not) */
  detailsSaltsJson?: string;
  erased?: { time: string; reason: string };
}

type CostDoc = Omit<CostRecord, 'id' | 'details'> & { _id: string; detailsJson: string | null };

function isDup(err: unknown): boolean {
  return err instanceof MongoServerError ? err.code === 11000 : (err as { code?: unknown })?.code === 11000;
}

const key = (type: string, id: string) => `${type}/${id}`;

function databaseFromUrl(url: string): string | undefined {
  const m = /^mongodb(?:\+srv)?:\/\/[^/]+\/([^?]+)/.exec(url);
  return m?.[1] ? decodeURIComponent(m[1]) : undefined;
}

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

export class MongoStore implements StateStore {
  readonly info: StoreInfo;
  readonly #client: MongoClient;
  readonly #db: Db;
  readonly #reg: EntityTypeRegistry;
  readonly #max: number;
  readonly #atomicUpdates: boolean;
  readonly #listeners = new Set<(events: CommittedEvent[]) => void>();
  readonly #commits: Collection<CommitDoc>;
  readonly #entities: Collection<EntityDoc>;
  readonly #idem: Collection<IdemDoc>;
  readonly #idemAttempts: Collection<{ _id: string }>;
  readonly #idemDone: Collection<IdemDoneDoc>;
  readonly #decisions: Collection<DecisionDoc>;
  readonly #costs: Collection<CostDoc>;
  readonly #approvals: Collection<ApprovalDoc>;
  readonly #audit: Collection<AuditDoc>;

  private constructor(client: MongoClient, db: Db, url: string, opts: MongoStoreOptions, wc: WriteConcernSettings, server: string) {
    this.#client = client;
    this.#db = db;
    this.#reg = opts.registry;
    this.#max = opts.maxDocumentBytes;
    this.#atomicUpdates = !server.startsWith('ferretdb');
    this.#commits = db.collection('commits');
    this.#entities = db.collection('entities');
    this.#idem = db.collection('idempotency');
    this.#idemAttempts = db.collection('idempotency_attempts');
    this.#idemDone = db.collection('idempotency_done');
    this.#decisions = db.collection('approval_decisions');
    this.#costs = db.collection('costs');
    this.#approvals = db.collection('approvals');
    this.#audit = db.collection('audit');
    this.info = {
      kind: 'mongodb',
      location: `${redactMongoUrl(url)} db=${db.databaseName}`,
      durability: { writeConcern: wc, transactions: 'none (one document per append)', server, atomicConditionalUpdates: this.#atomicUpdates },
      maxDocumentBytes: this.#max,
    };
  }

  static async open(url: string, opts: MongoStoreOptions): Promise<MongoStore> {
    const wc: WriteConcernSettings = opts.writeConcern ?? { w: 'majority', journal: true };
    const client = new MongoClient(url, { writeConcern: wc, ignoreUndefined: true, serverSelectionTimeoutMS: opts.serverSelectionTimeoutMS ?? 10_000 });
    try {
      await client.connect();
      const db = client.db(opts.database ?? databaseFromUrl(url) ?? 'keel');
      const info = (await db.admin().command({ buildInfo: 1 })) as { version?: string; ferretdbVersion?: string };
      const server = info.ferretdbVersion ? `ferretdb ${info.ferretdbVersion}` : `mongodb ${info.version ?? '?'}`;
      const store = new MongoStore(client, db, url, opts, wc, server);
      await store.#ensureIndexes();
      return withErrorClassification(store);
    } catch (err) {
      await client.close().catch(() => undefined);
      if (err instanceof StateError) throw err;
      throw new StateError('STATE_UNAVAILABLE', `cannot open MongoDB state store at ${redactMongoUrl(url)}: ${(err as Error).message}`, { cause: err, retryable: true });
    }
  }

  async #ensureIndexes(): Promise<void> {
    await Promise.all([
      this.#commits.createIndex({ entityKey: 1, firstVersion: 1 }, { unique: true, name: 'entity_version' }),
      this.#commits.createIndex({ firstCursor: 1 }, { unique: true, name: 'cursor' }),
      this.#commits.createIndex({ lastCursor: 1 }, { name: 'last_cursor' }),
      this.#commits.createIndex({ entityType: 1, lastCursor: 1 }, { name: 'type_cursor' }),
      this.#commits.createIndex({ published: 1, firstCursor: 1 }, { name: 'outbox' }),
      this.#entities.createIndex({ entityType: 1, updatedAt: -1 }, { name: 'type_updated' }),
      this.#entities.createIndex({ entityId: 1 }, { name: 'entity_id' }),
      this.#costs.createIndex({ time: -1 }, { name: 'time' }),
      this.#costs.createIndex({ runId: 1 }, { name: 'run' }),
      this.#costs.createIndex({ customerId: 1 }, { name: 'customer' }),
      this.#approvals.createIndex({ state: 1, deadlineMs: 1 }, { name: 'state_deadline' }),
    ]);
  }

  // ---- entities ----------------------------------------------------------------------------

  #toEvents(c: CommitDoc): CommittedEvent[] {
    return c.events.map((e) => ({
      eventId: e.eventId,
      entityType: c.entityType,
      entityId: c.entityId,
      version: e.version,
      type: e.type,
      data: fromStored(e.data),
      schemaVersion: e.schemaVersion,
      meta: c.meta!,
      time: c.time,
      cursor: e.cursor,
    }));
  }

  #docToEntity<S>(d: EntityDoc): Entity<S> {
    return {
      entityType: d.entityType,
      entityId: d.entityId,
      version: d.version,
      state: fromStored(d.state) as S,
      deleted: d.deleted,
      createdAt: d.createdAt,
      updatedAt: d.updatedAt,
      schemaVersion: d.schemaVersion,
    };
  }

  /**
   * The entity's version, found by `_id` lookups only (FerretDB pushes nothing else down to its
   * index): start at the projection's version (always a commit boundary) and step over any
   * commits written after it (`<entityKey>#<firstVersion>`).
   */
  async #head(k: string, proj?: EntityDoc | null): Promise<{ version: number; proj: EntityDoc | null }> {
    const p = proj === undefined ? await this.#entities.findOne({ _id: k }) : proj;
    let v = p?.version ?? 0;
    for (;;) {
      const c = await this.#commits.findOne({ _id: `${k}#${v + 1}` }, { projection: { lastVersion: 1 } });
      if (!c) return { version: v, proj: p };
      v = c.lastVersion;
    }
  }

  async #actualVersion(k: string): Promise<number> {
    return (await this.#head(k)).version;
  }

  async #allEvents(type: string, id: string, upTo = Infinity): Promise<CommittedEvent[]> {
    const filter: Filter<CommitDoc> = { entityKey: key(type, id) };
    if (upTo !== Infinity) filter.firstVersion = { $lte: upTo };
    const commits = await this.#commits.find(filter).sort({ firstVersion: 1 }).toArray();
    return commits.flatMap((c) => this.#toEvents(c));
  }

  async #writeProjection(type: string, id: string, s: EntitySnapshot, searchText: string): Promise<void> {
    const doc: Omit<EntityDoc, '_id'> = {
      entityType: type,
      entityId: id,
      version: s.version,
      state: toStored(s.state),
      deleted: s.deleted,
      createdAt: s.createdAt,
      updatedAt: s.updatedAt,
      schemaVersion: s.schemaVersion,
      searchText,
    };
    try {
      // only moves forward: an older writer finishing late does not overwrite a newer state
      await this.#entities.updateOne({ _id: key(type, id), version: { $lt: s.version } }, { $set: doc }, { upsert: true });
    } catch (err) {
      if (!isDup(err)) throw err; // duplicate key: the projection is already at or past this version
    }
  }

  /** Where conditional updates are not atomic, a late writer may have overwritten a newer projection: repair it. */
  async #verifyProjection(type: string, id: string): Promise<void> {
    if (this.#atomicUpdates) return;
    for (let i = 0; i < 5; i++) {
      const k = key(type, id);
      const { version: actual, proj: p } = await this.#head(k);
      if (p && p.version === actual) return;
      const def = this.#reg.get(type);
      const s = replay(def, await this.#allEvents(type, id));
      if (!s) return;
      await this.#entities.replaceOne({ _id: k }, { entityType: type, entityId: id, version: s.version, state: toStored(s.state), deleted: s.deleted, createdAt: s.createdAt, updatedAt: s.updatedAt, schemaVersion: s.schemaVersion, searchText: searchTextOf(def, s.state) }, { upsert: true }).catch((err) => {
        if (!isDup(err)) throw err;
      });
    }
  }

  /** Current snapshot from the projection when it matches the log, else replayed (and repaired). */
  async #snapshot(type: string, id: string, version: number, proj?: EntityDoc | null): Promise<EntitySnapshot | null> {
    if (version === 0) return null;
    const p = proj === undefined ? await this.#entities.findOne({ _id: key(type, id) }) : proj;
    if (p && p.version === version) return { version, state: fromStored(p.state), deleted: p.deleted, createdAt: p.createdAt, updatedAt: p.updatedAt, schemaVersion: p.schemaVersion };
    const def = this.#reg.get(type);
    const s = replay(def, await this.#allEvents(type, id));
    if (s) await this.#writeProjection(type, id, s, searchTextOf(def, s.state));
    return s;
  }

  async #maxCursor(): Promise<number> {
    const last = await this.#commits.find({}, { projection: { lastCursor: 1 } }).sort({ firstCursor: -1 }).limit(1).next();
    return last?.lastCursor ?? 0;
  }

  async append<S = Record<string, unknown>>(entityType: string, entityId: string, expectedVersion: number, events: EventInput[], meta: EventMeta, opts: AppendOptions = {}): Promise<AppendResult<S>> {
    // no multi-document transactions: the completion goes first (a completed task whose append
    // then fails is advanced again from its recorded result when it is redelivered)
    if (opts.complete) await this.complete(opts.complete.key, opts.complete.token, opts.complete.result, { cost: opts.complete.cost });
    const def = this.#reg.get(entityType);
    assertId('entity id', entityId);
    if (!Number.isInteger(expectedVersion) || expectedVersion < 0) throw new InvalidQueryError(`expected version must be an integer >= 0 (got ${String(expectedVersion)})`);
    const k = key(entityType, entityId);
    const { version: actual, proj } = await this.#head(k);
    if (actual !== expectedVersion) throw new VersionConflictError(entityType, entityId, expectedVersion, actual);
    const plan = planAppend(def, entityId, await this.#snapshot(entityType, entityId, actual, proj), events, meta, this.#max);
    let committed: CommittedEvent[];
    for (let attempt = 0; ; attempt++) {
      const first = (await this.#maxCursor()) + 1;
      committed = plan.events.map((e, i) => ({ ...e, cursor: first + i }));
      const doc: CommitDoc = {
        _id: `${k}#${expectedVersion + 1}`,
        entityKey: k,
        entityType,
        entityId,
        firstVersion: expectedVersion + 1,
        lastVersion: expectedVersion + committed.length,
        firstCursor: first,
        lastCursor: first + committed.length - 1,
        time: plan.time,
        meta: plan.meta,
        events: committed.map((e) => ({ eventId: e.eventId, version: e.version, cursor: e.cursor, type: e.type, data: toStored(e.data), schemaVersion: e.schemaVersion })),
        published: false,
      };
      try {
        await this.#commits.insertOne(doc);
        break;
      } catch (err) {
        if (!isDup(err)) throw this.#wrap(err);
        // either the entity moved on (a real conflict) or another append took this cursor
        const now = await this.#actualVersion(k);
        if (now !== expectedVersion) throw new VersionConflictError(entityType, entityId, expectedVersion, now, err);
        if (attempt >= 200) throw new StoreBusyError(`append to ${k}: the change-log cursor stayed contended for ${attempt} attempts`, err);
        await new Promise((r) => setTimeout(r, Math.random() * Math.min(20, attempt + 1)));
      }
    }
    // a failure here leaves the log right and the projection behind: get() and the relay repair it
    await this.#writeProjection(entityType, entityId, plan.snapshot, plan.searchText)
      .then(() => this.#verifyProjection(entityType, entityId))
      .catch(() => undefined);
    for (const l of this.#listeners) l(committed);
    return { events: committed, entity: toEntity<S>(entityType, entityId, plan.snapshot) };
  }

  #wrap(err: unknown): unknown {
    const e = err as { name?: string; code?: number };
    if (e?.code === 64 || e?.name === 'MongoWriteConcernError') return new StoreBusyError(`MongoDB write concern not satisfied: ${(err as Error).message}`, err);
    return err;
  }

  async get<S = Record<string, unknown>>(entityType: string, entityId: string): Promise<Entity<S> | null> {
    this.#reg.get(entityType);
    assertId('entity id', entityId);
    const k = key(entityType, entityId);
    const { version: actual, proj: p } = await this.#head(k);
    if (actual === 0) return null;
    if (p && p.version === actual) return this.#docToEntity<S>(p);
    const s = await this.#snapshot(entityType, entityId, actual, p);
    return s ? toEntity<S>(entityType, entityId, s) : null;
  }

  async getAt<S = Record<string, unknown>>(entityType: string, entityId: string, version: number): Promise<Entity<S> | null> {
    const def = this.#reg.get(entityType);
    assertId('entity id', entityId);
    if (!Number.isInteger(version) || version < 1) throw new InvalidQueryError('version must be an integer >= 1');
    const events = await this.#allEvents(entityType, entityId, version);
    if (!events.some((e) => e.version === version)) return null;
    const s = replay(def, events, version);
    return s ? toEntity<S>(entityType, entityId, s) : null;
  }

  async history(entityType: string, entityId: string): Promise<CommittedEvent[]> {
    this.#reg.get(entityType);
    assertId('entity id', entityId);
    return this.#allEvents(entityType, entityId);
  }

  async typesOf(entityId: string): Promise<string[]> {
    assertId('entity id', entityId);
    const docs = await this.#entities.find({ entityId }, { projection: { entityType: 1 } }).toArray();
    return docs.map((d) => d.entityType).sort();
  }

  async changes(q: ChangesQuery = {}): Promise<ChangesPage> {
    const since = clampInt(q.since, 0, 0, Number.MAX_SAFE_INTEGER, 'since');
    const limit = clampInt(q.limit, 100, 1, 10_000, 'limit');
    const types = q.types ?? [];
    for (const t of types) this.#reg.get(t);
    const filter: Filter<CommitDoc> = { lastCursor: { $gt: since } };
    if (types.length) filter.entityType = { $in: types };
    const commits = await this.#commits.find(filter).sort({ firstCursor: 1 }).limit(limit + 1).toArray();
    const all = commits.flatMap((c) => this.#toEvents(c)).filter((e) => e.cursor > since);
    const events = all.slice(0, limit);
    return { events, cursor: events.at(-1)?.cursor ?? since, hasMore: all.length > limit };
  }

  async headCursor(): Promise<number> {
    return this.#maxCursor();
  }

  #cond(c: NormalizedCondition): [string, Document] {
    const field = c.meta === 'id' ? 'entityId' : c.meta ? c.meta : `state.${c.field}`;
    switch (c.op) {
      case '$contains':
        if (c.meta) throw new InvalidQueryError(`$contains applies to array fields, not '${c.field}'`);
        return [field, { $elemMatch: { $eq: c.value } }];
      default:
        return [field, { [c.op]: c.value }];
    }
  }

  async query<S = Record<string, unknown>>(entityType: string, q: EntityQuery = {}): Promise<QueryPage<S>> {
    this.#reg.get(entityType);
    const nq = normalizeQuery(q);
    const and: Document[] = [{ entityType }];
    if (!nq.includeDeleted) and.push({ deleted: false });
    for (const c of nq.conditions) {
      const [f, cond] = this.#cond(c);
      and.push({ [f]: cond });
    }
    const filter = { $and: and } as Filter<EntityDoc>;
    const sort: Record<string, 1 | -1> = {};
    for (const s of nq.sort) sort[s.meta === 'id' ? 'entityId' : s.meta ? s.meta : `state.${s.field}`] = s.dir;
    const [total, docs] = await Promise.all([
      this.#entities.countDocuments(filter),
      this.#entities.find(filter).sort(sort).skip(nq.offset).limit(nq.limit).toArray(),
    ]);
    const next = nq.offset + docs.length;
    return { items: docs.map((d) => this.#docToEntity<S>(d)), total, nextOffset: next < total ? next : null };
  }

  async search(text: string, opts: SearchOptions = {}): Promise<Entity[]> {
    const terms = searchTerms(text);
    const limit = clampInt(opts.limit, 20, 1, 1000, 'limit');
    const types = opts.types ?? [];
    for (const t of types) this.#reg.get(t);
    const and: Document[] = terms.map((t) => ({ searchText: { $regex: escapeRegex(t) } }));
    if (types.length) and.push({ entityType: { $in: types } });
    if (!opts.includeDeleted) and.push({ deleted: false });
    const docs = await this.#entities
      .find({ $and: and } as Filter<EntityDoc>)
      .sort({ updatedAt: -1, entityType: 1, entityId: 1 })
      .limit(limit)
      .toArray();
    return docs.map((d) => this.#docToEntity(d));
  }

  async rebuildProjections(): Promise<number> {
    const known = this.#reg.names();
    const keys: string[] = [];
    let batch: CommittedEvent[] = [];
    const flush = async () => {
      const head = batch[0];
      if (!head) return;
      const def = this.#reg.get(head.entityType);
      const s = replay(def, batch);
      batch = [];
      if (!s) return;
      const k = key(head.entityType, head.entityId);
      keys.push(k);
      await this.#entities.replaceOne(
        { _id: k },
        { entityType: head.entityType, entityId: head.entityId, version: s.version, state: toStored(s.state), deleted: s.deleted, createdAt: s.createdAt, updatedAt: s.updatedAt, schemaVersion: s.schemaVersion, searchText: searchTextOf(def, s.state) },
        { upsert: true },
      );
    };
    const cur = this.#commits.find({ entityType: { $in: known } }).sort({ entityKey: 1, firstVersion: 1 });
    for await (const c of cur) {
      const head = batch[0];
      if (head && (head.entityType !== c.entityType || head.entityId !== c.entityId)) await flush();
      batch.push(...this.#toEvents(c));
    }
    await flush();
    const keep = new Set(keys);
    const stale = (await this.#entities.find({ entityType: { $in: known } }, { projection: { _id: 1 } }).toArray()).map((d) => d._id).filter((id) => !keep.has(id));
    if (stale.length) await this.#entities.deleteMany({ _id: { $in: stale } });
    return keys.length;
  }

  // ---- outbox ------------------------------------------------------------------------------

  onCommit(listener: (events: CommittedEvent[]) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  async pendingEvents(limit = 500): Promise<CommittedEvent[]> {
    const n = clampInt(limit, 500, 1, 10_000, 'limit');
    const commits = await this.#commits.find({ published: false }).sort({ firstCursor: 1 }).limit(n).toArray();
    // a crash between commit and projection also left the event unpublished: repair here
    for (const c of commits) {
      const p = await this.#entities.findOne({ _id: c.entityKey }, { projection: { version: 1 } });
      if (!p || p.version < c.lastVersion) await this.get(c.entityType, c.entityId);
    }
    return commits.flatMap((c) => this.#toEvents(c));
  }

  async markPublished(eventIds: string[]): Promise<void> {
    if (eventIds.length === 0) return;
    const ids = new Set(eventIds);
    const commits = await this.#commits.find({ 'events.eventId': { $in: eventIds } }, { projection: { 'events.eventId': 1 } }).toArray();
    // a commit is published only when every one of its events is
    const done = commits.filter((c) => c.events.every((e) => ids.has(e.eventId))).map((c) => c._id);
    if (done.length) await this.#commits.updateMany({ _id: { $in: done } }, { $set: { published: true } });
  }

  // ---- idempotency -------------------------------------------------------------------------

  async claim(k: string, opts: { leaseMs?: number } = {}): Promise<ClaimResult> {
    if (typeof k !== 'string' || !k || k.length > 500) throw new InvalidQueryError('idempotency key must be a non-empty string of at most 500 characters');
    const leaseMs = clampInt(opts.leaseMs, DEFAULT_LEASE_MS, 1, 7 * 86_400_000, 'leaseMs');
    for (let i = 0; i < 10; i++) {
      const done = await this.#idemDone.findOne({ _id: k });
      if (done) return { status: 'completed', key: k, result: JSON.parse(done.resultJson), completedAt: done.completedAt };
      const now = Date.now();
      const token = newId();
      const leaseUntil = now + leaseMs;
      const cur = await this.#idem.findOne({ _id: k });
      if (!cur) {
        try {
          await this.#idem.insertOne({ _id: k, gen: newId(), token, attempt: 1, leaseUntil, createdAt: nowIso() });
          return { status: 'claimed', key: k, token, attempt: 1, leaseUntil: new Date(leaseUntil).toISOString() };
        } catch (err) {
          if (!isDup(err)) throw err;
          continue; // someone else claimed first: look again
        }
      }
      if (cur.leaseUntil > now) return { status: 'running', key: k, attempt: cur.attempt, leaseUntil: new Date(cur.leaseUntil).toISOString() };
      // the lease expired (its holder crashed or is too slow): one taker wins attempt n+1
      try {
        await this.#idemAttempts.insertOne({ _id: `${k}#${cur.gen}#${cur.attempt + 1}` });
      } catch (err) {
        if (!isDup(err)) throw err;
        continue;
      }
      await this.#idem.updateOne({ _id: k }, { $set: { token, attempt: cur.attempt + 1, leaseUntil } });
      return { status: 'claimed', key: k, token, attempt: cur.attempt + 1, leaseUntil: new Date(leaseUntil).toISOString() };
    }
    throw new StoreBusyError(`idempotency key '${k}' is being claimed and released in a loop`);
  }

  async complete(k: string, token: string, result: unknown = null, opts: { cost?: CostInput } = {}): Promise<void> {
    const cur = await this.#idem.findOne({ _id: k });
    if (!cur || cur.token !== token) throw new IdempotencyLeaseLostError(k, await this.#leaseLostReason(k));
    try {
      await this.#idemDone.insertOne({ _id: k, attempt: cur.attempt, resultJson: JSON.stringify(result ?? null), createdAt: cur.createdAt, completedAt: nowIso() });
    } catch (err) {
      if (!isDup(err)) throw err;
      throw new IdempotencyLeaseLostError(k, 'already completed by another claim');
    }
    // no multi-document transactions: the cost follows the completion that won (only the winner gets here)
    if (opts.cost) await this.recordCost(opts.cost);
  }

  async release(k: string, token: string): Promise<void> {
    const cur = await this.#idem.findOne({ _id: k });
    if (!cur || cur.token !== token || (await this.#idemDone.findOne({ _id: k }))) throw new IdempotencyLeaseLostError(k, await this.#leaseLostReason(k));
    await this.#idem.deleteOne({ _id: k, token });
  }

  async #leaseLostReason(k: string): Promise<string> {
    const rec = await this.getIdempotency(k);
    if (!rec) return 'no claim exists (released or never claimed)';
    if (rec.status === 'completed') return 'already completed by another claim';
    return `the lease expired and attempt ${rec.attempt} took it over`;
  }

  async getIdempotency(k: string): Promise<IdempotencyRecord | null> {
    const [d, done] = await Promise.all([this.#idem.findOne({ _id: k }), this.#idemDone.findOne({ _id: k })]);
    if (done) return { key: k, status: 'completed', attempt: done.attempt, leaseUntil: null, result: JSON.parse(done.resultJson), createdAt: done.createdAt, completedAt: done.completedAt };
    if (!d) return null;
    return { key: k, status: 'running', attempt: d.attempt, leaseUntil: new Date(d.leaseUntil).toISOString(), result: null, createdAt: d.createdAt, completedAt: null };
  }

  // ---- costs -------------------------------------------------------------------------------

  async recordCost(input: CostInput): Promise<CostRecord> {
    const c = toCostRecord(input);
    const { id, details, ...rest } = c;
    await this.#costs.insertOne({ _id: id, ...rest, detailsJson: details ? JSON.stringify(details) : null });
    return c;
  }

  async costs(q: CostQuery = {}): Promise<CostReport> {
    const filter: Filter<CostDoc> = {};
    const time: Record<string, string> = {};
    if (q.since) time.$gte = new Date(q.since).toISOString();
    if (q.until) time.$lt = new Date(q.until).toISOString();
    if (Object.keys(time).length) filter.time = time;
    for (const d of COST_DIMENSIONS) {
      const v = q[d];
      if (typeof v === 'string') (filter as Record<string, unknown>)[d] = v;
    }
    const by = q.by ?? [];
    for (const d of by) if (!COST_DIMENSIONS.includes(d)) throw new InvalidQueryError(`cannot group costs by '${d}'`);
    const docs = await this.#costs.find(filter).sort({ time: -1, _id: 1 }).toArray();
    const recs: CostRecord[] = docs.map(({ _id, detailsJson, ...rest }) => ({ id: _id, ...rest, details: detailsJson ? (JSON.parse(detailsJson) as Record<string, unknown>) : null }));
    return summarizeCosts(recs, by, q.records ?? 0);
  }

  // ---- approvals ---------------------------------------------------------------------------

  #docToApproval(d: ApprovalDoc, dec: DecisionDoc | null): Approval {
    const { _id, payloadJson, deadlineMs: _deadlineMs, ...rest } = d;
    const a: Approval = { id: _id, payload: JSON.parse(payloadJson), ...rest, text: rest.text ?? null };
    return dec ? { ...a, state: dec.state, decidedAt: dec.decidedAt, decidedBy: dec.decidedBy, reason: dec.reason, text: dec.text ?? null } : a;
  }

  /** Records a decision; exactly one of several racing decisions (or the expiry) lands. */
  async #decide(id: string, dec: Omit<DecisionDoc, '_id'>): Promise<boolean> {
    try {
      await this.#decisions.insertOne({ _id: id, ...dec });
    } catch (err) {
      if (!isDup(err)) throw err;
      return false;
    }
    // the approval document mirrors its decision for listing by state; written by the winner only
    await this.#approvals.updateOne({ _id: id }, { $set: dec });
    return true;
  }

  async createApproval(input: ApprovalInput): Promise<Approval> {
    const a = checkApprovalInput(input);
    const id = a.id ?? newId();
    const deadline = new Date(a.deadline);
    const doc: ApprovalDoc = {
      _id: id,
      state: 'pending',
      action: a.action,
      subject: a.subject,
      payloadJson: JSON.stringify(a.payload ?? null),
      requestedBy: a.requestedBy,
      createdAt: nowIso(),
      deadline: deadline.toISOString(),
      deadlineMs: deadline.getTime(),
      correlationId: a.correlationId ?? null,
      decidedAt: null,
      decidedBy: null,
      reason: null,
      text: null,
    };
    try {
      await this.#approvals.insertOne(doc);
    } catch (err) {
      if (isDup(err)) throw new InvalidQueryError(`approval '${id}' already exists`);
      throw err;
    }
    return this.#docToApproval(doc, null);
  }

  async decideApproval(id: string, d: ApprovalDecision): Promise<Approval> {
    const dec = checkDecision(d);
    const now = Date.now();
    const cur = await this.#approvals.findOne({ _id: id });
    if (!cur) throw new NotFoundError('approval', id);
    if (cur.deadlineMs > now) {
      const won = await this.#decide(id, { state: dec.decision, decidedAt: new Date(now).toISOString(), decidedBy: dec.by, reason: dec.reason ?? null, text: dec.text ?? null });
      if (won) return (await this.getApproval(id))!;
    } else {
      await this.#decide(id, { state: 'expired', decidedAt: new Date(now).toISOString(), decidedBy: null, reason: null });
    }
    const decided = await this.#decisions.findOne({ _id: id });
    if (decided?.state === 'expired') throw new ApprovalExpiredError(id, cur.deadline);
    throw new ApprovalNotPendingError(id, decided?.state ?? 'decided');
  }

  async getApproval(id: string): Promise<Approval | null> {
    await this.expireApprovals();
    const [d, dec] = await Promise.all([this.#approvals.findOne({ _id: id }), this.#decisions.findOne({ _id: id })]);
    return d ? this.#docToApproval(d, dec) : null;
  }

  async listApprovals(q: { state?: ApprovalState; limit?: number } = {}): Promise<Approval[]> {
    await this.expireApprovals();
    const limit = clampInt(q.limit, 100, 1, 10_000, 'limit');
    const docs = await this.#approvals
      .find(q.state ? { state: q.state } : {})
      .sort({ createdAt: -1, _id: 1 })
      .limit(limit)
      .toArray();
    const decs = new Map((await this.#decisions.find({ _id: { $in: docs.map((d) => d._id) } }).toArray()).map((x) => [x._id, x]));
    return docs.map((d) => this.#docToApproval(d, decs.get(d._id) ?? null)).filter((a) => !q.state || a.state === q.state);
  }

  async expireApprovals(now = new Date()): Promise<number> {
    const due = await this.#approvals.find({ state: 'pending', deadlineMs: { $lte: now.getTime() } }, { projection: { _id: 1 } }).toArray();
    let n = 0;
    for (const d of due) if (await this.#decide(d._id, { state: 'expired', decidedAt: now.toISOString(), decidedBy: null, reason: null })) n++;
    return n;
  }

  // ---- audit -------------------------------------------------------------------------------

  #docToAudit(d: AuditDoc): AuditRecord {
    const rec: AuditRecord = { seq: d._id, time: d.time, actor: d.actor, action: d.action, subject: d.subject, details: JSON.parse(d.detailsJson) as Record<string, unknown>, prevHash: d.prevHash, hash: d.hash };
    if (d.v === 2) {
      rec.v = 2;
      rec.detailsDigest = d.detailsDigest ?? '';
      if (d.detailsSalt) rec.detailsSalt = d.detailsSalt;
      if (d.detailsLeaves) rec.detailsLeaves = d.detailsLeaves;
      if (d.detailsSaltsJson) rec.detailsSalts = JSON.parse(d.detailsSaltsJson) as Record<string, string>;
    }
    if (d.erased) rec.erased = d.erased;
    return rec;
  }

  async appendAudit(input: AuditInput): Promise<AuditRecord> {
    checkAuditInput(input);
    // optimistic: the next seq is the _id, so two writers cannot both extend the same head
    for (let i = 0; i < 100; i++) {
      const last = await this.#audit.find({}, { projection: { hash: 1 } }).sort({ _id: -1 }).limit(1).next();
      const rec = buildAuditRecord(input, last ? last._id + 1 : 1, last ? last.hash : GENESIS_HASH);
      try {
        await this.#audit.insertOne({ _id: rec.seq, time: rec.time, actor: rec.actor, action: rec.action, subject: rec.subject, detailsJson: JSON.stringify(rec.details), prevHash: rec.prevHash, hash: rec.hash, v: 2, detailsDigest: rec.detailsDigest!, detailsLeaves: rec.detailsLeaves!, detailsSaltsJson: JSON.stringify(rec.detailsSalts) });
        return rec;
      } catch (err) {
        if (!isDup(err)) throw err;
        await new Promise((r) => setTimeout(r, Math.random() * 5 * (i + 1)));
      }
    }
    throw new StoreBusyError('audit log: too many concurrent writers');
  }

  async exportAudit(opts: { sinceSeq?: number; limit?: number } = {}): Promise<AuditRecord[]> {
    const since = clampInt(opts.sinceSeq, 0, 0, Number.MAX_SAFE_INTEGER, 'sinceSeq');
    let cur = this.#audit.find({ _id: { $gt: since } }).sort({ _id: 1 });
    if (opts.limit !== undefined) cur = cur.limit(clampInt(opts.limit, 1, 1, Number.MAX_SAFE_INTEGER, 'limit'));
    return (await cur.toArray()).map((d) => this.#docToAudit(d));
  }

  async verifyAudit(): Promise<AuditVerification> {
    return verifyChain((await this.#audit.find({}).sort({ _id: 1 }).toArray()).map((d) => this.#docToAudit(d)));
  }

  // ---- erasure -----------------------------------------------------------------------------

  /** Scrubs one entity's stored commits and projection; returns its events (scrubbed) and how many changed. */
  async #scrubEntity(type: string, id: string, sc: Scrubber): Promise<{ events: CommittedEvent[]; changed: number; stateChanged: boolean }> {
    const k = key(type, id);
    const commits = await this.#commits.find({ entityKey: k }).sort({ firstVersion: 1 }).toArray();
    let changed = 0;
    for (const c of commits) {
      let any = false;
      const events = c.events.map((e) => {
        if (e.type === ERASED_EVENT) return e;
        const r = scrub(e.data, sc);
        if (!r.changed) return e;
        any = true;
        changed++;
        return { ...e, data: r.value };
      });
      if (any) {
        await this.#commits.updateOne({ _id: c._id }, { $set: { events } });
        c.events = events;
      }
    }
    let stateChanged = false;
    const p = await this.#entities.findOne({ _id: k });
    if (p) {
      const st = scrub(p.state, sc);
      if (st.changed) {
        stateChanged = true;
        const def = this.#reg.has(type) ? this.#reg.get(type) : null;
        let text = p.searchText;
        if (def) text = searchTextOf(def, st.value as Record<string, unknown>);
        else for (const n of sc.needles) text = text.split(n).join('[erased]');
        await this.#entities.updateOne({ _id: k, version: p.version }, { $set: { state: st.value as Record<string, unknown>, searchText: text } });
      }
    }
    return { events: commits.flatMap((c) => this.#toEvents(c)), changed, stateChanged };
  }

  async redactEntity(entityType: string, entityId: string, opts: RedactEntityOptions): Promise<RedactEntityResult> {
    const def = this.#reg.get(entityType);
    assertId('entity id', entityId);
    const actor = checkActor('erasure', opts.actor);
    const sc = makeScrubber(opts.fields, opts.values);
    if (!sc.fields && !sc.match) throw new InvalidQueryError('redactEntity needs fields or values to erase');
    const k = key(entityType, entityId);
    for (let attempt = 0; ; attempt++) {
      const { events, changed } = await this.#scrubEntity(entityType, entityId, sc);
      if (events.length === 0) return { entityType, entityId, events: 0, version: 0 };
      const snap = replay(def, events)!;
      snap.state = scrub(snap.state, sc).value as Record<string, unknown>;
      const data = { reason: opts.reason, fields: opts.fields === 'all' ? 'all' : (opts.fields ?? []), values: opts.values?.length ?? 0, events: changed, ...(opts.delete ? { deleted: true } : {}) };
      const plan = planErasedEvent(def, entityId, snap, data, { actor });
      const cursor = (await this.#maxCursor()) + 1;
      const committed: CommittedEvent = { ...plan.event, cursor };
      try {
        await this.#commits.insertOne({
          _id: `${k}#${plan.event.version}`,
          entityKey: k,
          entityType,
          entityId,
          firstVersion: plan.event.version,
          lastVersion: plan.event.version,
          firstCursor: cursor,
          lastCursor: cursor,
          time: plan.event.time,
          meta: plan.event.meta,
          events: [{ eventId: plan.event.eventId, version: plan.event.version, cursor, type: plan.event.type, data: toStored(plan.event.data), schemaVersion: plan.event.schemaVersion }],
          published: false,
        });
      } catch (err) {
        // another append took the version or the cursor: scrub again (it may have written more) and retry
        if (!isDup(err) || attempt >= 50) throw this.#wrap(err);
        await new Promise((r) => setTimeout(r, Math.random() * Math.min(20, attempt + 1)));
        continue;
      }
      await this.#writeProjection(entityType, entityId, plan.snapshot, plan.searchText).then(() => this.#verifyProjection(entityType, entityId));
      for (const l of this.#listeners) l([committed]);
      return { entityType, entityId, events: changed, version: plan.event.version };
    }
  }

  async redactRecords(opts: RedactRecordsOptions): Promise<RedactCounts> {
    checkActor('erasure', opts.actor);
    const sc = makeScrubber(undefined, opts.values);
    const all = makeScrubber('all', undefined);
    const counts: RedactCounts = { entities: 0, events: 0, audit: 0, auditUnerasable: 0, approvals: 0, idempotency: 0, costs: 0 };
    const types = opts.entityTypes ? new Set(opts.entityTypes) : null;
    const erased = { time: nowIso(), reason: opts.reason };
    // no server-side text search over documents here: every collection is read once (an erasure is rare)
    const found = new Map<string, [string, string]>();
    for await (const c of this.#commits.find({}, { projection: { entityType: 1, entityId: 1, events: 1 } })) {
      if (mayContain(sc, JSON.stringify(c.events))) found.set(c.entityKey ?? key(c.entityType, c.entityId), [c.entityType, c.entityId]);
    }
    for await (const e of this.#entities.find({}, { projection: { entityType: 1, entityId: 1, state: 1 } })) {
      if (mayContain(sc, JSON.stringify(e.state))) found.set(key(e.entityType, e.entityId), [e.entityType, e.entityId]);
    }
    for (const [type, id] of found.values()) {
      if (types && !types.has(type)) continue;
      const r = await this.#scrubEntity(type, id, sc);
      if (r.changed || r.stateChanged) counts.entities++;
      counts.events += r.changed;
    }
    for await (const d of this.#audit.find({})) {
      if (!mayContain(sc, d.detailsJson)) continue;
      const rec = this.#docToAudit(d);
      const r = eraseAuditDetails(rec, sc);
      if (r === 'unerasable') counts.auditUnerasable++;
      if (!r || r === 'unerasable') continue;
      await this.#audit.updateOne({ _id: d._id }, { $set: { detailsJson: JSON.stringify(r.details), detailsSaltsJson: JSON.stringify(r.detailsSalts), erased } });
      counts.audit++;
    }
    const runs = new Set(opts.correlationIds ?? []);
    for await (const d of this.#approvals.find({})) {
      const s = d.correlationId !== null && runs.has(d.correlationId) ? all : sc;
      const payload = scrub(JSON.parse(d.payloadJson), s);
      const text = scrub(d.text ?? null, s);
      const reason = scrub(d.reason ?? null, s);
      const dec = await this.#decisions.findOne({ _id: d._id });
      const decText = scrub(dec?.text ?? null, s);
      const decReason = scrub(dec?.reason ?? null, s);
      if (!payload.changed && !text.changed && !reason.changed && !decText.changed && !decReason.changed) continue;
      await this.#approvals.updateOne({ _id: d._id }, { $set: { payloadJson: JSON.stringify(payload.value), text: text.value as string | null, reason: reason.value as string | null } });
      if (dec && (decText.changed || decReason.changed)) await this.#decisions.updateOne({ _id: d._id }, { $set: { text: decText.value as string | null, reason: decReason.value as string | null } });
      counts.approvals++;
    }
    const keys = opts.keysContaining?.filter(Boolean) ?? [];
    for await (const d of this.#idemDone.find({})) {
      const mine = keys.some((k) => d._id.includes(k));
      if (!mine && !mayContain(sc, d.resultJson)) continue;
      const r = scrub(JSON.parse(d.resultJson), mine ? all : sc);
      if (!r.changed) continue;
      await this.#idemDone.updateOne({ _id: d._id }, { $set: { resultJson: JSON.stringify(r.value) } });
      counts.idempotency++;
    }
    for await (const d of this.#costs.find({ detailsJson: { $ne: null } })) {
      const mine = opts.customerId !== undefined && d.customerId === opts.customerId;
      if (!mine && !mayContain(sc, d.detailsJson ?? '')) continue;
      const r = scrub(JSON.parse(d.detailsJson!), mine ? all : sc);
      if (!r.changed) continue;
      await this.#costs.updateOne({ _id: d._id }, { $set: { detailsJson: JSON.stringify(r.value) } });
      counts.costs++;
    }
    return counts;
  }

  /** MongoDB rewrites documents in place; reclaiming the old storage is the server's business (nothing to do here). */
  async compact(): Promise<CompactResult> {
    return {};
  }

  // ---- retention ---------------------------------------------------------------------------

  /**
   * Inserts the `compacted` commit after the entity's last one (the unique version index arbitrates
   * a racing append), moves the projection to it, then deletes the older commits: a crash in
   * between leaves old events before the `compacted` one, which replays to the same state and is
   * compacted again on the next pass.
   */
  async compactHistory(entityType: string, entityId: string, opts: CompactHistoryOptions): Promise<CompactHistoryResult> {
    const def = this.#reg.get(entityType);
    assertId('entity id', entityId);
    const actor = checkActor('compaction', opts.actor);
    const k = key(entityType, entityId);
    const { version: actual, proj } = await this.#head(k);
    if (opts.expectedVersion !== undefined && actual !== opts.expectedVersion) throw new VersionConflictError(entityType, entityId, opts.expectedVersion, actual);
    const base = { entityType, entityId, events: 0, version: actual };
    if (actual === 0) return { ...base, skipped: 'missing' };
    const commits = await this.#commits.find({ entityKey: k, firstVersion: { $lte: actual } }, { projection: { events: 1, published: 1, firstVersion: 1 } }).sort({ firstVersion: 1 }).toArray();
    const events = commits.flatMap((c) => c.events);
    if (events.length === 1 && events[0]!.type === COMPACTED_EVENT) return { ...base, skipped: 'compacted' };
    if (commits.some((c) => !c.published)) return { ...base, skipped: 'unpublished' };
    const cur = (await this.#snapshot(entityType, entityId, actual, proj))!;
    const plan = planCompactedEvent(def, entityId, cur, { events: events.length, firstCursor: events[0]!.cursor, lastCursor: events.at(-1)!.cursor }, opts.reason, { actor });
    const e = plan.event;
    for (let attempt = 0; ; attempt++) {
      const cursor = (await this.#maxCursor()) + 1;
      try {
        await this.#commits.insertOne({
          _id: `${k}#${e.version}`, entityKey: k, entityType, entityId, firstVersion: e.version, lastVersion: e.version, firstCursor: cursor, lastCursor: cursor, time: e.time, meta: e.meta,
          events: [{ eventId: e.eventId, version: e.version, cursor, type: e.type, data: toStored(e.data), schemaVersion: e.schemaVersion }],
          published: true,
        });
        break;
      } catch (err) {
        if (!isDup(err)) throw this.#wrap(err);
        const now = await this.#actualVersion(k);
        if (now !== actual) throw new VersionConflictError(entityType, entityId, actual, now, err);
        if (attempt >= 200) throw new StoreBusyError(`compaction of ${k}: the change-log cursor stayed contended for ${attempt} attempts`, err);
        await new Promise((r) => setTimeout(r, Math.random() * Math.min(20, attempt + 1)));
      }
    }
    await this.#writeProjection(entityType, entityId, plan.snapshot, plan.searchText);
    await this.#commits.deleteMany({ entityKey: k, firstVersion: { $lte: actual } });
    return { ...base, events: events.length, version: e.version };
  }

  async pruneIdempotency(before: Date, opts: { limit?: number } = {}): Promise<PruneIdempotencyResult> {
    const limit = clampInt(opts.limit, 5000, 1, 100_000, 'limit');
    // completed: the record, its claim and the claim's take-over markers (`<key>#<gen>#<attempt>`)
    const done = await this.#idemDone.find({ completedAt: { $lt: before.toISOString() } }, { projection: { _id: 1 } }).limit(limit).toArray();
    const doneIds = done.map((d) => d._id);
    const claims = doneIds.length ? await this.#idem.find({ _id: { $in: doneIds } }).toArray() : [];
    // abandoned: claims whose lease ended before the cut-off and that never completed
    const stale = await this.#idem.find({ leaseUntil: { $lt: before.getTime() } }).limit(Math.max(1, limit - doneIds.length)).toArray();
    const completedStale = new Set((stale.length ? await this.#idemDone.find({ _id: { $in: stale.map((d) => d._id) } }, { projection: { _id: 1 } }).toArray() : []).map((d) => d._id));
    const abandoned = doneIds.length < limit ? stale.filter((d) => !completedStale.has(d._id)) : [];
    const markers = [...claims, ...abandoned].flatMap((c) => Array.from({ length: Math.max(0, c.attempt - 1) }, (_, i) => `${c._id}#${c.gen}#${i + 2}`));
    if (markers.length) await this.#idemAttempts.deleteMany({ _id: { $in: markers } });
    const claimIds = [...claims.map((c) => c._id), ...abandoned.map((c) => c._id)];
    if (claimIds.length) await this.#idem.deleteMany({ _id: { $in: claimIds } });
    if (doneIds.length) await this.#idemDone.deleteMany({ _id: { $in: doneIds } });
    return { completed: doneIds.length, abandoned: abandoned.length };
  }

  /** For tests and tools: the underlying database. */
  get database(): Db {
    return this.#db;
  }

  async close(): Promise<void> {
    this.#listeners.clear();
    await this.#client.close();
  }
}

/**
 * Field names may not start with `$` nor contain `.` in MongoDB updates, nor anywhere in FerretDB;
 * run state holds such keys (workflow expressions `$coalesce`, policies `reply.email`). Stored
 * documents (event data, entity state) carry such a name as `\uFF04` followed by the name with
 * `%`, `.` and `$` percent-encoded (a name that starts with `\uFF04` is encoded too), and reads
 * restore it. Other names are stored as they are.
 */
const KEY_ESC = '\uFF04';
function mapKeys(v: unknown, key: (k: string) => string): unknown {
  if (Array.isArray(v)) return v.map((x) => mapKeys(x, key));
  if (v === null || typeof v !== 'object' || v instanceof Date) return v;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) out[key(k)] = mapKeys(x, key);
  return out;
}
export function toStored<T>(v: T): T {
  return mapKeys(v, (k) => (k.startsWith('$') || k.includes('.') || k.startsWith(KEY_ESC) ? KEY_ESC + k.replace(/[%.$]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`) : k)) as T;
}
export function fromStored<T>(v: T): T {
  return mapKeys(v, (k) => (k.startsWith(KEY_ESC) ? k.slice(1).replace(/%(2E|24|25)/g, (_m, h: string) => String.fromCharCode(parseInt(h, 16))) : k)) as T;
}

/** Driver errors that mean the server cannot be reached now (down, restarting, network). */
const UNREACHABLE = new Set(['MongoNetworkError', 'MongoNetworkTimeoutError', 'MongoServerSelectionError', 'MongoNotConnectedError', 'MongoPoolClearedError', 'MongoServerClosedError']);

/**
 * A driver error as a typed state error: the server unreachable → STATE_UNAVAILABLE, its disk
 * full (MongoDB's OutOfDiskSpace 14031, ENOSPC, FerretDB's SQLite full) → STATE_STORAGE_FULL,
 * both retryable. Anything else is returned as it was.
 */
export function classifyMongoError(err: unknown, location: string): unknown {
  if (err instanceof StateError) return err;
  const e = err as { name?: string; code?: unknown; message?: string } | null;
  if (e?.code === 14031 || /no space left on device|database or disk is full|OutOfDiskSpace/i.test(e?.message ?? '')) return new StorageFullError(location, err);
  if (UNREACHABLE.has(e?.name ?? '')) return new StoreUnavailableError(location, err);
  return err;
}

/** Every method of the store, with driver errors classified ({@link classifyMongoError}). */
function withErrorClassification(store: MongoStore): MongoStore {
  const wrapped = new Map<PropertyKey, unknown>();
  const fail = (err: unknown): never => {
    throw classifyMongoError(err, store.info.location);
  };
  return new Proxy(store, {
    get(target, prop) {
      const v = Reflect.get(target, prop, target) as unknown;
      if (typeof v !== 'function' || prop === 'constructor') return v;
      let w = wrapped.get(prop);
      if (!w) {
        const fn = v as (...a: unknown[]) => unknown;
        w = (...args: unknown[]) => {
          try {
            const r = fn.apply(target, args);
            return r instanceof Promise ? r.catch(fail) : r;
          } catch (err) {
            return fail(err);
          }
        };
        wrapped.set(prop, w);
      }
      return w;
    },
  });
}
