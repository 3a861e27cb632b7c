/**
 * Models and cost: LangChain chat models per tier, configured by environment, and a cost ledger
 * record for every call.
 *
 * ```ts
 * import { createModelRegistry, invokeModel, isModelError } from './models/index.ts';
 * const models = createModelRegistry();                      // KEEL_MODEL_SMALL=openai:gpt-4o-mini ...
 * if (!models.has('small')) return heuristicAnswer(ticket);  // tier 0: no model needed
 * const { message, costUsd } = await invokeModel({
 *   model: models.get('small', { capability: 'ticket.triage' }),
 *   messages: [{ role: 'user', content: ticket.text }],
 *   attribution: { agent: 'triage', capability: 'ticket.triage', runId, customerId: 'C-7', entityType: 'ticket', entityId: 'T-42' },
 *   costs: store,                                            // the StateStore: one cost record per call
 *   signal,
 * });
 * ```
 *
 * `keel cost --by customer --since 7d` then answers what it cost and why. Tests and replays use
 * `ScriptedChatModel` (or `KEEL_MODEL_SMALL=scripted:/path/replies.json`). See docs/models-and-cost.md.
 */
export { createModelRegistry, parseModelSpec, MODEL_TIERS, MODEL_PROVIDERS, MODEL_ENV_DOCS, DEFAULT_OLLAMA_URL, DEFAULT_MODEL_MAX_RETRIES, DEFAULT_MODEL_TIMEOUT_MS } from './registry.ts';
export type { ModelRegistry, ModelHandle, ModelSpec, ModelDescription, ModelTier, TierName, ModelProvider, ModelEnvDoc, CreateModelRegistryOptions } from './registry.ts';

export { ScriptedChatModel, readScript } from './scripted.ts';
export type { ScriptedReply, ScriptedChatModelParams } from './scripted.ts';

export { BUILTIN_PRICES, loadPriceTable, lookupPrice, priceOf, costOf, roundUsd } from './prices.ts';
export type { ModelPrice, PriceTable, TokenUsage } from './prices.ts';

export { invokeModel, usageOf, GENAI } from './invoke.ts';
export { createRedactor, redactText, redactMessages, restoreMessage, redactModeOf, shouldRedact, isCloudProvider, ibanValid, sensitiveSourceOf, sensitiveValuesFor, CLOUD_PROVIDERS, REDACT_MODES, DEFAULT_REDACT_MODE, SENSITIVE_KINDS } from './redact.ts';
export type { Redactor, RedactorOptions, RedactMode, SensitiveKind, SensitiveSource, SensitiveRef } from './redact.ts';
export type { InvokeModelOptions, InvokeModelResult, CostAttribution, CostSink, ToolSpec } from './invoke.ts';

export { ModelError, ModelNotConfiguredError, ModelConfigError, CostNotRecordedError, BudgetRefusedError, isModelError, toModelError } from './errors.ts';
export type { ModelErrorCode, ModelErrorOptions, BudgetRefusal } from './errors.ts';

export { createBudgetGuard, estimateCallUsd, windowOf, raiseApprovalId, MODEL_ENTITY_TYPES, DEFAULT_MAX_OUTPUT_TOKENS, RESERVATION_TTL_MS } from './budgets.ts';
export type { BudgetGuard, BudgetScopes, Admission, AdmitRequest, BudgetStatus, BudgetSpec, BudgetScope, BudgetPeriod, BudgetMode } from './budgets.ts';

export { decideRoute, escalateAfterSmall, routeAndCall, largePriceOf, savedAgainstLarge, DEFAULT_ROUTE_THRESHOLD, DEFAULT_LOW_CONFIDENCE } from './router.ts';
export type { RouteRequest, RouteDecision, RouteValue, RouteName, RouteAndCallOptions, RoutedAnswer, LlmCallOptions, ModelToolCall } from './router.ts';

export { createIntentCache, cachedCall, requestSignature, signatureMismatch, cosine, intentCacheType, INTENT_CACHE, DEFAULT_INTENT_CACHE_THRESHOLD } from './intent-cache.ts';
export type { IntentCache, IntentCacheOptions, CacheRequest, CacheLookup, CachedAnswer, CachedCallOptions, CachedCallAnswer, RequestSignature } from './intent-cache.ts';

export { createBatcher, batchPrompt, splitBatchAnswer, splitCost } from './batch.ts';
export type { Batcher, BatcherOptions, BatchItem, BatchAnswer, Urgency } from './batch.ts';
