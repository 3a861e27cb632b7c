/**
 * Typed errors of the bus. Check them by `code` (stable across processes and package copies),
 * not only with `instanceof`. Every one is a {@link KeelError}.
 */
import { KeelError } from '../config/index.ts';

export type BusErrorCode =
  | 'BUS_UNAVAILABLE'
  | 'BUS_AUTH_REFUSED'
  | 'BUS_PERMISSION_DENIED'
  | 'BUS_SERVER_START_FAILED'
  | 'BUS_SERVER_NOT_FOUND'
  | 'BUS_PROVISION_CONFLICT'
  /** a stream or bucket wants more replicas than there are JetStream servers (KEEL_NATS_REPLICAS) */
  | 'BUS_REPLICAS_UNAVAILABLE'
  /** the server has not the JetStream storage left that a stream's max_bytes reserves (KEEL_NATS_MAX_BYTES) */
  | 'BUS_STORAGE_UNAVAILABLE'
  | 'BUS_INVALID_MESSAGE'
  | 'BUS_PAYLOAD_TOO_LARGE'
  | 'BUS_REQUEST_TIMEOUT'
  | 'BUS_NO_RESPONDERS'
  | 'BUS_PUBLISH_FAILED'
  /** a subject token (capability, entity type, prefix …) has characters NATS subjects cannot carry */
  | 'BUS_INVALID_SUBJECT'
  /** `defineMessage` was given a type name that is not letters, digits, '_', '.' or '-' */
  | 'BUS_INVALID_MESSAGE_TYPE'
  /** a handler ran past its `timeoutMs` (the abort reason of its signal; retryable) */
  | 'BUS_HANDLER_TIMEOUT'
  /** the consumer was stopped while the handler ran (the abort reason of its signal; retryable) */
  | 'BUS_CONSUMER_STOPPED'
  /** a request's responder answered `ok: false` without a code of its own */
  | 'BUS_REQUEST_FAILED'
  /** `keel dlq show|redrive`: no dead letter with that sequence in the DLQ stream */
  | 'BUS_DEAD_LETTER_NOT_FOUND';

export class BusError extends KeelError {
  declare readonly code: BusErrorCode;
  constructor(code: BusErrorCode, message: string, opts: { cause?: unknown; retryable?: boolean } = {}) {
    super(code, message, opts);
    this.name = 'BusError';
  }
}

export class BusUnavailableError extends BusError {
  readonly servers: string;
  constructor(servers: string, cause?: unknown) {
    super('BUS_UNAVAILABLE', `cannot reach NATS at ${servers}: ${describe(cause)}. Is nats-server running? (keel start runs one; or set KEEL_NATS_URL)`, { cause, retryable: true });
    this.name = 'BusUnavailableError';
    this.servers = servers;
  }
}

export class BusAuthError extends BusError {
  readonly user: string | undefined;
  constructor(user: string | undefined, cause?: unknown) {
    super('BUS_AUTH_REFUSED', `NATS refused the credentials${user ? ` of user '${user}'` : ''}: ${describe(cause)}`, { cause });
    this.name = 'BusAuthError';
    this.user = user;
  }
}

export class BusPermissionError extends BusError {
  readonly subject: string;
  readonly operation: 'publish' | 'subscribe';
  constructor(operation: 'publish' | 'subscribe', subject: string, cause?: unknown) {
    super('BUS_PERMISSION_DENIED', `NATS denied ${operation} on '${subject}'`, { cause });
    this.name = 'BusPermissionError';
    this.subject = subject;
    this.operation = operation;
  }
}

export class ProvisionConflictError extends BusError {
  readonly resource: string;
  readonly differences: string[];
  constructor(resource: string, differences: string[]) {
    super(
      'BUS_PROVISION_CONFLICT',
      `${resource} exists with a definition that cannot be changed in place: ${differences.join('; ')}. Delete it (nats stream rm / nats consumer rm) or keep the old definition.`,
    );
    this.name = 'ProvisionConflictError';
    this.resource = resource;
    this.differences = differences;
  }
}

/** Why an inbound message cannot be handled: sent to the dead-letter stream at once. */
export type InvalidReason = 'malformed_json' | 'schema_mismatch' | 'unknown_type' | 'payload_too_large' | 'missing_headers';

