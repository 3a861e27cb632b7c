/**
 * The tier ladder of the inbound agents: tier 0 (heuristics) first; when its confidence is
 * below the threshold, the small model (tier 1) if one is configured, then the large one
 * (tier 2) if the answer is still unsure. No model configured, no budget left, or a model that
 * fails or answers nonsense: the agent keeps the best answer so far and says which tier it is.
 */
import type { TaskContext } from '../../runtime/index.ts';
import { CONFIDENCE_THRESHOLD } from './heuristics.ts';

export type ModelTier = 1 | 2;
const TIER_NAME = { 1: 'small', 2: 'large' } as const;

export interface Rung<T> {
  value: T;
  confidence: number;
  tier: number;
  /** why the ladder stopped where it did */
  note?: string;
}

export interface LadderOptions<T> {
  ctx: TaskContext<unknown>;
  /** the tier-0 answer */
  start: { value: T; confidence: number };
  /** asks the model of `tier` (a chat model from the registry); undefined when its answer is unusable */
  ask: (call: (messages: { role: 'system' | 'user'; content: string }[]) => Promise<string>, tier: ModelTier) => Promise<{ value: T; confidence: number } | undefined>;
  threshold?: number;
  /** go straight to a model even when tier 0 is sure (e.g. a high-value case); default false */
  force?: boolean;
}

/** Climbs tiers 1 and 2 while the answer's confidence is below the threshold and a model is there. */
export async function climb<T>(o: LadderOptions<T>): Promise<Rung<T>> {
  const { ctx } = o;
  const threshold = o.threshold ?? CONFIDENCE_THRESHOLD;
  let best: Rung<T> = { ...o.start, tier: 0 };
  if (!o.force && best.confidence >= threshold) return best;
  if (!ctx.hasModel('small') && !ctx.hasModel('large')) return { ...best, note: 'no model configured: tier 0 only' };
  for (const tier of [1, 2] as const) {
    if (best.tier > 0 && best.confidence >= threshold) break;
    if (!ctx.hasModel(TIER_NAME[tier])) continue;
    if (ctx.budgetUsd !== undefined && ctx.budgetUsd <= 0) return { ...best, note: 'no budget left for a model call' };
    // ctx.llm records the call in the cost ledger (agent, capability, run, customer) and as an
    // effect, so a retried task or a replay reuses the answer instead of paying again
    const call = async (messages: { role: 'system' | 'user'; content: string }[]) => (await ctx.llm(TIER_NAME[tier], messages)).text;
    try {
      const answer = await o.ask(call, tier);
      if (!answer) {
        best = { ...best, note: `tier ${tier} answer was unusable; kept tier ${best.tier}` };
        continue;
      }
      best = { value: answer.value, confidence: answer.confidence, tier };
    } catch (err) {
      if (ctx.signal.aborted) throw err;
      ctx.logger.warn({ err, tier }, 'model call failed: keeping the lower tier answer');
      best = { ...best, note: `tier ${tier} model failed (${(err as Error).message}); kept tier ${best.tier}` };
    }
  }
  return best;
}
