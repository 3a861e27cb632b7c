/**
 * Tiers that pay: the router sends a request to heuristics (tier 0), the small model (tier 1) or
 * the large one (tier 2) by the caller's declared confidence (of its tier-0 answer) and value,
 * and every model call it makes records the decision and the money saved against the all-large
 * price in the cost ledger (`details.route`, `details.routeReason`, `details.savedUsd`).
 *
 * ```ts
 * const d = decideRoute({ confidence: t0.confidence, value: 'normal', available: { small: models.has(1), large: models.has(2) } });
 * if (d.tier === 0) return t0;                                  // heuristics were sure: nothing spent
 * const r = await routeAndCall({ models, tier: d.tier, decision: d, messages, attribution, costs: store });
 * r.savedUsd;  // what the large model would have cost for the same tokens, minus what was spent
 * ```
 *
 * Rules, in order (threshold 0.6, low confidence 0.3 by default):
 * 1. tier 0 when its confidence ≥ threshold and the value is not `high` (and not forced);
 * 2. tier 0 when no model is configured;
 * 3. tier 2 for a `high`-value request, or a tier-0 confidence below the low mark, when a large model is there;
 * 4. tier 1 when a small model is there;
 * 5. tier 2 (the only model there is).
 * After a tier-1 answer, {@link escalateAfterSmall} climbs to tier 2 when the small model's own
 * confidence is below the threshold and a large model is there.
 */
import type { BaseMessageLike } from '@langchain/core/messages';
import type { CostInput } from '../shared-state/index.ts';
import { invokeModel, type CostAttribution, type CostSink, type InvokeModelOptions, type ToolSpec } from './invoke.ts';
import { costOf, lookupPrice, roundUsd, type ModelPrice, type TokenUsage } from './prices.ts';
import type { ModelRegistry } from './registry.ts';
import { sensitiveSourceOf } from './redact.ts';

export type RouteValue = 'low' | 'normal' | 'high';
export type RouteName = 'heuristics' | 'small' | 'large';

export const DEFAULT_ROUTE_THRESHOLD = 0.6;
export const DEFAULT_LOW_CONFIDENCE = 0.3;

export interface RouteRequest {
  /** confidence of the tier-0 answer, 0..1; undefined when there is none (a model must answer) */
  confidence: number | undefined;
  /** what getting it right is worth, as the caller declares it; default `normal` */
  value?: RouteValue;
  /** which model tiers are configured */
  available: { small: boolean; large: boolean };
  /** tier 0 is good enough at or above this; default 0.6 */
  threshold?: number;
  /** below this the small model is skipped for the large one; default 0.3 */
  lowConfidence?: number;
  /** go to a model even when tier 0 is sure */
  force?: boolean;
}

/**
 * What a capability may tell `ctx.llm` about a call, beyond tier and messages (the runtime passes
 * them to {@link routeAndCall}, `cachedCall` and the batcher):
 */
export interface LlmCallOptions {
  /** the routing decision that led to this call: recorded as `details.route`/`routeReason`, with `savedUsd` */
  route?: Pick<RouteDecision, 'tier' | 'route' | 'reason'>;
  /** the request's intent label (triage's): part of the intent cache's key */
  intent?: string;
  /** entities the caller extracted (`ORDER:4417`): must match for a cache hit */
  entities?: string[];
  /** the answer may be served again to the same request (default false: only declared calls are cached) */
  cacheable?: boolean;
  /** the cache scope: `customer` (default: the task's customer) or `global` (an answer anyone may get) */
  cacheScope?: 'customer' | 'global';
  /** the request text the cache compares (default: the last user message) */
  cacheText?: string;
  /** entities the answer used (`ticket/T-1`): their change events invalidate the cached answer */
  uses?: string[];
  /** `low` work may wait for a batch (`KEEL_BATCH_WINDOW_MS`); `high` never waits; default `normal` */
  urgency?: 'low' | 'normal' | 'high';
  /** the caller's declared value of the answer (for the router) */
  value?: RouteValue;
  /**
   * a stable name for this call within its task (e.g. a graph node's name): the answer is recorded
   * under it, so a graph resumed after a crash (which skips the nodes that finished) reads back
   * the right answer; default: the call's position in the task (`model-1`, `model-2`, …)
   */
  key?: string;
  /**
   * tools the model may call in its answer (bound with LangChain's `bindTools`); in an agent
   * every name must be on the capability's `permissions.tools`, or the call is refused
   */
  tools?: ToolSpec[];
}

/** A tool call in a model's answer, as LangChain reports it (`AIMessage.tool_calls`). */
export interface ModelToolCall {
  name: string;
  args: Record<string, unknown>;
  id?: string;
}

export interface RouteDecision {
  tier: 0 | 1 | 2;
  route: RouteName;
  /** why, in words: recorded in the ledger's details and the agent's output */
  reason: string;
}

const NAMES: Record<0 | 1 | 2, RouteName> = { 0: 'heuristics', 1: 'small', 2: 'large' };
const decision = (tier: 0 | 1 | 2, reason: string): RouteDecision => ({ tier, route: NAMES[tier], reason });
const fmt = (n: number) => String(Math.round(n * 100) / 100);

