/**
 * The state store's port: what both adapters (SQLite, MongoDB) implement and the contract
 * suite checks. Every method is async on both adapters.
 */

/** Who did it. */
export interface Actor {
  kind: 'agent' | 'human' | 'system';
  id: string;
}

/** Why and where an append happened; the store adds the time. */
export interface EventMeta {
  actor: Actor;
  /** id of the message (task, inbound email, ...) that caused this change */
  causationId?: string;
  /** the workflow run or thread this belongs to */
  correlationId?: string;
  /** W3C trace id of the span that wrote it */
  traceId?: string;
  idempotencyKey?: string;
}

/** An event to append: `created` (data = the whole state), `updated` (data = JSON merge patch), `deleted`, or a type's own event. */
export interface EventInput {
  type: string;
  data?: unknown;
}

/** An event as stored. */
export interface CommittedEvent {
  /** unique; also the `Nats-Msg-Id` when published */
  eventId: string;
  entityType: string;
  entityId: string;
  /** 1 for the entity's first event, then +1 per event */
  version: number;
  type: string;
  data: unknown;
  /** schema version of the entity type when the event was written */
  schemaVersion: number;
  meta: EventMeta;
  /** ISO 8601, set by the store */
  time: string;
  /** position in the global change log (increasing; gaps are possible on MongoDB) */
  cursor: number;
}

/** An entity's state at some version (current, or a past one from `getAt`). */
export interface Entity<S = Record<string, unknown>> {
  entityType: string;
  entityId: string;
  version: number;
  state: S;
  deleted: boolean;
  createdAt: string;
  updatedAt: string;
  schemaVersion: number;
}

/** Extra work committed with an append (atomically on SQLite; just before it on MongoDB). */
export interface AppendOptions {
  /**
   * complete an idempotency claim, as `complete(key, token, result, { cost })` would; with
   * `unclaimed` (and `attempt`) there was no claim: see {@link CompleteOptions.unclaimed}
   */
  complete?: { key: string; token: string; result?: unknown; cost?: CostInput } & Pick<CompleteOptions, 'unclaimed' | 'attempt'>;
  /**
   * The entity as the caller read it (`get`) and left it, unmodified: when its version is the
   * expected version, the adapter plans the append from it instead of reading the entity again
   * (one read less per step for the workflow engine). The expected version is checked as always.
   */
  basis?: Entity;
}

/** Options of `complete`. */
export interface CompleteOptions {
  /** recorded with the completion, atomically where the adapter can (one record per completed task, never two) */
  cost?: CostInput;
  /**
   * The work ran without a claim (a workflow step: its run's expected-version append decides
   * which delivery's outcome counts). `token` is then this attempt's own id. The key is recorded
   * completed whether it was absent or claimed by someone still running; it fails with
   * STATE_IDEMPOTENCY_LEASE_LOST only when it is completed already (by another attempt).
   */
  unclaimed?: boolean;
  /** the attempt number recorded with an unclaimed completion (the delivery count); default 1 */
  attempt?: number;
}

export interface AppendResult<S = Record<string, unknown>> {
  entity: Entity<S>;
  events: CommittedEvent[];
}

export interface ChangesQuery {
  /** return events with cursor > since (0 or omitted: from the start) */
  since?: number;
  /** only these entity types */
  types?: string[];
  /** default 100, at most 10,000 */
  limit?: number;
}

export interface ChangesPage {
  events: CommittedEvent[];
  /** pass as `since` next time; equals `since` when nothing new is visible */
  cursor: number;
  /** more events are already visible past `cursor` */
  hasMore: boolean;
}

/** Filter on state fields (dotted paths). A bare value means `$eq`. */
export type FieldCondition =
  | string
  | number
  | boolean
  | null
  | {
      $eq?: string | number | boolean | null;
      $ne?: string | number | boolean | null;
      $gt?: string | number;
      $gte?: string | number;
      $lt?: string | number;
      $lte?: string | number;
      $in?: (string | number | boolean)[];
      /** the array field contains this value */
      $contains?: string | number | boolean;
      $exists?: boolean;
    };

export interface EntityQuery {
  /** state fields (`status`, `price.amount`); also `id`, `version`, `createdAt`, `updatedAt` */
  filter?: Record<string, FieldCondition>;
  /** in priority order, e.g. `{ priority: 'desc', updatedAt: 'asc' }`; ties break on id */
  sort?: Record<string, 'asc' | 'desc'>;
  /** default 50, at most 1000 */
  limit?: number;
  offset?: number;
  /** include deleted entities (default false) */
  includeDeleted?: boolean;
}

export interface QueryPage<S = Record<string, unknown>> {
  items: Entity<S>[];
  total: number;
  /** offset of the next page, or null when this was the last */
  nextOffset: number | null;
}

