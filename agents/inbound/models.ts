/**
 * The tier ladder of the inbound agents, routed by models/router.ts (`decideRoute`): tier 0
 * (heuristics) when it is sure and the ticket is not high-value; else the small model (tier 1)
 * when one is configured, or straight to the large one (tier 2) for a high-value ticket or a
 * tier-0 confidence below 0.3 when a large model is configured; after a small model's answer
 * that is itself unsure, the large one. No model configured, no budget left, or a model that
 * fails or answers nonsense: the agent keeps the best answer so far and says which tier it is.
 *
 * Every decision is kept (`Rung.route`: tier and reason), and each model call passes its
 * decision to `ctx.llm` as a third argument (`{ route }`, a `LlmCallOptions`) so the ledger record
 * carries `details.route`, `details.routeReason` and `details.savedUsd` once the runtime's
 * `ctx.llm` routes through `routeAndCall` (see docs/models-and-cost.md "Routing").
 */
import type { TaskContext } from '../../runtime/index.ts';
import type { LlmCallOptions, RouteDecision, RouteValue } from '../../models/index.ts';
import { CONFIDENCE_THRESHOLD } from './heuristics.ts';

export type ModelTier = 1 | 2;
const TIER_NAME = { 1: 'small', 2: 'large' } as const;

export interface Rung<T> {
  value: T;
  confidence: number;
  tier: number;
  /** why the ladder stopped where it did */
  note?: string;
  /** the routing decisions taken, in order (the first is where the ladder started) */
  route?: Pick<RouteDecision, 'tier' | 'reason'>[];
}

export interface LadderOptions<T> {
  ctx: TaskContext<unknown>;
  /** the tier-0 answer */
  start: { value: T; confidence: number };
  /** asks the model of `tier` (a chat model from the registry); undefined when its answer is unusable */
  ask: (call: (messages: { role: 'system' | 'user'; content: string }[]) => Promise<string>, tier: ModelTier) => Promise<{ value: T; confidence: number } | undefined>;
  threshold?: number;
  /** go straight to a model even when tier 0 is sure; default false */
  force?: boolean;
  /** what getting it right is worth: `high` goes to the large model when one is configured; default `normal` */
  value?: RouteValue;
  /** passed with every model call (intent, entities, cacheable, urgency …) for the runtime's cache and batching */
  call?: Omit<LlmCallOptions, 'route'>;
}

type LlmWithOptions = (tier: 'small' | 'large', messages: unknown[], opts?: LlmCallOptions) => Promise<{ text: string }>;

/** Routes, then climbs: tier 0, the routed model, and the large one when the small one is unsure. */
export async function climb<T>(o: LadderOptions<T>): Promise<Rung<T>> {
  const { ctx } = o;
  const threshold = o.threshold ?? CONFIDENCE_THRESHOLD;
  let best: Rung<T> = { ...o.start, tier: 0 };
  const available = { small: ctx.hasModel('small'), large: ctx.hasModel('large') };
  if (!available.small && !available.large) {
    if (!o.force && (o.value ?? 'normal') !== 'high' && best.confidence >= threshold) return best;
    return { ...best, note: 'no model configured: tier 0 only', route: [{ tier: 0, reason: 'no model configured: tier 0 only' }] };
  }
  // the router is pure, but models/ brings LangChain: loaded only where a model is configured
  const { decideRoute, escalateAfterSmall } = await import('../../models/index.ts');
  const first = decideRoute({ confidence: best.confidence, value: o.value, available, threshold, force: o.force });
  const route: Rung<T>['route'] = [{ tier: first.tier, reason: first.reason }];
  if (first.tier === 0) return { ...best, route };
  // ctx.llm records the call in the cost ledger (agent, capability, run, customer) and as an
  // effect, so a retried task or a replay reuses the answer instead of paying again
  const llm = ctx.llm as LlmWithOptions;
  let next: RouteDecision | undefined = first;
  while (next && next.tier !== 0) {
    const d: RouteDecision = next;
    const tier = d.tier as ModelTier;
    next = undefined;
    if (ctx.budgetUsd !== undefined && ctx.budgetUsd <= 0) return { ...best, note: 'no budget left for a model call', route };
    const call = async (messages: { role: 'system' | 'user'; content: string }[]) => (await llm(TIER_NAME[tier], messages, { ...o.call, route: d })).text;
    try {
      const answer = await o.ask(call, tier);
      if (!answer) best = { ...best, note: `tier ${tier} answer was unusable; kept tier ${best.tier}` };
      else best = { value: answer.value, confidence: answer.confidence, tier };
    } catch (err) {
      if (ctx.signal.aborted) throw err;
      // a budget refused the call before the provider was asked (the runtime already tried a
      // cheaper tier per KEEL_BUDGET_ON_REFUSAL): a higher tier would be refused too
      if ((err as { code?: unknown }).code === 'MODEL_BUDGET_REFUSED') {
        ctx.logger.warn({ err, tier }, 'model call refused by a budget: keeping the lower tier answer');
        return { ...best, note: `${(err as Error).message}; kept tier ${best.tier}` };
      }
      ctx.logger.warn({ err, tier }, 'model call failed: keeping the lower tier answer');
      best = { ...best, note: `tier ${tier} model failed (${(err as Error).message}); kept tier ${best.tier}` };
    }
    if (tier === 1) {
      // an unusable or failed small answer counts as unsure: the large model may still answer
      const up = escalateAfterSmall({ confidence: best.tier === 1 ? best.confidence : 0, available, threshold });
      if (up) {
        route.push({ tier: up.tier, reason: best.tier === 1 ? up.reason : `small model gave no usable answer` });
        next = best.tier === 1 ? up : { ...up, reason: 'small model gave no usable answer' };
      }
    }
  }
  return { ...best, route };
}
