/**
 * One model call, fully accounted: a GenAI span, normalized errors, and exactly one cost ledger
 * record attributed to agent, capability, run, customer and entity.
 */
import { performance } from 'node:perf_hooks';
import { isSpanContextValid, SpanKind, type Tracer } from '@opentelemetry/api';
import type { BaseChatModel } from '@langchain/core/language_models/chat_models';
import type { BaseLanguageModelInput } from '@langchain/core/language_models/base';
import { AIMessage, type AIMessageChunk } from '@langchain/core/messages';
import { getTracer, withSpan } from '../observability/index.ts';
import type { CostInput } from '../shared-state/index.ts';
import { CostNotRecordedError, ModelError, toModelError } from './errors.ts';
import { DEFAULT_MAX_OUTPUT_TOKENS, estimateCallUsd, type Admission, type BudgetGuard, type BudgetScopes } from './budgets.ts';
import { costOf, loadPriceTable, lookupPrice, type PriceTable, type TokenUsage } from './prices.ts';
import type { ModelHandle, ModelProvider, ModelTier } from './registry.ts';
import { createRedactor, redactMessages, redactModeOf, restoreMessage, sensitiveSourceOf, sensitiveValuesFor, shouldRedact, type RedactMode, type Redactor, type SensitiveRef, type SensitiveSource } from './redact.ts';

/** Who a call is for: every cost record carries these. */
export interface CostAttribution {
  agent: string;
  capability: string;
  /** the workflow run */
  runId?: string;
  customerId?: string;
  /** the workflow (by name) the run belongs to: recorded in the record's details and on the span */
  workflow?: string;
  entityType?: string;
  entityId?: string;
}

/** Where cost records go; a `StateStore` is one. */
export interface CostSink {
  recordCost(rec: CostInput): Promise<unknown>;
}

/** A tool offered to a model: its name, what it does, and its arguments as JSON Schema. */
export interface ToolSpec {
  name: string;
  description?: string;
  parameters?: Record<string, unknown>;
}

export interface InvokeModelOptions {
  /** a handle from the registry, or any LangChain chat model (e.g. a `ScriptedChatModel`) */
  model: ModelHandle | BaseChatModel;
  /** default: the handle's tier; recorded in the record's details and on the span */
  tier?: ModelTier;
  messages: BaseLanguageModelInput;
  attribution: CostAttribution;
  costs: CostSink;
  signal?: AbortSignal;
  /** default `getTracer('keel.models')` */
  tracer?: Tracer;
  /** default: the handle's table, else the environment's (`loadPriceTable()`) */
  prices?: PriceTable;
  /** extra "why" for the record's details, e.g. `{ reason: 'low confidence' }` */
  details?: Record<string, unknown>;
  /**
   * Admit the call against budgets BEFORE the provider is asked: reserve the worst case
   * (estimated input + `maxOutputTokens` × output price), settle to the actual cost, release on
   * failure. `maxOutputTokens` (default: the model's own bound, else DEFAULT_MAX_OUTPUT_TOKENS)
   * is also passed to the model so the reservation is a real bound. A refusal throws
   * `BudgetRefusedError` and the provider is never called. Scopes default to the attribution's.
   */
  budget?: { guard: BudgetGuard; scopes?: BudgetScopes; maxOutputTokens?: number };
  /** tools the model may call, bound for this call only (`bindTools`); its answer's `tool_calls` are the caller's to check */
  tools?: ToolSpec[];
  /** redaction of this call (models/redact.ts); default `KEEL_REDACT` (`cloud`: calls to openai/anthropic) */
  redact?: RedactMode;
  /** where the values of `sensitive` entity fields are read; default `costs` when it is a StateStore */
  sensitiveSource?: SensitiveSource;
  /** more entities whose sensitive values the prompt may hold (the attribution's customer and entity always count) */
  sensitiveRefs?: SensitiveRef[];
  /**
   * `false`: the answer keeps its placeholders and the result carries the call's `redactor`, for a
   * caller that restores parts of it itself (models/batch.ts: each item only its own values). Default true.
   */
  restoreAnswer?: boolean;
}

