/**
 * Keel's system of record: event-sourced entities on SQLite (embedded) or MongoDB, a global
 * change log, projections with queries and search, an outbox to the bus, idempotency records,
 * the cost ledger, approvals and a hash-chained audit log — one port, two adapters.
 *
 * ```ts
 * import { openStore, startOutboxRelay } from './shared-state/index.ts';
 * import { natsEventPublisher, ensureEventStream } from './bus/index.ts';
 * const store = await openStore(cfg.state, { types: [invoiceType] }); // sqlite:/path/keel.db or mongodb://...
 * const actor = { kind: 'agent', id: 'triage' } as const;
 * const { entity } = await store.append('invoice', 'INV-42', 0, [{ type: 'created', data: { amount: 120 } }], { actor, correlationId: 'run-7' });
 * await store.append('invoice', 'INV-42', entity.version, [{ type: 'updated', data: { paid: true } }], { actor });
 * const { events, cursor } = await store.changes({ since: lastCursor, types: ['invoice'] });
 * await ensureEventStream(nc);
 * const relay = startOutboxRelay(store, natsEventPublisher(nc));   // keel.evt.invoice.INV-42, Nats-Msg-Id = event id
 * ```
 *
 * See docs/shared-state.md for cursor semantics, the outbox and the audit chain.
 */
export { openSqlite, parseStateUrl, redactMongoUrl } from './health.ts';

export { openStore } from './open.ts';
export type { OpenStoreOptions } from './open.ts';

export { defineEntityType, createRegistry, BUILTIN_EVENTS, sensitiveFieldsOf, sensitiveValuesOf } from './entity-types.ts';
export type { EntityTypeDef, EntityTypeRegistry, State } from './entity-types.ts';

export { startOutboxRelay, encodeEvent, eventHeaders } from './outbox.ts';
export type { EventPublisher, OutboxRelay, OutboxRelayOptions } from './outbox.ts';

export { canonicalJson, auditHash, verifyChain, singleType, GENESIS_HASH, DEFAULT_MAX_DOCUMENT_BYTES } from './core.ts';
// erasure of personal data: the tombstone, the event it appends, v2 audit digests (docs/audit-and-erasure.md)
export { TOMBSTONE, ERASED_EVENT, auditDetailsDigest } from './core.ts';
// retention: compacted histories, pruned idempotency records (docs/operations.md)
export { COMPACTED_EVENT } from './core.ts';
export { emptyTotals as emptyCostTotals, addCostRecord, roundUsd as roundCostTotals } from './core.ts';
export { runRetention, startRetention } from './retention.ts';
export type { HistoryRule, RetentionPolicy, RetentionReport, RetentionTimer } from './retention.ts';

export * from './errors.ts';

export type {
  Actor,
  EventMeta,
  EventInput,
  CommittedEvent,
  Entity,
  AppendOptions,
  CompleteOptions,
  AppendResult,
  ChangesQuery,
  ChangesPage,
  FieldCondition,
  EntityQuery,
  QueryPage,
  SearchOptions,
  ClaimResult,
  IdempotencyRecord,
  CostInput,
  CostRecord,
  CostDimension,
  CostQuery,
  CostTotals,
  CostReport,
  ApprovalState,
  ApprovalInput,
  Approval,
  ApprovalDecision,
  AuditInput,
  AuditRecord,
  AuditVerification,
  Tombstone,
  RedactEntityOptions,
  RedactEntityResult,
  RedactRecordsOptions,
  RedactCounts,
  CompactResult,
  CompactHistoryOptions,
  CompactHistoryResult,
  PruneIdempotencyResult,
  StoreInfo,
  StateStore,
} from './types.ts';

export { snapshotSqlite, checkSqlite, countState, verifyAuditCopy, openSnapshotReader, sqliteStatePath, fsyncPath, StateBackupError, type StateCounts, type StateSnapshotReader, type StateBackupErrorCode } from './backup.ts';
