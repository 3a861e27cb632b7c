/**
 * The parts of a task's context that the runtime (runtime.ts) and the capability test kit
 * (testkit.ts) share, so a capability behaves the same under both: recorded side effects, model
 * calls against the task's budget, secrets, and the output check. Internal to runtime/.
 */
import type { BaseMessageLike } from '@langchain/core/messages';
import type { StateStore } from '../shared-state/index.ts';
import type { ModelRegistry } from '../models/index.ts';
import type { Capability } from './define.ts';
import { AgentError, BudgetExceededError } from './errors.ts';

/** Extra time a task's claim outlives its timeout before another replica may take it over. */
export const LEASE_MARGIN_MS = 2_000;

/** The idempotency key of a task's named side effect (stable across retries and replicas). */
export const effectKey = (capability: string, idempotencyKey: string, name: string) => `effect:${capability}:${idempotencyKey}:${name}`;

/**
 * Runs `fn` at most once per key: claim the key; completed → the recorded result; running
 * elsewhere → AGENT_EFFECT_IN_PROGRESS (retryable after the lease); else run, then `complete`
 * with the result, or `release` when it throws.
 */
export async function recordOnce<T>(store: StateStore, key: string, leaseMs: number, fn: (key: string) => Promise<T>): Promise<{ result: T; replayed: boolean }> {
  const c = await store.claim(key, { leaseMs });
  if (c.status === 'completed') return { result: c.result as T, replayed: true };
  if (c.status === 'running') {
    throw new AgentError('AGENT_EFFECT_IN_PROGRESS', `side effect ${key} is in progress elsewhere`, { retryable: true, nextDelayMs: Math.max(250, Date.parse(c.leaseUntil) - Date.now() + 250) });
  }
  let result: T;
  try {
    result = await fn(key);
  } catch (err) {
    await store.release(key, c.token).catch(() => undefined);
    throw err;
  }
  await store.complete(key, c.token, result ?? null);
  return { result, replayed: false };
}

/** Only the secrets the capability declared. */
export function grantedSecrets(cap: Capability, secrets: Readonly<Record<string, string>> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const s of cap.permissions?.secrets ?? []) {
    const v = secrets?.[s];
    if (v !== undefined) out[s] = v;
  }
  return out;
}

export interface ModelAnswer {
  text: string;
  usage: { inputTokens: number; outputTokens: number; cachedTokens: number };
  costUsd: number;
  model: string;
}

/**
 * One model call of a task at a tier, refused before it is made when no model is configured or
 * the task's budget is already spent; its cost goes to the store's ledger, attributed.
 */
export async function callModel(o: {
  models: ModelRegistry | undefined;
  tier: 'small' | 'large';
  messages: unknown[];
  capability: string;
  attribution: { agent: string; runId: string | undefined; customerId: string | undefined };
  budgetUsd: number | undefined;
  spentUsd: number;
  store: StateStore;
  signal: AbortSignal;
}): Promise<ModelAnswer> {
  if (!o.models?.has(o.tier)) throw new AgentError('AGENT_UNKNOWN', `no ${o.tier} model configured`);
  // the budget stops spending before it happens: no call once the task's budget is used up
  if (o.budgetUsd !== undefined && o.spentUsd >= o.budgetUsd) throw new BudgetExceededError(o.budgetUsd, o.spentUsd);
  // LangChain loads on the first model call, not in every agent process
  const { invokeModel } = await import('../models/index.ts');
  const r = await invokeModel({
    model: o.models.get(o.tier, { capability: o.capability }),
    tier: o.tier === 'small' ? 1 : 2,
    messages: o.messages as BaseMessageLike[],
    attribution: { ...o.attribution, capability: o.capability },
    costs: o.store,
    signal: o.signal,
  });
  return { text: typeof r.message.content === 'string' ? r.message.content : JSON.stringify(r.message.content), usage: r.usage, costUsd: r.costUsd, model: r.model };
}

/** The handler's output, parsed by the capability's schema; AGENT_BAD_OUTPUT names every issue. */
export function checkOutput<O>(cap: Capability<unknown, O>, raw: unknown): O {
  const parsed = cap.output.safeParse(raw);
  if (!parsed.success) {
    throw new AgentError('AGENT_BAD_OUTPUT', `capability ${cap.name} returned output that fails its schema: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(output)'}: ${i.message}`).join('; ')}`);
  }
  return parsed.data;
}
