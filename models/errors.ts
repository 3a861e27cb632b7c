/**
 * Typed errors of the model layer. Check them by `code` (stable across processes and package
 * copies), not only with `instanceof`: `isModelError(err, 'MODEL_NOT_CONFIGURED')`.
 *
 * Every error carries `retryable`: whether the same call may succeed later (rate limits, 5xx,
 * network, timeouts) or never will (bad request, bad key, unknown model, nothing configured).
 * The agent runtime's `toFailure` reads that field alone to decide retry or dead-letter.
 * Every one is a {@link KeelError}.
 */
import { getRetryable } from '@langchain/core/errors';
import { KeelError } from '../config/index.ts';

export type ModelErrorCode =
  /** no model is configured for the tier a capability needs */
  | 'MODEL_NOT_CONFIGURED'
  /** a `KEEL_MODEL_*` / `KEEL_PRICE*` variable or a script file is malformed */
  | 'MODEL_CONFIG_INVALID'
  /** 429 from the provider */
  | 'MODEL_RATE_LIMITED'
  /** 5xx, overloaded, or the endpoint could not be reached */
  | 'MODEL_UNAVAILABLE'
  /** the request or the connection timed out */
  | 'MODEL_TIMEOUT'
  /** 401 / 403: the key is missing, wrong or lacks permission */
  | 'MODEL_AUTH_FAILED'
  /** 404: the endpoint does not know the model */
  | 'MODEL_NOT_FOUND'
  /** the prompt does not fit the model's context window */
  | 'MODEL_CONTEXT_OVERFLOW'
  /** 400 / 422 and other 4xx: the request itself is wrong */
  | 'MODEL_BAD_REQUEST'
  /** the caller's AbortSignal fired */
  | 'MODEL_ABORTED'
  /** a scripted model ran out of replies */
  | 'MODEL_SCRIPT_EXHAUSTED'
  /** the reply came back but its cost record could not be written */
  | 'MODEL_COST_NOT_RECORDED'
  /** a budget refused the call before the provider was asked (see models/budgets.ts) */
  | 'MODEL_BUDGET_REFUSED'
  /** the values to redact from a cloud prompt could not be read: the prompt was not sent (models/redact.ts) */
  | 'MODEL_REDACTION_FAILED'
  /** anything else the provider threw */
  | 'MODEL_ERROR';

export interface ModelErrorOptions {
  cause?: unknown;
  retryable?: boolean;
  provider?: string;
  model?: string;
  /** HTTP status of the provider's answer, when there was one */
  status?: number;
  /** how long to wait before retrying (from `Retry-After`), when the provider said */
  nextDelayMs?: number;
}

export class ModelError extends KeelError {
  declare readonly code: ModelErrorCode;
  declare readonly nextDelayMs: number | undefined;
  readonly provider: string | undefined;
  readonly model: string | undefined;
  readonly status: number | undefined;
  constructor(code: ModelErrorCode, message: string, opts: ModelErrorOptions = {}) {
    super(code, message, { cause: opts.cause, retryable: opts.retryable, nextDelayMs: opts.nextDelayMs });
    this.name = 'ModelError';
    this.provider = opts.provider;
    this.model = opts.model;
    this.status = opts.status;
  }
}

/**
 * A capability asked for a model tier that has no model configured. Permanent until the operator
 * sets the variable the message names; tier 0 (heuristics) keeps working meanwhile.
 */
export class ModelNotConfiguredError extends ModelError {
  readonly tier: number;
  /** the environment variable to set, e.g. `KEEL_MODEL_SMALL` */
  readonly variable: string;
  readonly capability: string | undefined;
  constructor(tier: number, tierName: string, variable: string, capability?: string) {
    const who = capability ? `capability '${capability}' needs` : 'this needs';
    super(
      'MODEL_NOT_CONFIGURED',
      `${who} a ${tierName} (tier ${tier}) model, but none is configured: set ${variable} ` +
        `(e.g. ${variable}=openai:gpt-4o-mini, anthropic:claude-3-5-haiku-latest, ollama:llama3.1 or scripted:/path/replies.json); see docs/models-and-cost.md`,
      { retryable: false },
    );
    this.name = 'ModelNotConfiguredError';
    this.tier = tier;
    this.variable = variable;
    this.capability = capability;
  }
}

