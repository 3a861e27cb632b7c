/**
 * Typed errors of the channels module. Check them by `code` (stable across processes and
 * package copies), not only with `instanceof`. Every one is a {@link KeelError}.
 */
import { KeelError } from '../config/index.ts';

export type ChannelErrorCode =
  | 'CHANNEL_CONFIG_INVALID'
  | 'CHANNEL_LISTEN_FAILED'
  | 'CHANNEL_HANDLER_FAILED'
  | 'CHANNEL_SEND_FAILED'
  | 'CHANNEL_OUTBOX_WRITE_FAILED'
  | 'CHANNEL_INVALID_MESSAGE'
  /** mailparser did not finish within the parse timeout (the mail is quarantined as malformed) */
  | 'CHANNEL_PARSE_TIMEOUT'
  /** the SMTP ingress answers a command with a 4xx/5xx reply (`responseCode`) */
  | 'CHANNEL_SMTP_REPLY'
  /** free space under the data dir is below KEEL_MIN_FREE_MB: new work is refused (SMTP 452 4.3.1, HTTP 507) */
  | 'CHANNEL_STORAGE_FULL';

export class ChannelError extends KeelError {
  declare readonly code: ChannelErrorCode;
  constructor(code: ChannelErrorCode, message: string, opts: { cause?: unknown; retryable?: boolean } = {}) {
    super(code, message, opts);
    this.name = 'ChannelError';
  }
}

/** A bad option given to a channel factory (relay URL, directory, limit). */
export class ChannelConfigError extends ChannelError {
  readonly option: string;
  constructor(option: string, message: string, cause?: unknown) {
    super('CHANNEL_CONFIG_INVALID', `${option}: ${message}`, { cause });
    this.name = 'ChannelConfigError';
    this.option = option;
  }
}

/** A listener (SMTP, HTTP) could not bind its address. */
export class ChannelListenError extends ChannelError {
  readonly host: string;
  readonly port: number;
  constructor(host: string, port: number, cause?: unknown) {
    const inUse = (cause as NodeJS.ErrnoException | undefined)?.code === 'EADDRINUSE';
    super('CHANNEL_LISTEN_FAILED', inUse ? `port ${host}:${port} is already in use` : `cannot listen on ${host}:${port}: ${describeError(cause)}`, { cause });
    this.name = 'ChannelListenError';
    this.host = host;
    this.port = port;
  }
}

/**
 * Thrown by an `onMessage` / `onQuarantine` callback to say whether the sender should retry.
 * Any error with a boolean `retryable` field (a BusError, for one) is read the same way; an
 * error without one counts as retryable, so an unexpected failure never loses a message.
 */
export class ChannelHandlerError extends ChannelError {
  constructor(message: string, opts: { cause?: unknown; retryable?: boolean } = {}) {
    super('CHANNEL_HANDLER_FAILED', message, { cause: opts.cause, retryable: opts.retryable ?? true });
    this.name = 'ChannelHandlerError';
  }
}

/** An outbound mail could not be handed to the relay. */
export class MailSendError extends ChannelError {
  readonly relay: string;
  /** SMTP reply code of the relay, when it answered. */
  readonly responseCode: number | undefined;
  readonly to: string[];
  constructor(relay: string, to: string[], cause: unknown) {
    const responseCode = numberOrUndefined((cause as { responseCode?: unknown } | undefined)?.responseCode);
    super('CHANNEL_SEND_FAILED', `relay ${relay} did not take the mail to ${to.join(', ')}: ${describeError(cause)}`, {
      cause,
      // 4xx and connection failures are temporary; 5xx is the relay's final word
      retryable: responseCode === undefined || responseCode < 500,
    });
    this.name = 'MailSendError';
    this.relay = relay;
    this.responseCode = responseCode;
    this.to = to;
  }
}

