/**
 * The MongoDB adapter (official driver), designed for what FerretDB 1.24 (SQLite backend) pushes
 * down to its storage: only an equality on a string `_id` is an index lookup there; any other
 * filter or sort scans the collection. `findOneAndUpdate`, `$inc` and filtered updates run as
 * read-then-write (concurrent callers all "win"). The one arbiter used for correctness is a
 * unique index: an insert either lands or fails with 11000. See docs/shared-state.md, "MongoDB
 * adapter design".
 *
 * - The change log is the `log` collection, one document per append keyed by its first cursor
 *   (zero-padded string `_id`), holding all its events: ONE insert, atomic. A unique index on
 *   `vkey` (`<type>/<id>#<firstVersion>`) makes the same insert the version arbiter: of two
 *   appends at the same expected version exactly one lands, the other gets a conflict.
 * - Cursors are dense: a writer takes `end + 1` only for an `end` it has seen committed (its own
 *   last insert, or a document it read), and the `_id` refuses a second taker, who reads the
 *   document that beat it and tries after it. So the log is always a gap-free prefix: a reader
 *   walks it by `_id` lookups and stops at the first missing position, and no commit can later
 *   land below a position a reader has passed. Compaction leaves stubs, never holes.
 * - `commits` holds one small marker per append keyed `<type>/<id>#<firstVersion>` (its versions
 *   and cursors), written right after the log insert: entity reads walk it by `_id`. A marker
 *   lost to a crash is rebuilt from the log (by a scan, on a conflict only).
 * - The projection (current state) is written after the commit, conditional on version, and
 *   checked against the markers afterwards (repaired if a late writer overwrote it).
 * - Idempotency completions, lease take-overs, approval decisions and audit records are inserts
 *   with unique ids, so exactly one of several racing callers succeeds.
 * - On a real MongoDB replica set (`hello` answers a `setName`) the log insert and its marker
 *   commit in one transaction.
 *
 * Internal: use `openStore`.
 */
import { MongoClient, MongoServerError, type ClientSession, type Collection, type Db, type Document, type Filter, type WriteConcernSettings } from 'mongodb';
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

/** Which entity, versions and cursors one append covers (in its log document and its marker). */
interface AppendSpan {
  entityKey: string;
  entityType: string;
  entityId: string;
  firstVersion: number;
  lastVersion: number;
  firstCursor: number;
  lastCursor: number;
}

/** One append in the change log, keyed by its first cursor ({@link pos}). */
interface LogDoc extends AppendSpan {
  _id: string;
  /** `<entityKey>#<firstVersion>`: unique, the version arbiter */
  vkey: string;
  time: string;
  meta: EventMeta | null;
  events: StoredEvent[];
  published: boolean;
  /** compacted away: the position stays taken, the events are gone */
  stub?: boolean;
}

/** An append's marker for entity reads, keyed `<entityKey>#<firstVersion>` (stores before the log kept events here too). */
interface CommitDoc extends AppendSpan {
  _id: string;
  events?: StoredEvent[];
  published?: boolean;
  time?: string;
  meta?: EventMeta | null;
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
  /** the claim token that completed it (absent in records written before it was kept) */
  token?: string;
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

/** The marker of a log document (entity reads walk these by `_id`). */
function markerOf(d: LogDoc): CommitDoc {
  return { _id: d.vkey, entityKey: d.entityKey, entityType: d.entityType, entityId: d.entityId, firstVersion: d.firstVersion, lastVersion: d.lastVersion, firstCursor: d.firstCursor, lastCursor: d.lastCursor };
}

/** A cursor as a log `_id`: zero-padded, so string order is numeric order. */
const pos = (cursor: number) => String(cursor).padStart(16, '0');

/** How many log positions a reader fetches at once (parallel `_id` lookups on FerretDB). */
const READ_BATCH = 32;
/** Pending commits younger than this are their writer's to finish (marker, projection). */
const REPAIR_AFTER_MS = 5_000;

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
  /** a real MongoDB replica set: the log insert and its marker go in one transaction */
  readonly #transactions: boolean;
  readonly #listeners = new Set<(events: CommittedEvent[]) => void>();
  readonly #log: Collection<LogDoc>;
  readonly #commits: Collection<CommitDoc>;
  readonly #hints: Collection<{ _id: string; cursor: number }>;
  readonly #entities: Collection<EntityDoc>;
  readonly #idem: Collection<IdemDoc>;
  readonly #idemAttempts: Collection<{ _id: string }>;
  readonly #idemDone: Collection<IdemDoneDoc>;
  readonly #decisions: Collection<DecisionDoc>;
  readonly #costs: Collection<CostDoc>;
  readonly #approvals: Collection<ApprovalDoc>;
  readonly #audit: Collection<AuditDoc>;
  /** the end of a log document this process has seen committed: the next append tries `end + 1` */
  #end = 0;
  #endSaved = 0;
  /** everything at or below it was seen published (a hint: the `published` flags are the truth) */
  #publishedUpTo = 0;
  /** event id → log `_id`, for markPublished (filled by pendingEvents and this process's appends) */
  readonly #eventPos = new Map<string, { at: string; events: string[] }>();
  #publishedSaved = 0;
  #publishedReadAt = 0;