/** One or more model or price variables are malformed; `issues` names each offending variable. */
export class ModelConfigError extends ModelError {
  readonly issues: string[];
  /** the offending variables (or files) */
  readonly variables: string[];
  constructor(issues: { variable: string; message: string }[]) {
    super('MODEL_CONFIG_INVALID', `invalid model configuration:\n  ${issues.map((i) => `${i.variable}: ${i.message}`).join('\n  ')}`, { retryable: false });
    this.name = 'ModelConfigError';
    this.issues = issues.map((i) => `${i.variable}: ${i.message}`);
    this.variables = [...new Set(issues.map((i) => i.variable))];
  }
}

/**
 * The model answered (and was paid for) but the cost ledger refused the record. `result` holds
 * the reply so the caller can still use it; `retryable` follows the store's error.
 */
export class CostNotRecordedError<R = unknown> extends ModelError {
  readonly result: R;
  constructor(result: R, cause: unknown, opts: { provider?: string; model?: string } = {}) {
    const c = cause as { message?: unknown; retryable?: unknown };
    super('MODEL_COST_NOT_RECORDED', `the model replied but its cost record could not be written: ${typeof c?.message === 'string' ? c.message : String(cause)}`, {
      ...opts,
      cause,
      retryable: c?.retryable !== false,
    });
    this.name = 'CostNotRecordedError';
    this.result = result;
  }
}

/** Which budget refused a call, and the numbers behind the refusal. */
export interface BudgetRefusal {
  scope: 'customer' | 'agent' | 'workflow' | 'run' | 'engine';
  key: string;
  period: 'day' | 'month';
  /** the window the budget was counted in: `2025-06-14` (day), `2025-06` (month), `run` (a run's whole life) */
  window: string;
  limitUsd: number;
  /** held by calls in flight when this one asked */
  reservedUsd: number;
  spentUsd: number;
  /** what this call asked to reserve; undefined when its model cannot be priced */
  askedUsd: number | undefined;
  /** `over_limit`: spent + reserved + asked > limit; `unpriced`: a hard budget admits only priced models */
  reason: 'over_limit' | 'unpriced';
}

/**
 * A hard budget refused a model call before it reached the provider. Never retryable as is:
 * the caller falls back (a cheaper tier, tier 0) or asks the operator to raise the limit.
 */
export class BudgetRefusedError extends ModelError {
  readonly refusal: BudgetRefusal;
  readonly scope: BudgetRefusal['scope'];
  readonly key: string;
  readonly limitUsd: number;
  readonly reservedUsd: number;
  readonly spentUsd: number;
  readonly askedUsd: number | undefined;
  constructor(r: BudgetRefusal, opts: { provider?: string; model?: string } = {}) {
    const who = r.scope === 'engine' ? 'engine' : `${r.scope}:${r.key}`;
    const why =
      r.reason === 'unpriced'
        ? `the model cannot be priced and the ${r.period} budget is hard`
        : `asked $${r.askedUsd?.toFixed(6)} with $${r.spentUsd.toFixed(6)} spent and $${r.reservedUsd.toFixed(6)} reserved of $${r.limitUsd} (${r.period} ${r.window})`;
    super('MODEL_BUDGET_REFUSED', `budget refused at scope ${who}: ${why}`, { ...opts, retryable: false });
    this.name = 'BudgetRefusedError';
    this.refusal = r;
    this.scope = r.scope;
    this.key = r.key;
    this.limitUsd = r.limitUsd;
    this.reservedUsd = r.reservedUsd;
    this.spentUsd = r.spentUsd;
    this.askedUsd = r.askedUsd;
  }
}

export function isModelError(err: unknown, code?: ModelErrorCode): err is ModelError {
  if (typeof err !== 'object' || err === null) return false;
  const c = (err as { code?: unknown }).code;
  return typeof c === 'string' && c.startsWith('MODEL_') && (code === undefined || c === code);
}

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'ETIMEDOUT', 'EAI_AGAIN', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);

type Loose = { name?: unknown; message?: unknown; code?: unknown; status?: unknown; status_code?: unknown; statusCode?: unknown; response?: { status?: unknown }; headers?: unknown; cause?: unknown; lc_error_code?: unknown };

function statusOf(e: Loose): number | undefined {
  for (const v of [e.status, e.status_code, e.statusCode, e.response?.status]) if (typeof v === 'number' && v >= 100 && v < 600) return v;
  return undefined;
}

function header(headers: unknown, name: string): string | undefined {
  if (!headers || typeof headers !== 'object') return undefined;
  if (typeof (headers as { get?: unknown }).get === 'function') return (headers as { get(n: string): string | null }).get(name) ?? undefined;
  const v = (headers as Record<string, unknown>)[name];
  return typeof v === 'string' ? v : undefined;
}