export class InvalidMessageError extends BusError {
  readonly reason: InvalidReason;
  readonly details: string[];
  constructor(reason: InvalidReason, details: string[] | string) {
    const d = Array.isArray(details) ? details : [details];
    super(reason === 'payload_too_large' ? 'BUS_PAYLOAD_TOO_LARGE' : 'BUS_INVALID_MESSAGE', `${reason}: ${d.join('; ')}`);
    this.name = 'InvalidMessageError';
    this.reason = reason;
    this.details = d;
  }
}

export class RequestTimeoutError extends BusError {
  readonly subject: string;
  readonly timeoutMs: number;
  constructor(subject: string, timeoutMs: number, cause?: unknown) {
    super('BUS_REQUEST_TIMEOUT', `no reply on '${subject}' within ${timeoutMs} ms`, { cause, retryable: true });
    this.name = 'RequestTimeoutError';
    this.subject = subject;
    this.timeoutMs = timeoutMs;
  }
}

export class NoRespondersError extends BusError {
  readonly subject: string;
  constructor(subject: string, cause?: unknown) {
    super('BUS_NO_RESPONDERS', `nobody is listening on '${subject}'`, { cause, retryable: true });
    this.name = 'NoRespondersError';
    this.subject = subject;
  }
}

export class LocalServerError extends BusError {
  constructor(code: 'BUS_SERVER_START_FAILED' | 'BUS_SERVER_NOT_FOUND', message: string, cause?: unknown) {
    super(code, message, { cause });
    this.name = 'LocalServerError';
  }
}

export function describe(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

export function isBusError(err: unknown, code?: BusErrorCode): err is BusError {
  if (typeof err !== 'object' || err === null) return false;
  const c = (err as { code?: unknown }).code;
  return typeof c === 'string' && c.startsWith('BUS_') && (code === undefined || c === code);
}

/**
 * Thrown by a handler to say "this will never succeed": the message goes to the dead-letter
 * stream at once instead of being retried.
 */
export class PermanentError extends KeelError {
  declare readonly retryable: false;
  constructor(message: string, opts: { code?: string; cause?: unknown } = {}) {
    super(opts.code ?? 'PERMANENT', message, { cause: opts.cause, retryable: false });
    this.name = 'PermanentError';
  }
}

/** Thrown by a handler to ask for a retry, optionally after a given delay. */
export class RetryableError extends KeelError {
  declare readonly retryable: true;
  declare readonly nextDelayMs: number | undefined;
  constructor(message: string, opts: { code?: string; cause?: unknown; nextDelayMs?: number } = {}) {
    super(opts.code ?? 'RETRYABLE', message, { cause: opts.cause, retryable: true, nextDelayMs: opts.nextDelayMs });
    this.name = 'RetryableError';
  }
}

/** What the runtime needs to know about any thrown value to decide ack, nak or dead-letter. */
export interface Failure {
  retryable: boolean;
  code: string;
  name: string;
  message: string;
  nextDelayMs: number | undefined;
  stack: string | undefined;
}

/**
 * Normalizes anything thrown. Decided by fields, not `instanceof` (errors cross processes and
 * package copies): `retryable: false` or `nonRetryable: true` means permanent; everything else
 * (including plain Errors, timeouts and network failures) is retried.
 */
export function toFailure(err: unknown): Failure {
  if (typeof err === 'object' && err !== null) {
    const e = err as { retryable?: unknown; nonRetryable?: unknown; code?: unknown; name?: unknown; message?: unknown; nextDelayMs?: unknown; stack?: unknown };
    const permanent = e.retryable === false || e.nonRetryable === true;
    return {
      retryable: !permanent,
      code: typeof e.code === 'string' ? e.code : typeof e.code === 'number' ? String(e.code) : 'ERROR',
      name: typeof e.name === 'string' ? e.name : 'Error',
      message: typeof e.message === 'string' ? e.message : String(err),
      nextDelayMs: typeof e.nextDelayMs === 'number' ? e.nextDelayMs : undefined,
      stack: typeof e.stack === 'string' ? e.stack : undefined,
    };
  }
  return { retryable: true, code: 'ERROR', name: 'Error', message: String(err), nextDelayMs: undefined, stack: undefined };
}
