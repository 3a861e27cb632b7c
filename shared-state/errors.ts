/**
 * Typed errors of the state store. Check them by `code` (stable across processes and package
 * copies), not only with `instanceof`: `isStateError(err, 'STATE_VERSION_CONFLICT')`. Every one
 * is a {@link KeelError}.
 */
import { KeelError } from '../config/index.ts';

export type StateErrorCode =
  | 'STATE_VERSION_CONFLICT'
  | 'STATE_SCHEMA_INVALID'
  | 'STATE_UNKNOWN_ENTITY_TYPE'
  | 'STATE_UNKNOWN_EVENT_TYPE'
  | 'STATE_INVALID_EVENT'
  | 'STATE_INVALID_ID'
  | 'STATE_INVALID_QUERY'
  | 'STATE_DOCUMENT_TOO_LARGE'
  | 'STATE_NOT_FOUND'
  | 'STATE_AMBIGUOUS_ID'
  | 'STATE_IDEMPOTENCY_LEASE_LOST'
  | 'STATE_APPROVAL_NOT_PENDING'
  | 'STATE_APPROVAL_EXPIRED'
  | 'STATE_BUSY'
  | 'STATE_UNAVAILABLE'
  /** the disk under the store is full (SQLite SQLITE_FULL, ENOSPC, MongoDB out of disk space); retryable once space is freed */
  | 'STATE_STORAGE_FULL'
  | 'STATE_BAD_URL'
  /** an entity type declaration is invalid (name, schemaVersion, events) or declared twice */
  | 'STATE_INVALID_DEFINITION';

/** One failing field of a schema check: `path` is the dotted zod issue path (`messages.0.text`). */
export interface FieldIssue {
  path: string;
  message: string;
}

export class StateError extends KeelError {
  declare readonly code: StateErrorCode;
  constructor(code: StateErrorCode, message: string, opts: { cause?: unknown; retryable?: boolean } = {}) {
    super(code, message, opts);
    this.name = 'StateError';
  }
}

/**
 * The append's expected version is not the entity's version: someone else wrote first. Reload
 * (`get`) and decide again; retrying the same append blindly would overwrite their decision.
 */
export class VersionConflictError extends StateError {
  readonly entityType: string;
  readonly entityId: string;
  readonly expectedVersion: number;
  readonly actualVersion: number;
  constructor(entityType: string, entityId: string, expectedVersion: number, actualVersion: number, cause?: unknown) {
    super(
      'STATE_VERSION_CONFLICT',
      `${entityType} '${entityId}': expected version ${expectedVersion} but it is at version ${actualVersion}; reload and retry`,
      { cause, retryable: true },
    );
    this.name = 'VersionConflictError';
    this.entityType = entityType;
    this.entityId = entityId;
    this.expectedVersion = expectedVersion;
    this.actualVersion = actualVersion;
  }
}

/** Event data, the resulting state, or the event metadata failed its schema. Nothing was written. */
export class SchemaValidationError extends StateError {
  readonly entityType: string;
  readonly entityId: string;
  /** dotted paths of the failing fields, e.g. `['email', 'messages.0.text']` */
  readonly fields: string[];
  readonly issues: FieldIssue[];
  constructor(entityType: string, entityId: string, issues: FieldIssue[], what = 'state', cause?: unknown) {
    const fields = [...new Set(issues.map((i) => i.path || '(root)'))];
    super(
      'STATE_SCHEMA_INVALID',
      `${entityType} '${entityId}': ${what} fails the schema at ${issues.map((i) => `${i.path || '(root)'}: ${i.message}`).join('; ')}`,
      { cause },
    );
    this.name = 'SchemaValidationError';
    this.entityType = entityType;
    this.entityId = entityId;
    this.fields = fields;
    this.issues = issues;
  }
}

export class UnknownEntityTypeError extends StateError {
  readonly entityType: string;
  readonly known: string[];
  constructor(entityType: string, known: string[]) {
    super('STATE_UNKNOWN_ENTITY_TYPE', `unknown entity type '${entityType}'; known types: ${known.join(', ')}`);
    this.name = 'UnknownEntityTypeError';
    this.entityType = entityType;
    this.known = known;
  }
}

export class UnknownEventTypeError extends StateError {
  readonly entityType: string;
  readonly eventType: string;
  readonly known: string[];
  constructor(entityType: string, eventType: string, known: string[]) {
    super('STATE_UNKNOWN_EVENT_TYPE', `${entityType} has no event '${eventType}'; its events: ${known.join(', ')}`);
    this.name = 'UnknownEventTypeError';
    this.entityType = entityType;
    this.eventType = eventType;
    this.known = known;
  }
}

/** An event that cannot apply here: `created` on an existing entity, anything on a deleted one, an empty append. */
export class InvalidEventError extends StateError {
  readonly entityType: string;
  readonly entityId: string;
  readonly eventType: string | undefined;
  constructor(entityType: string, entityId: string, eventType: string | undefined, reason: string) {
    super('STATE_INVALID_EVENT', `${entityType} '${entityId}'${eventType ? ` event '${eventType}'` : ''}: ${reason}`);
    this.name = 'InvalidEventError';
    this.entityType = entityType;
    this.entityId = entityId;
    this.eventType = eventType;
  }
}

