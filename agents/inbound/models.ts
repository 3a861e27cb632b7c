/**
 * The tier ladder of the inbound agents: tier 0 (heuristics) first; when its confidence is
 * below the threshold, the small model (tier 1) if one is configured, then the large one
 * (tier 2) if the answer is still unsure. No model configured, no budget left, or a model that
 * fails or answers nonsense: the agent keeps the best answer so far and says which tier it is.
 */
import { invokeModel, type CostSink, type ModelRegistry, type ModelTier } from '../models/index.ts';
import type { TaskContext } from '../runtime/index.ts';
import { CONFIDENCE_THRESHOLD } from './heuristics.ts';

export interface ModelAccess {
  registry: ModelRegistry | undefined;
  /** where model calls are recorded; see {@link modelAccess} */
  costs: CostSink;
}

const isRegistry = (v: unknown): v is ModelRegistry =>
  typeof v === 'object' && v !== null && typeof (v as ModelRegistry).has === 'function' && typeof (v as ModelRegistry).get === 'function';
const isSink = (v: unknown): v is CostSink => typeof v === 'object' && v !== null && typeof (v as CostSink).recordCost === 'function';

/**
 * What `ctx.models` gives: a `ModelRegistry` (from `createModelRegistry()`), or
 * `{ registry, costs }` where `costs` is the cost ledger (the StateStore). Without a ledger,
 * each model call's cost record is written to the task's log instead.
 */
export function modelAccess(ctx: Pick<TaskContext<unknown>, 'models' | 'logger'>): ModelAccess {
  const m = ctx.models as unknown;
  const registry = isRegistry(m) ? m : isRegistry((m as { registry?: unknown } | undefined)?.registry) ? (m as { registry: ModelRegistry }).registry : undefined;
  const given = (m as { costs?: unknown } | undefined)?.costs;
  const costs: CostSink = isSink(given)
    ? given
    : { recordCost: async (rec) => void ctx.logger.info({ cost: rec }, 'model call (no cost ledger in ctx.models: logged only)') };
  return { registry, costs };
}

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
  /** cost attribution beyond agent/capability/run */
  attribution?: { customerId?: string | undefined; entityType?: string; entityId?: string };
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
  const { registry, costs } = modelAccess(ctx);
  if (!registry || (!registry.has(1) && !registry.has(2))) return { ...best, note: 'no model configured: tier 0 only' };
  for (const tier of [1, 2] as const) {
    if (best.tier > 0 && best.confidence >= threshold) break;
    if (!registry.has(tier)) continue;
    if (ctx.budgetUsd !== undefined && ctx.budgetUsd <= 0) return { ...best, note: 'no budget left for a model call' };
    const handle = registry.get(tier, { capability: ctx.capability });
    const customerId = o.attribution?.customerId ?? ctx.envelope.customer;
    const call = async (messages: { role: 'system' | 'user'; content: string }[]) => {
      const r = await invokeModel({
        model: handle,
        messages,
        costs,
        signal: ctx.signal,
        attribution: {
          agent: ctx.agent,
          capability: ctx.capability,
          ...(ctx.envelope.correlationId ? { runId: ctx.envelope.correlationId } : {}),
          ...(customerId ? { customerId } : {}),
          ...(o.attribution?.entityType ? { entityType: o.attribution.entityType } : {}),
          ...(o.attribution?.entityId ? { entityId: o.attribution.entityId } : {}),
        },
        details: { reason: `tier ${best.tier} confidence ${best.confidence} < ${threshold}` },
      });
      const c = r.message.content;
      return typeof c === 'string' ? c : JSON.stringify(c);
    };
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