export interface SearchOptions {
  types?: string[];
  /** default 20, at most 1000 */
  limit?: number;
  includeDeleted?: boolean;
}

// ---- idempotency ---------------------------------------------------------------------------

export type ClaimResult =
  /** you own the side effect: do it, then `complete(key, token, result)` (or `release`) */
  | { status: 'claimed'; key: string; token: string; attempt: number; leaseUntil: string }
  /** someone else holds a live lease: do not run it; try again after `leaseUntil` */
  | { status: 'running'; key: string; attempt: number; leaseUntil: string }
  /** done before: never run it again; here is its recorded result */
  | { status: 'completed'; key: string; result: unknown; completedAt: string };

export interface IdempotencyRecord {
  key: string;
  status: 'running' | 'completed';
  attempt: number;
  leaseUntil: string | null;
  result: unknown;
  createdAt: string;
  completedAt: string | null;
}

// ---- cost ledger ---------------------------------------------------------------------------

export interface CostInput {
  agent?: string;
  capability?: string;
  runId?: string;
  customerId?: string;
  entityType?: string;
  entityId?: string;
  model?: string;
  tokensIn?: number;
  tokensOut?: number;
  tokensCached?: number;
  costUsd?: number;
  computeMs?: number;
  /** free-form, e.g. `{ tier: 1, reason: 'low confidence' }` */
  details?: Record<string, unknown>;
  traceId?: string;
  /** default now */
  time?: string;
}

export interface CostRecord extends Required<Pick<CostInput, 'tokensIn' | 'tokensOut' | 'tokensCached' | 'costUsd' | 'computeMs'>> {
  id: string;
  time: string;
  agent: string | null;
  capability: string | null;
  runId: string | null;
  customerId: string | null;
  entityType: string | null;
  entityId: string | null;
  model: string | null;
  traceId: string | null;
  details: Record<string, unknown> | null;
}

export type CostDimension = 'agent' | 'capability' | 'runId' | 'customerId' | 'entityType' | 'entityId' | 'model';

export interface CostQuery {
  /** ISO time, inclusive */
  since?: string;
  /** ISO time, exclusive */
  until?: string;
  agent?: string;
  capability?: string;
  runId?: string;
  customerId?: string;
  entityType?: string;
  entityId?: string;
  model?: string;
  /** group the totals by these dimensions (none: one grand total) */
  by?: CostDimension[];
  /** also return up to this many matching records, newest first (default 0) */
  records?: number;
}

export interface CostTotals {
  count: number;
  tokensIn: number;
  tokensOut: number;
  tokensCached: number;
  costUsd: number;
  computeMs: number;
}

export interface CostReport {
  totals: CostTotals;
  groups: { key: Partial<Record<CostDimension, string | null>>; totals: CostTotals }[];
  records: CostRecord[];
}

// ---- approvals -----------------------------------------------------------------------------

/** `superseded`: replaced by a newer request for the same thing (e.g. a new message on the ticket); never sendable */
export type ApprovalState = 'pending' | 'approved' | 'rejected' | 'expired' | 'superseded';

export interface ApprovalInput {
  /** default a random id */
  id?: string;
  /** what would happen, e.g. `email.send` */
  action: string;
  /** what it concerns, e.g. `invoice/INV-42` */
  subject: string;
  payload?: unknown;
  requestedBy: Actor;
  /** ISO time after which the approval expires */
  deadline: string;
  correlationId?: string;
}

export interface Approval {
  id: string;
  state: ApprovalState;
  action: string;
  subject: string;
  payload: unknown;
  requestedBy: Actor;
  createdAt: string;
  deadline: string;
  correlationId: string | null;
  decidedAt: string | null;
  decidedBy: Actor | null;
  reason: string | null;
  /** the text the operator approved instead of the proposed one (an edit), if any */
  text: string | null;
}

export interface ApprovalDecision {
  decision: 'approved' | 'rejected' | 'superseded';
  by: Actor;
  reason?: string;
  /** an edited text approved instead of the proposed one */
  text?: string;
}

// ---- audit ---------------------------------------------------------------------------------

export interface AuditInput {
  actor: Actor;
  /** e.g. `approval.decided`, `email.sent`, `config.changed` */
  action: string;
  /** e.g. `invoice/INV-42` */
  subject: string;
  details?: Record<string, unknown>;
}