/** Where a request goes first. Pure: the same request always gets the same decision. */
export function decideRoute(r: RouteRequest): RouteDecision {
  const threshold = r.threshold ?? DEFAULT_ROUTE_THRESHOLD;
  const low = r.lowConfidence ?? DEFAULT_LOW_CONFIDENCE;
  const value = r.value ?? 'normal';
  const c = r.confidence;
  if (!r.force && value !== 'high' && c !== undefined && c >= threshold) return decision(0, `heuristics sure (confidence ${fmt(c)} ≥ ${threshold})`);
  if (!r.available.small && !r.available.large) return decision(0, 'no model configured: tier 0 only');
  const why = c === undefined ? 'no tier-0 answer' : `heuristics unsure (confidence ${fmt(c)} < ${threshold})`;
  if (r.available.large && value === 'high') return decision(2, `high value${c !== undefined ? ` (tier-0 confidence ${fmt(c)})` : ''}`);
  if (r.available.large && c !== undefined && c < low) return decision(2, `low confidence (${fmt(c)} < ${low}): straight to the large model`);
  if (r.available.small) return decision(1, value === 'high' ? `high value, but no large model: ${why}` : r.force && c !== undefined && c >= threshold ? 'forced to a model' : why);
  return decision(2, `${why}; no small model configured`);
}

/** After a tier-1 answer: climb to tier 2 when the small model is itself unsure and a large model is there. */
export function escalateAfterSmall(o: { confidence: number; available: { large: boolean }; threshold?: number }): RouteDecision | undefined {
  const threshold = o.threshold ?? DEFAULT_ROUTE_THRESHOLD;
  if (!o.available.large || o.confidence >= threshold) return undefined;
  return decision(2, `small model unsure (confidence ${fmt(o.confidence)} < ${threshold})`);
}

/** The price the all-large alternative is measured at: the large model's, when one is configured and priced. */
export function largePriceOf(models: ModelRegistry): ModelPrice | undefined {
  const d = models.describe().find((x) => x.tier === 2);
  if (!d || !d.configured || !d.price) return undefined;
  return { input: d.price.input, cachedInput: d.price.cachedInput, output: d.price.output };
}

/** What the large model would have cost for the same tokens, minus what was spent (never negative). */
export function savedAgainstLarge(usage: TokenUsage, spentUsd: number, largePrice: ModelPrice | undefined): number | undefined {
  if (!largePrice) return undefined;
  return roundUsd(Math.max(0, costOf(largePrice, usage) - spentUsd));
}

export interface RouteAndCallOptions {
  models: ModelRegistry;
  /** the tier the decision chose (1 or 2) */
  tier: 1 | 2;
  /** the decision that led here; default: the caller asked for this tier */
  decision?: RouteDecision;
  messages: BaseMessageLike[];
  attribution: CostAttribution;
  costs: CostSink;
  signal?: AbortSignal;
  /** the all-large reference price; default the configured large model's ({@link largePriceOf}) */
  largePrice?: ModelPrice;
  /** passed through to `invokeModel` (e.g. a budget admission, a tracer) */
  invoke?: Partial<Omit<InvokeModelOptions, 'model' | 'messages' | 'attribution' | 'costs'>>;
}

export interface RoutedAnswer {
  text: string;
  usage: TokenUsage;
  costUsd: number;
  model: string;
  tier: 1 | 2;
  route: RouteName;
  reason: string;
  /** against the all-large price; 0 for a tier-2 call; undefined when no large price is known */
  savedUsd: number | undefined;
  /** soft budgets the call went over (when `invoke.budget` admitted it) */
  budgetWarnings?: string[];
  /** the tool calls the model asked for (none: absent); the caller decides which may run */
  toolCalls?: ModelToolCall[];
}

/**
 * One model call at the routed tier through `invokeModel`, its ledger record carrying
 * `details.route` (`small`/`large`), `details.routeReason` and `details.savedUsd` (computed
 * from the call's own tokens at the large model's price, minus its cost).
 */
export async function routeAndCall(o: RouteAndCallOptions): Promise<RoutedAnswer> {
  const d = o.decision ?? decision(o.tier, 'requested by the caller');
  const handle = o.models.get(o.tier, { capability: o.attribution.capability });
  const largePrice = o.largePrice ?? largePriceOf(o.models) ?? (o.tier === 2 ? lookupPrice(`${handle.provider}:${handle.model}`, handle.prices)?.price : undefined);
  let saved: number | undefined;
  // the record gets the savings once its tokens and cost are known
  const costs: CostSink = {
    recordCost: (rec: CostInput) => {
      const usage = { inputTokens: rec.tokensIn ?? 0, outputTokens: rec.tokensOut ?? 0, cachedTokens: rec.tokensCached ?? 0 };
      saved = o.tier === 2 ? 0 : savedAgainstLarge(usage, rec.costUsd ?? 0, largePrice);
      return o.costs.recordCost({ ...rec, details: { ...rec.details, route: d.route, routeReason: d.reason, ...(saved !== undefined ? { savedUsd: saved } : {}) } });
    },
  };
  // the sink above wraps the caller's: sensitive fields are read from the caller's (a StateStore)
  const sensitiveSource = o.invoke?.sensitiveSource ?? sensitiveSourceOf(o.costs);
  const r = await invokeModel({ ...o.invoke, model: handle, tier: o.tier, messages: o.messages, attribution: o.attribution, costs, ...(o.signal ? { signal: o.signal } : {}), ...(sensitiveSource ? { sensitiveSource } : {}) });
  const text = typeof r.message.content === 'string' ? r.message.content : JSON.stringify(r.message.content);
  const toolCalls = (r.message.tool_calls ?? []).map((c): ModelToolCall => ({ name: c.name, args: c.args, ...(c.id ? { id: c.id } : {}) }));
  return { text, usage: r.usage, costUsd: r.costUsd, model: r.model, tier: o.tier, route: d.route, reason: d.reason, savedUsd: saved, ...(r.admission?.warnings.length ? { budgetWarnings: r.admission.warnings } : {}), ...(toolCalls.length ? { toolCalls } : {}) };
}