  #marking: Promise<unknown> | null = null;
  /** this process's appends take cursors one at a time (they would only collide with each other) */
  #tail: Promise<unknown> = Promise.resolve();

  private constructor(client: MongoClient, db: Db, url: string, opts: MongoStoreOptions, wc: WriteConcernSettings, server: string, replicaSet: string | null) {
    this.#client = client;
    this.#db = db;
    this.#reg = opts.registry;
    this.#max = opts.maxDocumentBytes;
    this.#atomicUpdates = !server.startsWith('ferretdb');
    this.#transactions = !!replicaSet && this.#atomicUpdates;
    this.#log = db.collection('log');
    this.#commits = db.collection('commits');
    this.#hints = db.collection('log_hints');
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
      durability: {
        writeConcern: wc,
        transactions: this.#transactions ? `replica set ${replicaSet}: log insert + marker in one transaction` : 'none (one document per append)',
        server,
        atomicConditionalUpdates: this.#atomicUpdates,
      },
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
      const hello = (await db.admin().command({ hello: 1 }).catch(() => db.admin().command({ isMaster: 1 }))) as { setName?: string };
      const store = new MongoStore(client, db, url, opts, wc, server, typeof hello.setName === 'string' ? hello.setName : null);
      await store.#ensureIndexes();
      await store.#migrateLegacy();
      await store.#loadHints();
      return withErrorClassification(store);
    } catch (err) {
      await client.close().catch(() => undefined);
      if (err instanceof StateError) throw err;
      throw new StateError('STATE_UNAVAILABLE', `cannot open MongoDB state store at ${redactMongoUrl(url)}: ${(err as Error).message}`, { cause: err, retryable: true });
    }
  }

  /**
   * The unique indexes arbitrate; the others serve reads, which FerretDB never pushes down to an
   * index (it only maintains them, at a cost on every insert): those are made on MongoDB only.
   */
  async #ensureIndexes(): Promise<void> {
    await Promise.all([
      this.#log.createIndex({ vkey: 1 }, { unique: true, name: 'vkey' }),
      ...(this.#atomicUpdates
        ? [
            this.#log.createIndex({ entityKey: 1 }, { name: 'entity' }),
            this.#commits.createIndex({ entityKey: 1, firstVersion: 1 }, { unique: true, name: 'entity_version' }),
            this.#entities.createIndex({ entityType: 1, updatedAt: -1 }, { name: 'type_updated' }),
            this.#entities.createIndex({ entityId: 1 }, { name: 'entity_id' }),
            this.#costs.createIndex({ time: -1 }, { name: 'time' }),
            this.#costs.createIndex({ runId: 1 }, { name: 'run' }),
            this.#costs.createIndex({ customerId: 1 }, { name: 'customer' }),
            this.#approvals.createIndex({ state: 1, deadlineMs: 1 }, { name: 'state_deadline' }),
          ]
        : []),
    ]);
  }

  /**
   * Stores written before the `log` collection kept the events in `commits`: copy them into the
   * log once (same cursors), keeping the old documents as markers. Stop every process of the old
   * version before opening such a store with this one.
   */
  async #migrateLegacy(): Promise<void> {
    if (await this.#hints.findOne({ _id: 'migrated' })) return;
    if (!(await this.#log.findOne({}, { projection: { _id: 1 } }))) {
      for await (const c of this.#commits.find({ events: { $exists: true } })) {
        const doc: LogDoc = {
          _id: pos(c.firstCursor),
          vkey: c._id,
          entityKey: c.entityKey,
          entityType: c.entityType,
          entityId: c.entityId,
          firstVersion: c.firstVersion,
          lastVersion: c.lastVersion,
          firstCursor: c.firstCursor,
          lastCursor: c.lastCursor,
          time: c.time ?? nowIso(),
          meta: c.meta ?? null,
          events: c.events ?? [],
          published: c.published ?? false,
        };
        await this.#log.insertOne(doc).catch((err: unknown) => {
          if (!isDup(err)) throw err;
        });
      }
    }
    await this.#hints.insertOne({ _id: 'migrated', cursor: 0 }).catch((err: unknown) => {
      if (!isDup(err)) throw err;
    });
  }

  async #loadHints(): Promise<void> {
    const [end, pub] = await Promise.all([this.#hints.findOne({ _id: 'end' }), this.#hints.findOne({ _id: 'published' })]);
    this.#end = this.#endSaved = end?.cursor ?? 0;
    this.#publishedUpTo = this.#publishedSaved = pub?.cursor ?? 0;
    this.#publishedReadAt = Date.now();
    await this.#advanceEnd();
  }

  /** Moves {@link #end} to the log's head, by `_id` lookups from the end already known. */
  async #advanceEnd(): Promise<number> {
    for (;;) {
      const d = await this.#log.findOne({ _id: pos(this.#end + 1) }, { projection: { lastCursor: 1 } });
      if (!d) break;
      this.#end = Math.max(this.#end, d.lastCursor);
    }
    // other processes start from the saved end (it may move back under a race: only slower)
    if (this.#end - this.#endSaved >= 64) {
      this.#endSaved = this.#end;
      await this.#hints.updateOne({ _id: 'end' }, { $set: { cursor: this.#end } }, { upsert: true }).catch(() => undefined);
    }
    return this.#end;
  }

  // ---- entities ----------------------------------------------------------------------------

  #toEvents(c: LogDoc): CommittedEvent[] {
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

  /**
   * The entity's log documents in version order: its markers walked by `_id` from version 1 (or,
   * when compaction removed the first ones, found by a scan of the markers), then the log by `_id`.
   */
  async #entityLog(k: string, upTo = Infinity): Promise<LogDoc[]> {
    const marks: CommitDoc[] = [];
    let m = await this.#commits.findOne({ _id: `${k}#1` });
    if (m) {
      while (m && m.firstVersion <= upTo) {
        marks.push(m);
        m = await this.#commits.findOne({ _id: `${k}#${m.lastVersion + 1}` });
      }
    } else {
      const filter: Filter<CommitDoc> = { entityKey: k };
      if (upTo !== Infinity) filter.firstVersion = { $lte: upTo };
      marks.push(...(await this.#commits.find(filter).sort({ firstVersion: 1 }).toArray()));
    }
    const docs = await Promise.all(marks.map((c) => this.#log.findOne({ _id: pos(c.firstCursor) })));
    return docs.filter((d): d is LogDoc => !!d && !d.stub && d.entityKey === k);
  }

  async #allEvents(type: string, id: string, upTo = Infinity): Promise<CommittedEvent[]> {
    return (await this.#entityLog(key(type, id), upTo)).flatMap((c) => this.#toEvents(c));
  }

  /** The markers of `k` rebuilt from the log (a scan: after a crash between log insert and marker); returns its version. */
  async #repairMarkers(k: string): Promise<number> {
    let version = 0;
    for await (const d of this.#log.find({ entityKey: k }, { projection: { events: 0 } })) {
      if (d.stub) continue;
      version = Math.max(version, d.lastVersion);
      await this.#commits.insertOne(markerOf(d)).catch((err: unknown) => {
        if (!isDup(err)) throw err;
      });
    }
    return version;
  }

  /** The conflict for an append at `expected` whose version was taken, with the entity's actual version. */
  async #conflict(type: string, id: string, expected: number, cause?: unknown): Promise<VersionConflictError> {
    const k = key(type, id);
    let actual = await this.#actualVersion(k);
    // the markers do not show the append that won yet (in flight, or its writer crashed): the log does
    if (actual === expected) actual = Math.max(actual, await this.#repairMarkers(k));
    return new VersionConflictError(type, id, expected, actual, cause);
  }

  /**
   * Inserts one log document at the next free cursor, its version arbitrated by `vkey`, then its
   * marker. Returns the committed events, or null when another append took `firstVersion`.
   */
  async #commit(k: string, type: string, id: string, firstVersion: number, events: ReadonlyArray<Omit<CommittedEvent, 'cursor'>>, time: string, meta: EventMeta | null, published: boolean, alongside?: () => Promise<void>): Promise<CommittedEvent[] | null> {
    const vkey = `${k}#${firstVersion}`;
    const n = events.length;
    let doc!: LogDoc;
    const take = async (): Promise<CommittedEvent[] | null> => {
      for (let attempt = 0; ; attempt++) {
        const first = this.#end + 1;
        const committed = events.map((e, i) => ({ ...e, cursor: first + i }));
        doc = {
          _id: pos(first),
          vkey,
          entityKey: k,
          entityType: type,
          entityId: id,
          firstVersion,
          lastVersion: firstVersion + n - 1,
          firstCursor: first,
          lastCursor: first + n - 1,
          time,
          meta,
          events: committed.map((e) => ({ eventId: e.eventId, version: e.version, cursor: e.cursor, type: e.type, data: toStored(e.data), schemaVersion: e.schemaVersion })),
          published,
        };
        try {
          if (this.#transactions) await this.#inTransaction(async (session) => {
            await this.#log.insertOne(doc, { session });
            await this.#commits.insertOne(markerOf(doc), { session });
          });
          else await this.#log.insertOne(doc);
          this.#end = Math.max(this.#end, doc.lastCursor);
          return committed;
        } catch (err) {
          if (!isDup(err)) throw this.#wrap(err);
          const at = await this.#log.findOne({ _id: doc._id }, { projection: { vkey: 1, lastCursor: 1, 'events.eventId': 1 } });
          if (!at) return null; // nothing at this cursor: the version is taken
          if (at.vkey === vkey) {
            // a retried insert of this very append landed, or another append took the version here
            if (at.events[0]?.eventId !== committed[0]?.eventId) return null;
            this.#end = Math.max(this.#end, at.lastCursor);
            return committed;
          }
          // another append took the cursor: go after it (and whatever followed it)
          this.#end = Math.max(this.#end, at.lastCursor);
          await this.#advanceEnd();
          if (attempt >= 1000) throw new StoreBusyError(`append to ${k}: the change-log cursor stayed contended for ${attempt} attempts`, err);
        }
      }
    };
    const run = this.#tail.then(take, take);
    this.#tail = run.catch(() => undefined);
    const committed = await run;
    if (committed) {
      // `alongside` (a new entity's projection insert) runs with the marker insert
      const marker = this.#transactions
        ? Promise.resolve()
        : this.#commits.insertOne(markerOf(doc)).then(
            () => undefined,
            (err: unknown) => {
              if (!isDup(err)) throw err;
            },
          );
      await Promise.all([marker, alongside?.().catch(() => undefined)]);
    }
    if (committed) this.#rememberPositions(committed.map((e) => e.eventId), doc._id);
    return committed;
  }

  #rememberPositions(eventIds: string[], at: string): void {
    const rec = { at, events: eventIds };
    for (const id of eventIds) this.#eventPos.set(id, rec);
    // bounded: events another process published are never marked here
    if (this.#eventPos.size > 20_000) for (const id of [...this.#eventPos.keys()].slice(0, 5_000)) this.#eventPos.delete(id);
  }

  async #inTransaction(fn: (session: ClientSession) => Promise<void>): Promise<void> {
    const session = this.#client.startSession();
    try {
      await session.withTransaction(fn);
    } finally {
      await session.endSession();
    }
  }

  /** `fresh`: the entity's first append (an insert, which overwrites nothing). */
  async #writeProjection(type: string, id: string, s: EntitySnapshot, searchText: string, fresh = false): Promise<void> {
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
      // a new entity's first projection is an insert (an upsert with a filter beyond `_id` scans on FerretDB)
      // FerretDB also scans for an update whose filter goes beyond `_id` (14 ms at 100 documents,
      // growing with the collection), and its conditional updates are not atomic anyway: there
      // the update is by `_id`, and a writer that finds a later commit afterwards repairs the
      // projection (#checkProjection); reads never trust a projection behind the markers
      const filter = this.#atomicUpdates ? { _id: key(type, id), version: { $lt: s.version } } : { _id: key(type, id) };
      if (fresh || s.version === 1 || !(await this.#entities.updateOne(filter, { $set: doc })).matchedCount) await this.#entities.insertOne({ _id: key(type, id), ...doc });
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
    if (s) await this.#writeProjection(type, id, s, searchTextOf(def, s.state)).then(() => this.#checkProjection(type, id, s.version));
    return s;
  }

  async append<S = Record<string, unknown>>(entityType: string, entityId: string, expectedVersion: number, events: EventInput[], meta: EventMeta, opts: AppendOptions = {}): Promise<AppendResult<S>> {
    // no multi-document transactions: the completion goes first (a completed task whose append
    // then fails is advanced again from its recorded result when it is redelivered; the same
    // claim completing again after a conflict is not an error)
    // the completion's cost record is written while the append goes on
    const def = this.#reg.get(entityType);
    assertId('entity id', entityId);
    if (!Number.isInteger(expectedVersion) || expectedVersion < 0) throw new InvalidQueryError(`expected version must be an integer >= 0 (got ${String(expectedVersion)})`);
    const k = key(entityType, entityId);
    // the projection is read while the completion is written (one round trip less; nothing is
    // written to the log before the completion landed)
    const basis = basisAt(opts.basis, entityType, entityId, expectedVersion);
    const reading = expectedVersion > 0 && !basis ? this.#entities.findOne({ _id: k }) : null;
    reading?.catch(() => undefined);
    const cost = opts.complete ? (await this.#complete(opts.complete.key, opts.complete.token, opts.complete.result, opts.complete.cost, true, opts.complete)).cost : null;
    let snap: EntitySnapshot | null = null;
    if (expectedVersion === 0 && events[0]?.type !== 'created') {
      // refused either way: a conflict if the entity exists, else the plan says why
      const actual = await this.#actualVersion(k);
      if (actual !== 0) throw new VersionConflictError(entityType, entityId, 0, actual);
    } else if (basis) {
      // the caller's read of the expected version: the insert refuses a version taken since
      snap = basis;
    } else if (expectedVersion > 0) {
      // the projection at the expected version is enough: the insert refuses a version taken since
      const p = await reading!;
      if (p && p.version === expectedVersion) snap = { version: p.version, state: fromStored(p.state), deleted: p.deleted, createdAt: p.createdAt, updatedAt: p.updatedAt, schemaVersion: p.schemaVersion };
      else {
        const { version: actual, proj } = await this.#head(k, p);
        if (actual !== expectedVersion) throw new VersionConflictError(entityType, entityId, expectedVersion, actual);
        snap = await this.#snapshot(entityType, entityId, actual, proj);
      }
    }
    const plan = planAppend(def, entityId, snap, events, meta, this.#max);
    // a new entity's projection is an insert (it overwrites nothing): written with the marker
    const first = expectedVersion === 0 ? () => this.#writeProjection(entityType, entityId, plan.snapshot, plan.searchText, true) : undefined;
    const committed = await this.#commit(k, entityType, entityId, expectedVersion + 1, plan.events, plan.time, plan.meta, false, first);
    if (!committed) throw await this.#conflict(entityType, entityId, expectedVersion);
    // a failure here leaves the log right and the projection behind: get() and the relay repair it
    if (!first) {
      // the check for a later commit (a repair where updates are not atomic) is not waited for
      await this.#writeProjection(entityType, entityId, plan.snapshot, plan.searchText)
        .then(() => void this.#checkProjection(entityType, entityId, plan.snapshot.version).catch(() => undefined))
        .catch(() => undefined);
    }
    await cost;
    for (const l of this.#listeners) l(committed);
    return { events: committed, entity: toEntity<S>(entityType, entityId, plan.snapshot) };
  }

  /** Where conditional updates are not atomic: if a later append exists, an older writer may have overwritten its projection. */
  async #checkProjection(type: string, id: string, version: number): Promise<void> {
    if (this.#atomicUpdates) return;
    if (await this.#commits.findOne({ _id: `${key(type, id)}#${version + 1}` }, { projection: { _id: 1 } })) await this.#verifyProjection(type, id);
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

  /**
   * Log documents from cursor `from` on, in order, up to `max` of them: `_id` lookups in
   * batches (FerretDB) or one range read (MongoDB), stopping at the first missing position (the
   * log is a gap-free prefix, so nothing follows it). `from` may fall inside an append's events:
   * that append comes first.
   */
  async #readLog(from: number, max: number): Promise<LogDoc[]> {
    const out: LogDoc[] = [];
    let next = from;
    if (next > 1) {
      // the append holding `from` may start before it (at most 1000 events per append)
      const first = await this.#log.findOne({ _id: pos(next) });
      if (first) out.push(first);
      else {
        let found: LogDoc | null = null;
        for (let back = next - 1; back >= Math.max(1, next - 1000) && !found; back -= READ_BATCH) {
          const ids = Array.from({ length: Math.min(READ_BATCH, back - Math.max(1, next - 1000) + 1) }, (_, i) => back - i);
          const docs = await Promise.all(ids.map((c) => this.#log.findOne({ _id: pos(c) })));
          found = docs.find((d) => d !== null) ?? null;
        }
        if (!found || found.lastCursor < next) return out;
        out.push(found);
      }
      next = out[0]!.lastCursor + 1;
    }
    let batch = 2;
    while (out.length < max) {
      // small at first (a relay pass usually finds one or two new appends), doubling while full
      const want = Math.min(batch, max - out.length);
      batch = Math.min(READ_BATCH, batch * 2);
      const start = next;
      let stop = false;
      if (this.#atomicUpdates) {
        const docs = await this.#log.find({ _id: { $gte: pos(start) } }).sort({ _id: 1 }).limit(want).toArray();
        for (const d of docs) {
          if (d.firstCursor !== next) break; // not contiguous: past the head
          out.push(d);
          next = d.lastCursor + 1;
        }
        stop = docs.length < want || next === start || out.at(-1)?.firstCursor !== docs.at(-1)?.firstCursor;
      } else {
        const docs = await Promise.all(Array.from({ length: want }, (_, i) => this.#log.findOne({ _id: pos(start + i) })));
        for (let i = 0; i < want && out.length < max; i++) {
          if (start + i < next) continue; // inside a multi-event append
          const d = docs[i];
          if (!d) {
            stop = true; // the first missing position: the head
            break;
          }
          out.push(d);
          next = d.lastCursor + 1;
        }
      }
      if (stop) break;
    }
    this.#end = Math.max(this.#end, out.at(-1)?.lastCursor ?? 0);
    return out;
  }

  async changes(q: ChangesQuery = {}): Promise<ChangesPage> {
    const since = clampInt(q.since, 0, 0, Number.MAX_SAFE_INTEGER, 'since');
    const limit = clampInt(q.limit, 100, 1, 10_000, 'limit');
    const types = q.types ?? [];
    for (const t of types) this.#reg.get(t);
    const want = types.length ? new Set(types) : null;
    const all: CommittedEvent[] = [];
    let from = since + 1;
    for (;;) {
      const docs = await this.#readLog(from, Math.min(limit + 1, 1000));
      for (const d of docs) if (!d.stub && (!want || want.has(d.entityType))) all.push(...this.#toEvents(d).filter((e) => e.cursor > since));
      if (docs.length === 0 || all.length > limit) break;
      from = docs.at(-1)!.lastCursor + 1;
    }
    const events = all.slice(0, limit);
    return { events, cursor: events.at(-1)?.cursor ?? since, hasMore: all.length > limit };
  }

  async headCursor(): Promise<number> {
    return this.#advanceEnd();
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
    // one pass over the log (a scan), grouped by entity in cursor order (= version order)
    const byEntity = new Map<string, LogDoc[]>();
    for await (const c of this.#log.find({ entityType: { $in: known } })) {
      if (c.stub) continue;
      const list = byEntity.get(c.entityKey) ?? [];
      list.push(c);
      byEntity.set(c.entityKey, list);
    }
    for (const list of byEntity.values()) {
      batch = list.sort((x, y) => x.firstCursor - y.firstCursor).flatMap((c) => this.#toEvents(c));
      await flush();
    }
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

  /**
   * Unpublished events in cursor order, read from the lowest position known published on (a
   * hint kept per process and in `log_hints`; the `published` flags are the truth).
   */
  async pendingEvents(limit = 500): Promise<CommittedEvent[]> {
    const n = clampInt(limit, 500, 1, 10_000, 'limit');
    // marks in flight from this store object land first (one at a time they are not atomic)
    if (this.#marking) {
      await this.#marking;
      await new Promise((r) => setImmediate(r));
    }
    // other processes' progress: read now and then (the flags are the truth; the hint only saves reads)
    if (Date.now() - this.#publishedReadAt > 5_000) {
      this.#publishedReadAt = Date.now();
      const saved = await this.#hints.findOne({ _id: 'published' });
      this.#publishedUpTo = Math.max(this.#publishedUpTo, saved?.cursor ?? 0);
    }
    let from = this.#publishedUpTo + 1;
    const pending: LogDoc[] = [];
    let prefix = from - 1;
    let count = 0;
    for (;;) {
      const docs = await this.#readLog(from, Math.min(1000, n + 1));
      for (const d of docs) {
        if (d.published || d.stub) {
          if (pending.length === 0) prefix = d.lastCursor;
          continue;
        }
        pending.push(d);
        count += d.events.length;
        if (count >= n) break;
      }
      if (docs.length === 0 || count >= n) break;
      from = docs.at(-1)!.lastCursor + 1;
    }
    if (prefix > this.#publishedUpTo) {
      this.#publishedUpTo = prefix;
      if (prefix - this.#publishedSaved >= 64) {
        this.#publishedSaved = prefix;
        await this.#hints.updateOne({ _id: 'published' }, { $set: { cursor: prefix } }, { upsert: true }).catch(() => undefined);
      }
    }
    const now = Date.now();
    for (const c of pending) {
      this.#rememberPositions(c.events.map((e) => e.eventId), c._id);
      // a crash between log insert and marker or projection also left it unpublished: repair here
      if (now - Date.parse(c.time) < REPAIR_AFTER_MS) continue;
      const [m, p] = await Promise.all([this.#commits.findOne({ _id: c.vkey }, { projection: { _id: 1 } }), this.#entities.findOne({ _id: c.entityKey }, { projection: { version: 1 } })]);
      if (!m) await this.#repairMarkers(c.entityKey);
      if (!p || p.version < c.lastVersion) await this.get(c.entityType, c.entityId);
    }
    // marks this store object began while we read may have landed in what we read: let them settle
    if (this.#marking) await this.#marking;
    await new Promise((r) => setImmediate(r));
    return pending.flatMap((c) => this.#toEvents(c)).slice(0, n);
  }

  async markPublished(eventIds: string[]): Promise<void> {
    if (eventIds.length === 0) return;
    const run = this.#mark(eventIds);
    const all = Promise.all([this.#marking?.catch(() => undefined), run.catch(() => undefined)]).then(() => undefined);
    this.#marking = all;
    try {
      await run;
    } finally {
      if (this.#marking === all) this.#marking = null;
    }
  }

  async #mark(eventIds: string[]): Promise<void> {
    const ids = new Set(eventIds);
    const known = new Map<string, string[]>();
    const unknown: string[] = [];
    for (const id of eventIds) {
      const rec = this.#eventPos.get(id);
      if (rec) known.set(rec.at, rec.events);
      else unknown.push(id);
    }
    const docs: Array<{ _id: string; events: string[] }> = [...known].map(([at, events]) => ({ _id: at, events }));
    // ids this process did not read or write: a scan
    if (unknown.length) docs.push(...(await this.#log.find({ 'events.eventId': { $in: unknown } }, { projection: { 'events.eventId': 1 } }).toArray()).map((d) => ({ _id: d._id, events: d.events.map((e) => e.eventId) })));
    // an append is published only when every one of its events is
    const done = docs.filter((c) => c.events.every((e) => ids.has(e)));
    await Promise.all(done.map((c) => this.#log.updateOne({ _id: c._id }, { $set: { published: true } })));
    for (const c of done) for (const e of c.events) this.#eventPos.delete(e);
  }

  // ---- idempotency -------------------------------------------------------------------------

  async claim(k: string, opts: { leaseMs?: number } = {}): Promise<ClaimResult> {
    if (typeof k !== 'string' || !k || k.length > 500) throw new InvalidQueryError('idempotency key must be a non-empty string of at most 500 characters');
    const leaseMs = clampInt(opts.leaseMs, DEFAULT_LEASE_MS, 1, 7 * 86_400_000, 'leaseMs');
    for (let i = 0; i < 10; i++) {
      const [done, cur] = await Promise.all([this.#idemDone.findOne({ _id: k }), this.#idem.findOne({ _id: k })]);
      if (done) return { status: 'completed', key: k, result: JSON.parse(done.resultJson), completedAt: done.completedAt };
      const now = Date.now();
      const token = newId();
      const leaseUntil = now + leaseMs;
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

  async complete(k: string, token: string, result: unknown = null, opts: CompleteOptions = {}): Promise<void> {
    await (await this.#complete(k, token, result, opts.cost, false, opts)).cost;
  }

  /**
   * `again`: the completion of an append being retried after a conflict, which may have landed
   * already with the same token. Unclaimed: no claim to check; the insert of the completion
   * record decides (one write).
   */
  /** Resolves once the completion landed, with the write of its cost (not awaited here). */
  async #complete(k: string, token: string, result: unknown, cost: CostInput | undefined, again: boolean, o: Pick<CompleteOptions, 'unclaimed' | 'attempt'> = {}): Promise<{ cost: Promise<void> }> {
    const cur = o.unclaimed ? { attempt: Math.max(1, Math.trunc(o.attempt ?? 1)), createdAt: nowIso(), token } : await this.#idem.findOne({ _id: k });
    if (!cur || cur.token !== token) throw new IdempotencyLeaseLostError(k, await this.#leaseLostReason(k));
    try {
      await this.#idemDone.insertOne({ _id: k, attempt: cur.attempt, token, resultJson: JSON.stringify(result ?? null), createdAt: cur.createdAt, completedAt: nowIso() });
    } catch (err) {
      if (!isDup(err)) throw err;
      // this very claim completed already (its append then lost a version race and is retried): done
      const done = await this.#idemDone.findOne({ _id: k }, { projection: { token: 1 } });
      if (again && done?.token === token) return { cost: Promise.resolve() };
      throw new IdempotencyLeaseLostError(k, 'already completed by another claim');
    }
    // no multi-document transactions: the cost follows the completion that won (only the winner gets here)
    const written = cost ? this.recordCost(cost).then(() => undefined) : Promise.resolve();
    written.catch(() => undefined); // awaited by the caller; never an unhandled rejection meanwhile
    return { cost: written };
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
    // a scan of the log: erasure also reaches an append whose marker a crash left unwritten
    const commits = (await this.#log.find({ entityKey: k }).toArray()).filter((c) => !c.stub).sort((x, y) => x.firstCursor - y.firstCursor);
    // markers of stores from before the log kept a copy of the events: drop it
    await this.#commits.updateMany({ entityKey: k, events: { $exists: true } }, { $unset: { events: '' } });
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
        await this.#log.updateOne({ _id: c._id }, { $set: { events } });
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
      const got = await this.#commit(k, entityType, entityId, plan.event.version, [plan.event], plan.event.time, plan.event.meta, false);
      if (!got) {
        // another append took the version: scrub again (it may have written more) and retry
        if (attempt >= 50) throw await this.#conflict(entityType, entityId, plan.event.version - 1);
        await new Promise((r) => setTimeout(r, Math.random() * Math.min(20, attempt + 1)));
        continue;
      }
      const committed = got[0]!;
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
    for await (const c of this.#log.find({}, { projection: { entityKey: 1, entityType: 1, entityId: 1, events: 1 } })) {
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
    const commits = await this.#entityLog(k, actual);
    const events = commits.flatMap((c) => c.events);
    if (events.length === 1 && events[0]!.type === COMPACTED_EVENT) return { ...base, skipped: 'compacted' };
    if (commits.some((c) => !c.published)) return { ...base, skipped: 'unpublished' };
    const cur = (await this.#snapshot(entityType, entityId, actual, proj))!;
    const plan = planCompactedEvent(def, entityId, cur, { events: events.length, firstCursor: events[0]!.cursor, lastCursor: events.at(-1)!.cursor }, opts.reason, { actor });
    const e = plan.event;
    // the unique version arbitrates a racing append
    if (!(await this.#commit(k, entityType, entityId, e.version, [e], e.time, e.meta, true))) throw await this.#conflict(entityType, entityId, actual);
    await this.#writeProjection(entityType, entityId, plan.snapshot, plan.searchText).then(() => this.#checkProjection(entityType, entityId, plan.snapshot.version));
    // the old appends become stubs: their cursors stay taken (the log has no holes), their events go
    await Promise.all(commits.map((c) => this.#log.updateOne({ _id: c._id }, { $set: { stub: true, events: [] } })));
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