export interface AuditRecord {
  seq: number;
  time: string;
  actor: Actor;
  action: string;
  subject: string;
  details: Record<string, unknown>;
  /** hash of the previous record (64 zeros for the first) */
  prevHash: string;
  /** sha256 over the canonical JSON of every other field (v2: over `detailsDigest` instead of `details`) */
  hash: string;
  /**
   * 2: erasable details. The hash covers `detailsDigest`, not the details themselves:
   * `detailsDigest` = sha256 over the sorted `detailsLeaves`, one digest per leaf of the details
   * (a scalar, or an empty object or array): sha256(its own salt + its path + its canonical JSON).
   * An erasure replaces a leaf with `"[erased]"` and drops that leaf's salt; its digest stays, so
   * the chain verifies and every leaf that was not erased is still proven. Absent: a v1 record
   * (hash over the details).
   */
  v?: 2;
  detailsDigest?: string;
  /** the leaves' digests, sorted (covered by the hash through `detailsDigest`) */
  detailsLeaves?: string[];
  /** per leaf path (canonical JSON of its keys and indexes): its random salt; erased leaves have none */
  detailsSalts?: Record<string, string>;
  /** v2 records written before leaf digests: one salt over the canonical JSON of all the details */
  detailsSalt?: string;
  /** set when an erasure replaced personal data in `details` (not covered by the hash) */
  erased?: { time: string; reason: string };
}

export type AuditVerification =
  | { ok: true; records: number; head: string | null; erased?: number }
  | { ok: false; records: number; brokenAt: number; reason: string };

// ---- erasure (personal data) ---------------------------------------------------------------

/** The value an erasure writes in place of personal data. */
export type Tombstone = '[erased]';

export interface RedactEntityOptions {
  /**
   * Keys whose values are erased wherever they occur (at any depth) in the current state and in
   * every stored event's data; `'all'`: every string in them. Strings become `"[erased]"`
   * (inside arrays and objects too); numbers, booleans and null stay.
   */
  fields?: string[] | 'all';
  /** also erase every string that contains one of these values (case-insensitive, whole words) */
  values?: string[];
  /** recorded in the appended `erased` event (never the erased values) */
  reason: string;
  actor: Actor;
  /** mark the entity deleted by the `erased` event (default false) */
  delete?: boolean;
}

export interface RedactEntityResult {
  entityType: string;
  entityId: string;
  /** stored events whose data changed */
  events: number;
  /** the entity's version after the appended `erased` event (0: the entity does not exist) */
  version: number;
}

export interface RedactRecordsOptions {
  /** erase every string containing one of these values (case-insensitive, whole words), at least 3 characters each */
  values: string[];
  /** cost records of this customer: every string in `details` is erased, the amounts stay */
  customerId?: string;
  /** entity types whose events and states are also scanned for `values` (default: every type) */
  entityTypes?: string[];
  /** idempotency records whose key contains one of these (e.g. `:<runId>.`, a run's task ids): every string of their result is erased */
  keysContaining?: string[];
  /** approvals with one of these correlation ids (workflow runs): every string of their payload, text and reason is erased */
  correlationIds?: string[];
  reason: string;
  actor: Actor;
}

/** How many records of each kind an erasure changed (never the values). */
export interface RedactCounts {
  /** entities whose events or state held one of the values */
  entities: number;
  events: number;
  audit: number;
  /** v1 audit records holding a value: their hash covers the details, so they cannot be erased without breaking the chain */
  auditUnerasable: number;
  approvals: number;
  idempotency: number;
  costs: number;
}

export interface CompactResult {
  /** SQLite: the WAL was checkpointed and truncated (false: another process held a read transaction) */
  walTruncated?: boolean;
  /** SQLite: the file was rebuilt (VACUUM), leaving no free page with old content */
  vacuumed?: boolean;
  /** bytes of the store file after compaction, where known */
  bytes?: number;
}

// ---- retention -----------------------------------------------------------------------------

export interface CompactHistoryOptions {
  /** compact only if the entity is still at this version (else STATE_VERSION_CONFLICT) */
  expectedVersion?: number;
  /** recorded in the `compacted` event */
  reason: string;
  actor: Actor;
}

export interface CompactHistoryResult {
  entityType: string;
  entityId: string;
  /** events removed (0: nothing was done, see `skipped`) */
  events: number;
  /** the entity's version after the `compacted` event (unchanged when skipped; 0: no such entity) */
  version: number;
  /** why nothing was done: no events, already one `compacted` event, or events the outbox has not published yet */
  skipped?: 'missing' | 'compacted' | 'unpublished';
}

export interface PruneIdempotencyResult {
  /** completed records (completed before the cut-off) deleted */
  completed: number;
  /** abandoned claims (lease ended before the cut-off, never completed) deleted */
  abandoned: number;
}

// ---- the port ------------------------------------------------------------------------------

export interface StoreInfo {
  kind: 'sqlite' | 'mongodb';
  location: string;
  /** durability settings in effect, for logs and benchmarks */
  durability: Record<string, unknown>;
  maxDocumentBytes: number;
}

export interface StateStore {
  readonly info: StoreInfo;