/** The outbox (a directory) could not be written. */
export class OutboxWriteError extends ChannelError {
  readonly path: string;
  constructor(path: string, cause: unknown) {
    super('CHANNEL_OUTBOX_WRITE_FAILED', `cannot write ${path}: ${describeError(cause)}`, { cause, retryable: true });
    this.name = 'OutboxWriteError';
    this.path = path;
  }
}

/** An outbound mail that cannot be sent as given (no recipient, header injection). */
export class InvalidOutboundError extends ChannelError {
  readonly details: string[];
  constructor(details: string[]) {
    super('CHANNEL_INVALID_MESSAGE', `invalid outbound mail: ${details.join('; ')}`);
    this.name = 'InvalidOutboundError';
    this.details = details;
  }
}

/**
 * New work refused because the disk that holds Keel's data is (nearly) full: free space under
 * `path` is below the guard (KEEL_MIN_FREE_MB). Retryable: the guard lifts by itself once space
 * is freed. Answered SMTP `452 4.3.1` and HTTP `507 STORAGE_FULL`.
 */
export class StorageFullRefusal extends ChannelError {
  readonly path: string;
  readonly freeBytes: number;
  readonly minFreeBytes: number;
  /** recognized across layers by this flag, like the state store's STATE_STORAGE_FULL */
  readonly storageFull = true;
  constructor(path: string, freeBytes: number, minFreeBytes: number) {
    super('CHANNEL_STORAGE_FULL', `not enough free disk space for new work: ${mib(freeBytes)} free under ${path}, below the ${mib(minFreeBytes)} kept in reserve (KEEL_MIN_FREE_MB); free disk space and it resumes by itself`, { retryable: true });
    this.name = 'StorageFullRefusal';
    this.path = path;
    this.freeBytes = freeBytes;
    this.minFreeBytes = minFreeBytes;
  }
}

const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;

/**
 * Whether a failure means "the disk is full", wherever it was raised: a Keel error with a
 * `*_STORAGE_FULL` code or the `storageFull` flag ({@link StorageFullRefusal}, the state store's
 * StorageFullError), ENOSPC, SQLite's SQLITE_FULL, or JetStream's "insufficient resources"
 * (10023, its storage limit) — also when wrapped as the `cause` of another error (a bus publish).
 */
export function isStorageFull(err: unknown): boolean {
  let e: unknown = err;
  for (let depth = 0; depth < 6 && typeof e === 'object' && e !== null; depth++) {
    const x = e as { code?: unknown; storageFull?: unknown; errcode?: unknown; message?: unknown; api_error?: { err_code?: unknown }; cause?: unknown };
    if (x.storageFull === true) return true;
    if (typeof x.code === 'string' && (x.code.endsWith('_STORAGE_FULL') || x.code === 'ENOSPC')) return true;
    if (typeof x.errcode === 'number' && (x.errcode & 0xff) === 13) return true;
    if (x.code === 10023 || x.api_error?.err_code === 10023) return true;
    if (typeof x.message === 'string' && /no space left on device|database or disk is full|insufficient (system )?(resources|storage)/i.test(x.message)) return true;
    e = x.cause;
  }
  return false;
}

export function describeError(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

/** Reads retryability from anything thrown: a boolean `retryable` field wins; otherwise true. */
export function isRetryable(err: unknown): boolean {
  if (typeof err === 'object' && err !== null) {
    const r = (err as { retryable?: unknown }).retryable;
    if (typeof r === 'boolean') return r;
    const nr = (err as { nonRetryable?: unknown }).nonRetryable;
    if (typeof nr === 'boolean') return !nr;
  }
  return true;
}

export function isChannelError(err: unknown, code?: ChannelErrorCode): err is ChannelError {
  if (typeof err !== 'object' || err === null) return false;
  const c = (err as { code?: unknown }).code;
  return typeof c === 'string' && c.startsWith('CHANNEL_') && (code === undefined || c === code);
}

function numberOrUndefined(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}