/** Entity ids and types become subject tokens (`keel.evt.<type>.<id>`): letters, digits, `_`, `-`. */
export class InvalidIdError extends StateError {
  readonly kind: string;
  readonly value: string;
  constructor(kind: string, value: string) {
    super('STATE_INVALID_ID', `invalid ${kind} '${value}': use 1-128 letters, digits, '_' or '-'`);
    this.name = 'InvalidIdError';
    this.kind = kind;
    this.value = value;
  }
}

export class InvalidQueryError extends StateError {
  constructor(message: string) {
    super('STATE_INVALID_QUERY', message);
    this.name = 'InvalidQueryError';
  }
}

export class DocumentTooLargeError extends StateError {
  readonly entityType: string;
  readonly entityId: string;
  readonly bytes: number;
  readonly limit: number;
  constructor(entityType: string, entityId: string, what: string, bytes: number, limit: number) {
    super('STATE_DOCUMENT_TOO_LARGE', `${entityType} '${entityId}': ${what} is ${bytes} bytes, over the limit of ${limit} bytes`);
    this.name = 'DocumentTooLargeError';
    this.entityType = entityType;
    this.entityId = entityId;
    this.bytes = bytes;
    this.limit = limit;
  }
}

export class NotFoundError extends StateError {
  readonly kind: string;
  readonly id: string;
  constructor(kind: string, id: string, detail = '') {
    super('STATE_NOT_FOUND', `${kind} '${id}' not found${detail ? `: ${detail}` : ''}`);
    this.name = 'NotFoundError';
    this.kind = kind;
    this.id = id;
  }
}

export class AmbiguousIdError extends StateError {
  readonly entityId: string;
  readonly types: string[];
  constructor(entityId: string, types: string[]) {
    super('STATE_AMBIGUOUS_ID', `entity id '${entityId}' exists in several types (${types.join(', ')}); name the type`);
    this.name = 'AmbiguousIdError';
    this.entityId = entityId;
    this.types = types;
  }
}

/** `complete`/`release` with a token whose claim was taken over (its lease expired) or is gone. */
export class IdempotencyLeaseLostError extends StateError {
  readonly key: string;
  constructor(key: string, detail: string) {
    super('STATE_IDEMPOTENCY_LEASE_LOST', `idempotency key '${key}': ${detail}`);
    this.name = 'IdempotencyLeaseLostError';
    this.key = key;
  }
}

export class ApprovalNotPendingError extends StateError {
  readonly approvalId: string;
  readonly state: string;
  constructor(approvalId: string, state: string) {
    super('STATE_APPROVAL_NOT_PENDING', `approval '${approvalId}' is already ${state}`);
    this.name = 'ApprovalNotPendingError';
    this.approvalId = approvalId;
    this.state = state;
  }
}

export class ApprovalExpiredError extends StateError {
  readonly approvalId: string;
  readonly deadline: string;
  constructor(approvalId: string, deadline: string) {
    super('STATE_APPROVAL_EXPIRED', `approval '${approvalId}' expired at ${deadline}`);
    this.name = 'ApprovalExpiredError';
    this.approvalId = approvalId;
    this.deadline = deadline;
  }
}

/** The database is locked by another process longer than the busy timeout (SQLite), or a write timed out. */
export class StoreBusyError extends StateError {
  constructor(message: string, cause?: unknown) {
    super('STATE_BUSY', message, { cause, retryable: true });
    this.name = 'StoreBusyError';
  }
}

export class StoreUnavailableError extends StateError {
  readonly location: string;
  constructor(location: string, cause?: unknown) {
    super('STATE_UNAVAILABLE', `state store at ${location} is unavailable: ${describe(cause)}`, { cause, retryable: true });
    this.name = 'StoreUnavailableError';
    this.location = location;
  }
}

/**
 * The store could not write because its disk is full. Nothing of the failed write was kept;
 * reads still work. Retryable: the same write succeeds once space is freed (Keel's ingress
 * refuses new work meanwhile, see docs/reliability.md).
 */
export class StorageFullError extends StateError {
  readonly location: string;
  /** recognized across layers by this flag (channels map it to SMTP 452 and HTTP 507) */
  readonly storageFull = true;
  constructor(location: string, cause?: unknown) {
    super('STATE_STORAGE_FULL', `state store at ${location}: no space left on its disk (${describe(cause)}); free disk space: writes resume by themselves`, { cause, retryable: true });
    this.name = 'StorageFullError';
    this.location = location;
  }
}

export function describe(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

export function isStateError(err: unknown, code?: StateErrorCode): err is StateError {
  if (typeof err !== 'object' || err === null) return false;
  const c = (err as { code?: unknown }).code;
  return typeof c === 'string' && c.startsWith('STATE_') && (code === undefined || c === code);
}