  /** Appends events atomically if the entity is at `expectedVersion` (0 for a new entity). */
  append<S = Record<string, unknown>>(entityType: string, entityId: string, expectedVersion: number, events: EventInput[], meta: EventMeta, opts?: AppendOptions): Promise<AppendResult<S>>;
  /** Current state, or null when the entity has no events. */
  get<S = Record<string, unknown>>(entityType: string, entityId: string): Promise<Entity<S> | null>;
  /** State as it was at `version` (null when the entity never reached that version). */
  getAt<S = Record<string, unknown>>(entityType: string, entityId: string, version: number): Promise<Entity<S> | null>;
  /** Every event of the entity, oldest first. */
  history(entityType: string, entityId: string): Promise<CommittedEvent[]>;
  /** The entity types that have an entity with this id (for lookups without a type). */
  typesOf(entityId: string): Promise<string[]>;
  /** The global change log after a cursor: "what changed since I last looked". */
  changes(q?: ChangesQuery): Promise<ChangesPage>;
  /** The highest cursor readers can trust (everything at or below it is visible). */
  headCursor(): Promise<number>;
  query<S = Record<string, unknown>>(entityType: string, q?: EntityQuery): Promise<QueryPage<S>>;
  /** Case-insensitive: every word of `text` must occur in the type's search fields. Newest first. */
  search(text: string, opts?: SearchOptions): Promise<Entity[]>;
  /** Recomputes every projection from the events; returns the number of entities. */
  rebuildProjections(): Promise<number>;

  /** Registers a callback run after each local commit (the outbox relay uses it to publish at once). */
  onCommit(listener: (events: CommittedEvent[]) => void): () => void;
  /** Committed events not yet marked published, in cursor order. */
  pendingEvents(limit?: number): Promise<CommittedEvent[]>;
  markPublished(eventIds: string[]): Promise<void>;

  claim(key: string, opts?: { leaseMs?: number }): Promise<ClaimResult>;
  /** `opts.cost` is recorded with the completion, atomically where the adapter can (one record per completed task, never two) */
  complete(key: string, token: string, result?: unknown, opts?: CompleteOptions): Promise<void>;
  /** Gives up a claim (the side effect did not happen) so it can be claimed again at once. */
  release(key: string, token: string): Promise<void>;
  getIdempotency(key: string): Promise<IdempotencyRecord | null>;

  recordCost(rec: CostInput): Promise<CostRecord>;
  costs(q?: CostQuery): Promise<CostReport>;

  createApproval(a: ApprovalInput): Promise<Approval>;
  /** Only a pending approval before its deadline can be decided; exactly one decision wins. */
  decideApproval(id: string, d: ApprovalDecision): Promise<Approval>;
  getApproval(id: string): Promise<Approval | null>;
  listApprovals(q?: { state?: ApprovalState; limit?: number }): Promise<Approval[]>;
  /** Marks pending approvals past their deadline as expired; returns how many. */
  expireApprovals(now?: Date): Promise<number>;

  appendAudit(rec: AuditInput): Promise<AuditRecord>;
  exportAudit(opts?: { sinceSeq?: number; limit?: number }): Promise<AuditRecord[]>;
  verifyAudit(): Promise<AuditVerification>;

  /**
   * Erasure of personal data (the store is mechanism: the feature says which entities and
   * fields). Rewrites the entity's stored events' data and its current state, replacing the
   * named fields / values with `"[erased]"`, then appends an `erased` event (data: the field
   * names, counts and reason, never the values). On SQLite it runs with `secure_delete` on.
   */
  redactEntity(entityType: string, entityId: string, opts: RedactEntityOptions): Promise<RedactEntityResult>;
  /** Erases values from everything free-form: entity events and states, audit details (v2), approvals, idempotency results, cost details. */
  redactRecords(opts: RedactRecordsOptions): Promise<RedactCounts>;
  /** After an erasure: leaves no old copy behind in the store's files (SQLite: VACUUM unless `vacuum: false`, WAL checkpoint + truncate). */
  compact(opts?: { vacuum?: boolean }): Promise<CompactResult>;

  /**
   * Retention (shared-state/retention.ts): replaces every event of the entity by one `compacted`
   * event (version + 1) whose data holds the current state, so the change log stops growing with
   * old histories. The projection keeps its state, `createdAt` and `updatedAt`; `history()` then
   * returns the one event and `getAt()` of an earlier version null. Skipped while an event is
   * not yet published. The `compacted` event is stored as published: nothing changed, so it is
   * not announced on the bus.
   */
  compactHistory(entityType: string, entityId: string, opts: CompactHistoryOptions): Promise<CompactHistoryResult>;
  /** Retention: deletes idempotency records completed before `before`, and claims whose lease ended before it, at most `limit` (default 5000) per call. */
  pruneIdempotency(before: Date, opts?: { limit?: number }): Promise<PruneIdempotencyResult>;

  close(): Promise<void>;
}