export interface InvokeModelResult {
  message: AIMessage;
  usage: TokenUsage;
  costUsd: number;
  /** the model that answered, as the provider named it (e.g. `gpt-4o-mini-2024-07-18`) */
  model: string;
  provider: string;
  /** the ledger's record, as the sink returned it */
  record: unknown;
  /** the budget admission (when `budget` was given): what was reserved where, and any soft warnings */
  admission?: Admission;
  /** the call's redactor, when it was redacted and `restoreAnswer: false` asked for an unrestored answer */
  redactor?: Redactor;
}

// OpenTelemetry GenAI semantic conventions (incubating; spelled out rather than imported from
// @opentelemetry/semantic-conventions/incubating, as that package advises)
export const GENAI = {
  OPERATION: 'gen_ai.operation.name',
  SYSTEM: 'gen_ai.system',
  PROVIDER: 'gen_ai.provider.name',
  REQUEST_MODEL: 'gen_ai.request.model',
  RESPONSE_MODEL: 'gen_ai.response.model',
  RESPONSE_ID: 'gen_ai.response.id',
  FINISH_REASONS: 'gen_ai.response.finish_reasons',
  INPUT_TOKENS: 'gen_ai.usage.input_tokens',
  OUTPUT_TOKENS: 'gen_ai.usage.output_tokens',
  CACHE_READ_TOKENS: 'gen_ai.usage.cache_read.input_tokens',
  REASONING_TOKENS: 'gen_ai.usage.reasoning.output_tokens',
  REQUEST_MAX_TOKENS: 'gen_ai.request.max_tokens',
  // the open cost proposal (open-telemetry/semantic-conventions-genai PR #443, from issue #287): amount, currency, source
  COST_AMOUNT: 'gen_ai.usage.cost.amount',
  COST_CURRENCY: 'gen_ai.usage.cost.currency',
  COST_SOURCE: 'gen_ai.usage.cost.source',
} as const;

/** The model's own output bound (`maxTokens`, Ollama's `numPredict`), if it has one. */
function ownMaxTokens(chat: BaseChatModel): number | undefined {
  const c = chat as unknown as { maxTokens?: unknown; numPredict?: unknown };
  for (const v of [c.maxTokens, c.numPredict]) if (typeof v === 'number' && v > 0) return v;
  return undefined;
}

const shadow = <T extends object>(o: T, patch: Record<string, unknown>): T => Object.assign(Object.create(o) as T, patch);

/**
 * The same chat model with its output bounded to `n` tokens for this call only. LangChain's call
 * options have no max-tokens field, so the bound goes on a per-call view of the instance (its
 * prototype is the shared model, which is left untouched): `maxTokens` for OpenAI (and its
 * completions/responses delegates) and Anthropic, `numPredict` for Ollama.
 */
function bounded(chat: BaseChatModel, n: number): BaseChatModel {
  const c = chat as unknown as Record<string, unknown>;
  if ('numPredict' in c) return shadow(chat, { numPredict: n });
  if (!('maxTokens' in c)) return chat;
  const patch: Record<string, unknown> = { maxTokens: n };
  for (const d of ['completions', 'responses']) if (c[d] && typeof c[d] === 'object' && 'maxTokens' in (c[d] as object)) patch[d] = shadow(c[d] as object, { maxTokens: n });
  return shadow(chat, patch);
}

const LLM_TYPES: Record<string, ModelProvider> = { openai: 'openai', anthropic: 'anthropic', ollama: 'ollama', scripted: 'scripted' };

function isHandle(m: ModelHandle | BaseChatModel): m is ModelHandle {
  return typeof (m as ModelHandle).chat === 'object' && typeof (m as ModelHandle).provider === 'string';
}

