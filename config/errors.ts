/**
 * The one error root of Keel. Every error family (BusError, StateError, ChannelError, ModelError,
 * AgentError, CheckpointError, WorkflowError, CliError …) extends {@link KeelError}, so anything
 * Keel throws carries a stable `code`, a `retryable` flag and, when it wraps something, a `cause`.
 *
 * ```ts
 * import { KeelError, isKeelError, toKeelError } from './config/index.ts';
 *
 * throw new KeelError('KEEL_PROVISION_FAILED', 'deploy/provision.sh failed', { cause: err });
 *
 * try { await work(); } catch (err) {
 *   if (isKeelError(err) && err.retryable) return retryLater(err.nextDelayMs);
 *   const e = toKeelError(err);          // anything thrown → a KeelError (code 'KEEL_UNKNOWN' if it had none)
 *   log.error({ code: e.code, err: e.cause }, e.message);
 * }
 * ```
 *
 * Check errors by `code` (`isKeelError`, or a family's `isBusError(err, 'BUS_UNAVAILABLE')`), not
 * only with `instanceof`: errors cross processes as JSON and duplicate package copies each have
 * their own classes.
 */

export interface KeelErrorOptions {
  /** whether trying the same call again later may succeed (default false) */
  retryable?: boolean;
  /** how long to wait before that retry, when known */
  nextDelayMs?: number;
  /** the error this one wraps */
  cause?: unknown;
}

export class KeelError extends Error {
  /** stable, machine-readable: `BUS_UNAVAILABLE`, `STATE_VERSION_CONFLICT`, `CLI_BAD_ARGUMENT` … */
  readonly code: string;
  /** Whether trying the same call again later may succeed. */
  readonly retryable: boolean;
  /** how long to wait before retrying, when the failure said */
  readonly nextDelayMs?: number;
  constructor(code: string, message: string, opts: KeelErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'KeelError';
    this.code = code;
    this.retryable = opts.retryable ?? false;
    if (opts.nextDelayMs !== undefined) this.nextDelayMs = opts.nextDelayMs;
  }
}

/**
 * Whether `e` is a KeelError: an instance, or anything of its shape (a string `code`, a string
 * `message` and a boolean `retryable`), such as one from another package copy or one that
 * crossed a process boundary as JSON. Plain Node errors (`code: 'ECONNREFUSED'`, no
 * `retryable`) are not.
 */
export function isKeelError(e: unknown): e is KeelError {
  if (e instanceof KeelError) return true;
  if (typeof e !== 'object' || e === null) return false;
  const x = e as { code?: unknown; message?: unknown; retryable?: unknown };
  return typeof x.code === 'string' && x.code !== '' && typeof x.message === 'string' && typeof x.retryable === 'boolean';
}

/**
 * Normalizes anything thrown into a KeelError. A KeelError (or one of its shape) is returned
 * unchanged; anything else is wrapped, as its `cause`, keeping its message, its string `code`
 * (else `fallbackCode`), and its `retryable` / `nonRetryable` / `nextDelayMs` fields when it has
 * them. Without them it is not retryable: callers that retry unknown failures by default (the
 * bus's `toFailure`) decide that themselves.
 */
export function toKeelError(e: unknown, fallbackCode = 'KEEL_UNKNOWN'): KeelError {
  if (isKeelError(e)) return e;
  const x = (typeof e === 'object' && e !== null ? e : {}) as { code?: unknown; message?: unknown; retryable?: unknown; nonRetryable?: unknown; nextDelayMs?: unknown };
  const code = typeof x.code === 'string' && x.code !== '' ? x.code : fallbackCode;
  const message = typeof x.message === 'string' ? x.message : String(e);
  const retryable = typeof x.retryable === 'boolean' ? x.retryable : typeof x.nonRetryable === 'boolean' ? !x.nonRetryable : false;
  const nextDelayMs = typeof x.nextDelayMs === 'number' && Number.isFinite(x.nextDelayMs) ? x.nextDelayMs : undefined;
  return new KeelError(code, message, { retryable, nextDelayMs, cause: e });
}