/** `Retry-After` (seconds or an HTTP date) or `retry-after-ms`, as milliseconds. */
function retryAfterMs(headers: unknown): number | undefined {
  const ms = Number(header(headers, 'retry-after-ms'));
  if (Number.isFinite(ms) && ms >= 0 && header(headers, 'retry-after-ms') !== undefined) return ms;
  const ra = header(headers, 'retry-after');
  if (ra === undefined) return undefined;
  const s = Number(ra);
  if (Number.isFinite(s)) return Math.max(0, s * 1000);
  const at = Date.parse(ra);
  return Number.isFinite(at) ? Math.max(0, at - Date.now()) : undefined;
}

function isNetwork(e: Loose, depth = 0): boolean {
  if (depth > 4) return false;
  if (typeof e.code === 'string' && NETWORK_CODES.has(e.code)) return true;
  if (e.name === 'APIConnectionError' || (e.name === 'TypeError' && e.message === 'fetch failed')) return true;
  return typeof e.cause === 'object' && e.cause !== null && isNetwork(e.cause as Loose, depth + 1);
}

/**
 * Turns anything a provider client threw into a {@link ModelError} with a stable code and a
 * `retryable` flag: 429, 408, 409, 5xx, timeouts and network failures are retryable; 400, 401,
 * 403, 404, 422 and context overflows are not. A `ModelError` passes through unchanged.
 */
export function toModelError(err: unknown, ctx: { provider?: string; model?: string; signal?: AbortSignal } = {}): ModelError {
  if (err instanceof ModelError || isModelError(err)) return err as ModelError;
  const e = (typeof err === 'object' && err !== null ? err : { message: String(err) }) as Loose;
  const msg = typeof e.message === 'string' ? e.message.split('\n\nTroubleshooting URL')[0]! : String(err);
  const where = [ctx.provider, ctx.model].filter(Boolean).join(':') || 'model';
  const base = { cause: err, provider: ctx.provider, model: ctx.model };

  if (ctx.signal?.aborted) {
    const reason = ctx.signal.reason as { name?: unknown } | undefined;
    if (reason?.name === 'TimeoutError') return new ModelError('MODEL_TIMEOUT', `${where}: timed out (the caller's deadline passed)`, { ...base, retryable: true });
    return new ModelError('MODEL_ABORTED', `${where}: aborted by the caller`, { ...base, retryable: false });
  }
  if (e.name === 'AbortError' || e.name === 'APIUserAbortError') return new ModelError('MODEL_ABORTED', `${where}: aborted: ${msg}`, { ...base, retryable: false });
  if (e.name === 'TimeoutError' || e.name === 'APIConnectionTimeoutError') return new ModelError('MODEL_TIMEOUT', `${where}: timed out: ${msg}`, { ...base, retryable: true });
  if (e.name === 'ContextOverflowError' || /context_length_exceeded|maximum context length|exceeds the context window/i.test(msg)) {
    return new ModelError('MODEL_CONTEXT_OVERFLOW', `${where}: the prompt does not fit the context window: ${msg}`, { ...base, retryable: false });
  }

  const status = statusOf(e);
  if (status !== undefined) {
    const s = { ...base, status };
    if (status === 429) return new ModelError('MODEL_RATE_LIMITED', `${where}: rate limited (429): ${msg}`, { ...s, retryable: true, nextDelayMs: retryAfterMs(e.headers) });
    if (status === 408) return new ModelError('MODEL_TIMEOUT', `${where}: request timeout (408): ${msg}`, { ...s, retryable: true });
    if (status >= 500 || status === 409) return new ModelError('MODEL_UNAVAILABLE', `${where}: provider error (${status}): ${msg}`, { ...s, retryable: true, nextDelayMs: retryAfterMs(e.headers) });
    if (status === 401 || status === 403) return new ModelError('MODEL_AUTH_FAILED', `${where}: not authorized (${status}); check the API key: ${msg}`, { ...s, retryable: false });
    if (status === 404) return new ModelError('MODEL_NOT_FOUND', `${where}: the endpoint does not know this model (404): ${msg}`, { ...s, retryable: false });
    if (status >= 400) return new ModelError('MODEL_BAD_REQUEST', `${where}: request rejected (${status}): ${msg}`, { ...s, retryable: false });
  }
  if (isNetwork(e)) return new ModelError('MODEL_UNAVAILABLE', `${where}: cannot reach the endpoint: ${msg}`, { ...base, retryable: true });
  // the provider packages mark some errors themselves; unknown failures are retried (the runtime caps attempts)
  return new ModelError('MODEL_ERROR', `${where}: ${msg}`, { ...base, retryable: getRetryable(err) ?? true });
}