/** The provider and requested model name of a bare LangChain chat model. */
function identify(chat: BaseChatModel): { provider: string; model: string } {
  const type = chat._llmType();
  const provider = LLM_TYPES[type] ?? type;
  const c = chat as unknown as { model?: unknown; modelName?: unknown };
  const model = typeof c.model === 'string' ? c.model : typeof c.modelName === 'string' ? c.modelName : type;
  return { provider, model };
}

/** Token usage as LangChain's `usage_metadata` reports it (cached tokens inside input tokens). */
export function usageOf(message: AIMessage | AIMessageChunk): TokenUsage {
  const u = message.usage_metadata;
  const n = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) && v > 0 ? Math.round(v) : 0);
  return { inputTokens: n(u?.input_tokens), outputTokens: n(u?.output_tokens), cachedTokens: n(u?.input_token_details?.cache_read) };
}

let envPrices: PriceTable | undefined;

/**
 * The redactor of a call, when `KEEL_REDACT` (or `opts.redact`) applies to its provider, loaded
 * with the values of the `sensitive` fields of the attribution's customer and entity (and
 * `opts.sensitiveRefs`). Fails closed: if those values cannot be read, the call is not made.
 */
async function redactorFor(opts: InvokeModelOptions, provider: string, model: string, span: { setAttribute(k: string, v: string): unknown }): Promise<Redactor | undefined> {
  const mode = opts.redact ?? redactModeOf();
  if (!shouldRedact(mode, provider)) return undefined;
  const a = opts.attribution;
  const refs: SensitiveRef[] = [...(opts.sensitiveRefs ?? [])];
  if (a.customerId) refs.push({ entityId: a.customerId });
  if (a.entityType && a.entityId) refs.push({ entityType: a.entityType, entityId: a.entityId });
  const source = opts.sensitiveSource ?? sensitiveSourceOf(opts.costs);
  let values: string[] = [];
  if (source && refs.length) {
    try {
      values = await sensitiveValuesFor(source, refs);
    } catch (err) {
      throw new ModelError('MODEL_REDACTION_FAILED', `the sensitive fields of ${refs.map((r) => (r.entityType ? `${r.entityType}/${r.entityId}` : r.entityId)).join(', ')} could not be read, so the prompt was not sent to ${provider}: ${(err as Error).message}`, { cause: err, retryable: true, provider, model });
    }
  }
  span.setAttribute('keel.redact.mode', mode);
  return createRedactor({ values });
}

/**
 * Calls a chat model once and accounts for it: a CLIENT span `chat <model>` with the GenAI
 * attributes, the usage from the reply's `usage_metadata`, the cost from the price table, and ONE
 * record in the cost ledger (with the span's trace id, the wall time as `computeMs`, and
 * `details: { tier, provider, requestModel, price }`).
 *
 * Failures are thrown as `ModelError`s with `retryable` set (429/5xx/network/timeouts retryable;
 * 400/401/404 permanent) and write no record. If the reply arrived but the record could not be
 * written, a `CostNotRecordedError` carries the result.
 */
export async function invokeModel(opts: InvokeModelOptions): Promise<InvokeModelResult> {
  const handle = isHandle(opts.model) ? opts.model : undefined;
  const chat = handle ? handle.chat : (opts.model as BaseChatModel);
  const { provider, model: requestModel } = handle ? { provider: handle.provider as string, model: handle.model } : identify(chat);
  const tier = opts.tier ?? handle?.tier;
  const prices = opts.prices ?? handle?.prices ?? (envPrices ??= loadPriceTable());
  const a = opts.attribution;
  const tracer = opts.tracer ?? getTracer('keel.models');

  const attributes: Record<string, string | number | boolean> = {
    [GENAI.OPERATION]: 'chat',
    [GENAI.SYSTEM]: provider,
    [GENAI.PROVIDER]: provider,
    [GENAI.REQUEST_MODEL]: requestModel,
    'keel.agent': a.agent,
    'keel.capability': a.capability,
  };
  if (tier !== undefined) attributes['keel.model.tier'] = tier;
  if (a.runId) attributes['keel.run_id'] = a.runId;
  if (a.customerId) attributes['keel.customer_id'] = a.customerId;
  if (a.workflow) attributes['keel.workflow'] = a.workflow;
  if (a.entityType && a.entityId) attributes['keel.entity'] = `${a.entityType}/${a.entityId}`;
  if (handle?.endpoint && /^https?:/.test(handle.endpoint)) {
    const u = new URL(handle.endpoint);
    attributes['server.address'] = u.hostname;
    attributes['server.port'] = Number(u.port || (u.protocol === 'https:' ? 443 : 80));
  }

  return withSpan(tracer, `chat ${requestModel}`, { kind: SpanKind.CLIENT, attributes }, async (span) => {
    let admission: Admission | undefined;
    let callChat = chat;
    // data stays home: a cloud provider gets placeholders for personal data and secrets (docs/data-protection.md)
    const redactor = await redactorFor(opts, provider, requestModel, span);
    const messages = redactor ? redactMessages(opts.messages, redactor) : opts.messages;
    if (redactor) {
      // how many values were replaced, and of which kinds: never the values
      span.setAttribute('keel.redact.count', redactor.map.size);
      if (redactor.map.size) span.setAttribute('keel.redact.kinds', Object.keys(redactor.counts()));
    }
    if (opts.budget) {
      const maxOut = opts.budget.maxOutputTokens ?? ownMaxTokens(chat) ?? DEFAULT_MAX_OUTPUT_TOKENS;
      const hit = lookupPrice(`${provider}:${requestModel}`, prices);
      const estimateUsd = estimateCallUsd({ price: hit?.price, messages, maxOutputTokens: maxOut });
      const scopes = opts.budget.scopes ?? { customerId: a.customerId, agent: a.agent, workflow: a.workflow, runId: a.runId };
      const details: Record<string, unknown> = { ...opts.details, provider, requestModel };
      if (tier !== undefined) details.tier = tier;
      try {
        admission = await opts.budget.guard.admit({
          callId: `${a.runId ?? a.agent}.${a.capability}`,
          scopes,
          estimateUsd,
          record: { capability: a.capability, model: requestModel, entityType: a.entityType, entityId: a.entityId, details },
        });
      } catch (err) {
        const e = toModelError(err, { provider, model: requestModel });
        span.setAttribute('error.type', e.code);
        span.setAttribute('keel.error.retryable', e.retryable);
        throw e;
      }
      span.setAttribute(GENAI.REQUEST_MAX_TOKENS, maxOut);
      span.setAttribute('keel.budget.reserved_usd', admission.reservedUsd);
      if (admission.scopes.length) span.setAttribute('keel.budget.scopes', admission.scopes);
      if (admission.warnings.length) span.setAttribute('keel.budget.warnings', admission.warnings);
      callChat = bounded(chat, maxOut);
    }
    const started = performance.now();
    let reply: AIMessageChunk;
    try {
      if (opts.tools?.length) {
        if (!callChat.bindTools) throw new ModelError('MODEL_CONFIG_INVALID', `model '${requestModel}' cannot call tools`, { provider, model: requestModel, retryable: false });
        span.setAttribute('keel.tools.offered', opts.tools.map((t) => t.name));
        const bound = callChat.bindTools(opts.tools.map((t) => ({ type: 'function' as const, function: { name: t.name, description: t.description ?? t.name, parameters: t.parameters ?? { type: 'object', properties: {} } } })));
        reply = (await bound.invoke(messages, opts.signal ? { signal: opts.signal } : {})) as AIMessageChunk;
      } else reply = await callChat.invoke(messages, opts.signal ? { signal: opts.signal } : {});
    } catch (err) {
      const e = toModelError(err, { provider, model: requestModel, signal: opts.signal });
      span.setAttribute('error.type', e.status !== undefined ? String(e.status) : e.code);
      span.setAttribute('keel.error.retryable', e.retryable);
      if (admission && opts.budget) await opts.budget.guard.release(admission).catch(() => undefined);
      throw e;
    }
    const computeMs = Math.round((performance.now() - started) * 1000) / 1000;
    const answered = reply instanceof AIMessage ? reply : new AIMessage({ ...reply });
    const keepPlaceholders = opts.restoreAnswer === false;
    const message = redactor && !keepPlaceholders ? restoreMessage(answered, redactor) : answered;
    const usage = usageOf(reply);
    const meta = (reply.response_metadata ?? {}) as Record<string, unknown>;
    const responseModel = typeof meta.model_name === 'string' && meta.model_name ? meta.model_name : typeof meta.model === 'string' && meta.model ? meta.model : requestModel;
    const hit = lookupPrice(`${provider}:${responseModel}`, prices) ?? (responseModel !== requestModel ? lookupPrice(`${provider}:${requestModel}`, prices) : undefined);
    const costUsd = hit ? costOf(hit.price, usage) : 0;

    span.setAttribute(GENAI.RESPONSE_MODEL, responseModel);
    span.setAttribute(GENAI.INPUT_TOKENS, usage.inputTokens);
    span.setAttribute(GENAI.OUTPUT_TOKENS, usage.outputTokens);
    span.setAttribute(GENAI.CACHE_READ_TOKENS, usage.cachedTokens);
    const reasoning = reply.usage_metadata?.output_token_details?.reasoning;
    span.setAttribute(GENAI.REASONING_TOKENS, typeof reasoning === 'number' && reasoning > 0 ? Math.round(reasoning) : 0);
    // the open proposal (semantic-conventions-genai PR #443): amount + ISO 4217 currency, source
    // `local` (computed here from tokens and our price table; `provider` would mean the answer
    // carried it). An unpriced model has no amount: $0 would be a claim, not a cost.
    if (hit) {
      span.setAttribute(GENAI.COST_AMOUNT, costUsd);
      span.setAttribute(GENAI.COST_CURRENCY, 'USD');
      span.setAttribute(GENAI.COST_SOURCE, 'local');
    }
    span.setAttribute('keel.cost.source', hit ? 'price_table' : 'unpriced');
    span.setAttribute('keel.cost.usd', costUsd);
    // the money is known: the reservation becomes the actual cost (before the ledger write, which may fail)
    if (admission && opts.budget) await opts.budget.guard.settle(admission, costUsd);
    const finish = meta.finish_reason ?? meta.stop_reason ?? meta.done_reason;
    if (typeof finish === 'string') span.setAttribute(GENAI.FINISH_REASONS, [finish]);
    if (typeof message.id === 'string') span.setAttribute(GENAI.RESPONSE_ID, message.id);

    const sc = span.spanContext();
    const details: Record<string, unknown> = { ...opts.details, provider, requestModel, price: hit ? { key: hit.key, ...hit.price } : null };
    if (tier !== undefined) details.tier = tier;
    if (a.workflow) details.workflow = a.workflow;
    if (admission) details.budget = { reservedUsd: admission.reservedUsd, scopes: admission.scopes, ...(admission.warnings.length ? { warnings: admission.warnings } : {}) };
    const rec: CostInput = {
      agent: a.agent,
      capability: a.capability,
      model: responseModel,
      tokensIn: usage.inputTokens,
      tokensOut: usage.outputTokens,
      tokensCached: usage.cachedTokens,
      costUsd,
      computeMs,
      details,
    };
    if (a.runId) rec.runId = a.runId;
    if (a.customerId) rec.customerId = a.customerId;
    if (a.entityType) rec.entityType = a.entityType;
    if (a.entityId) rec.entityId = a.entityId;
    if (isSpanContextValid(sc)) rec.traceId = sc.traceId;

    const result: InvokeModelResult = { message, usage, costUsd, model: responseModel, provider, record: undefined, ...(admission ? { admission } : {}), ...(redactor && keepPlaceholders ? { redactor } : {}) };
    try {
      result.record = await opts.costs.recordCost(rec);
    } catch (err) {
      // withSpan records the exception and the error status
      throw new CostNotRecordedError(result, err, { provider, model: responseModel });
    }
    return result;
  });
}
