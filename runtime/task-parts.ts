/**
 * The parts of a task's context that the runtime (runtime.ts) and the capability test kit
 * (testkit.ts) share, so a capability behaves the same under both: recorded side effects, model
 * calls against the task's budget, secrets, and the output check. Internal to runtime/.
 */
import type { BaseMessageLike } from '@langchain/core/messages';
import { trace } from '@opentelemetry/api';
import type { StateStore } from '../shared-state/index.ts';
import type { Batcher, BudgetGuard, IntentCache, LlmCallOptions, ModelRegistry, ModelToolCall } from '../models/index.ts';
import type { KeelConfig } from '../config/index.ts';
import type { Logger } from '../observability/index.ts';
import type { Capability } from './define.ts';
import { workflowRunType } from '../workflows/index.ts';
import { AgentError } from './errors.ts';

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

/** `agent\0SECRET` names this process has recorded a `secret.read` for (once each per process). */
const secretReadsAudited = new Set<string>();

/**
 * Only the secrets the capability declared. With `audit`, the first read of each secret name
 * by this agent in this process appends `secret.read` (actor `agent:<name>`, details: the
 * secret's NAME, the capability, the trace id; never the value), off the task's path: the
 * append is not awaited, and a failure is logged (and the next read tries again).
 */
export function grantedSecrets(
  cap: Capability,
  secrets: Readonly<Record<string, string>> | undefined,
  audit?: { store: Pick<StateStore, 'appendAudit'>; agent: string; logger?: Logger },
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const s of cap.permissions?.secrets ?? []) {
    const v = secrets?.[s];
    if (v === undefined) continue;
    if (!audit) {
      out[s] = v;
      continue;
    }
    Object.defineProperty(out, s, {
      enumerable: true,
      get: () => {
        const k = `${audit.agent}\0${s}`;
        if (!secretReadsAudited.has(k)) {
          secretReadsAudited.add(k);
          const traceId = trace.getActiveSpan()?.spanContext().traceId;
          audit.store
            .appendAudit({ actor: { kind: 'agent', id: audit.agent }, action: 'secret.read', subject: `secret/${s}`, details: { secret: s, capability: cap.name, ...(traceId ? { traceId } : {}) } })
            .catch((err: unknown) => {
              secretReadsAudited.delete(k);
              audit.logger?.error({ err, secret: s }, 'secret read could not be audited');
            });
        }
        return v;
      },
    });
  }
  return out;
}

export interface ModelAnswer {
  text: string;
  usage: { inputTokens: number; outputTokens: number; cachedTokens: number };
  costUsd: number;
  model: string;
  /** the tier that answered, when a budget refusal sent the call to a cheaper one (policy `cheaper`) */
  downgraded?: { from: 'small' | 'large'; to: 'small' | 'large'; reason: string };
  /** soft budgets this call went over */
  budgetWarnings?: string[];
  /** served from the intent cache (no provider call) */
  cacheHit?: boolean;
  /** against the all-large price (routing) or the cached answer's cost (a cache hit) */
  savedUsd?: number;
  /** answered as one item of a batch */
  batched?: { size: number; id: string };
  /** the tool calls the model asked for, as it answered (the runtime keeps only the allowed ones: runtime/tool-guard.ts) */
  toolCalls?: ModelToolCall[];
}

/** The system prompt and the last user message of a chat prompt (as text). */
function splitPrompt(messages: readonly unknown[]): { system: string | undefined; user: string | undefined } {
  let system: string | undefined;
  let user: string | undefined;
  for (const m of messages) {
    const r = m as { role?: unknown; content?: unknown; _getType?: () => string };
    const role = typeof r.role === 'string' ? r.role : typeof r._getType === 'function' ? r._getType() : undefined;
    const content = typeof r.content === 'string' ? r.content : undefined;
    if (content === undefined) continue;
    if (role === 'system') system = system === undefined ? content : `${system}\n${content}`;
    if (role === 'user' || role === 'human') user = content;
  }
  return { system, user };
}

/** What one process shares between its tasks' model calls: the intent cache and the batchers. */
export interface ModelServices {
  cache(): Promise<IntentCache | undefined>;
  batcher(capability: string, tier: 'small' | 'large', instructions: string, models: ModelRegistry, guard: BudgetGuard): Promise<Batcher>;
  logger?: Logger;
  close(): Promise<void>;
}

/**
 * The process's intent cache (its embedder is the memory layer's, loaded on the first cacheable
 * call; off when KEEL_INTENT_CACHE_TTL=0) and one batcher per capability, tier and instructions
 * (KEEL_BATCH_WINDOW_MS / KEEL_BATCH_SIZE). The cache's entries are invalidated by change events
 * of the entities their answers used: this process polls the change log every 2 s for that.
 */
export function modelServices(store: StateStore, config: KeelConfig, logger?: Logger): ModelServices {
  let cacheP: Promise<IntentCache | undefined> | undefined;
  let poll: NodeJS.Timeout | undefined;
  const batchers = new Map<string, Batcher>();
  return {
    logger,
    cache() {
      cacheP ??= (async () => {
        if (config.intentCacheTtlS <= 0) return undefined;
        const [{ createEmbeddings }, { createIntentCache }] = await Promise.all([import('../memory/index.ts'), import('../models/index.ts')]);
        const embeddings = createEmbeddings({ spec: config.embeddings, modelsDir: config.modelsDir, modelEnv: config.modelEnv });
        const cache = createIntentCache({ store, embeddings, ttlS: config.intentCacheTtlS });
        let cursor = await store.headCursor();
        poll = setInterval(() => {
          cache.invalidateFromChanges(cursor).then(
            (r) => void (cursor = r.cursor),
            (err: unknown) => logger?.warn({ err }, 'intent cache: invalidation from the change log failed (will retry)'),
          );
        }, 2_000);
        poll.unref();
        return cache;
      })();
      return cacheP;
    },
    async batcher(capability, tier, instructions, models, guard) {
      const { createBatcher } = await import('../models/index.ts');
      const key = `${capability}\u0000${tier}\u0000${instructions}`;
      let b = batchers.get(key);
      if (!b) {
        b = createBatcher({ kind: capability, models, tier, costs: store, instructions, windowMs: config.batchWindowMs, size: config.batchSize, invoke: { budget: { guard, scopes: {} } } });
        batchers.set(key, b);
      }
      return b;
    },
    async close() {
      if (poll) clearInterval(poll);
      await Promise.all([...batchers.values()].map((b) => b.close().catch(() => undefined)));
    },
  };
}


/** What a task knows about the run it belongs to: the workflow's name and the run's own budget. */
export interface RunBudget {
  runId: string | undefined;
  workflow: string | undefined;
  /** the run's whole budget (a workflow run's `budgetUsd`, else the task's `Keel-Budget-Usd`) */
  budgetUsd: number | undefined;
}

/**
 * The run a task belongs to (its correlation id): a workflow run's name and total budget from the
 * run entity, else the envelope's budget as the run's own. Read once per task, on its first model call.
 */
export async function runBudgetOf(store: StateStore, env: { correlationId: string | undefined; budgetUsd: number | undefined }): Promise<RunBudget> {
  const runId = env.correlationId;
  if (!runId) return { runId, workflow: undefined, budgetUsd: env.budgetUsd };
  const run = await store.get<{ workflow?: string; budgetUsd?: number }>(workflowRunType.name, runId).catch(() => null);
  if (!run) return { runId, workflow: undefined, budgetUsd: env.budgetUsd };
  return { runId, workflow: run.state.workflow, budgetUsd: run.state.budgetUsd };
}

/** Cheaper tiers to try after a refusal, by policy: `cheaper` goes large → small, then tier 0 (the caller). */
const FALLBACK: Record<'small' | 'large', ('small' | 'large')[]> = { large: ['small'], small: [] };

/**
 * One model call of a task at a tier, ADMITTED against budgets before the provider is asked
 * (models/budgets.ts): the customer's, the agent's, the workflow's (by name), the run's and the
 * engine's. The run's own budget becomes a run-scope budget the first time one of its tasks
 * calls a model, so the run's steps — parallel ones included — share one remainder. Its cost
 * goes to the store's ledger, attributed (workflow name included).
 *
 * On a refusal, `policy` (KEEL_BUDGET_ON_REFUSAL) decides: `cheaper` tries the next cheaper tier
 * (large → small) and then throws; `tier0` throws at once; `ask` throws and asks the operator
 * (one `budget.raise` approval per budget window, in `keel approvals`; once approved, the next
 * admission in that window applies the raise). The error is a `BudgetRefusedError`
 * (`MODEL_BUDGET_REFUSED`, naming the scope): the handler falls back to tier 0.
 */
export async function callModel(o: {
  models: ModelRegistry | undefined;
  tier: 'small' | 'large';
  messages: unknown[];
  capability: string;
  attribution: { agent: string; runId: string | undefined; customerId: string | undefined };
  /** the run's workflow and own budget ({@link runBudgetOf}); default: none */
  run?: RunBudget;
  /** KEEL_BUDGET_ON_REFUSAL; default `cheaper` */
  policy?: 'cheaper' | 'tier0' | 'ask';
  /** the task's id: a task outside any run (no correlation id) keeps its own budget under `run:task-<id>` */
  taskId?: string;
  /** the caller's routing, cache and batching declarations (`ctx.llm`'s third argument) */
  call?: LlmCallOptions;
  /** the process's intent cache and batchers ({@link modelServices}); without them every call goes to the provider */
  services?: ModelServices;
  store: StateStore;
  signal: AbortSignal;
}): Promise<ModelAnswer> {
  if (!o.models?.has(o.tier)) throw new AgentError('AGENT_UNKNOWN', `no ${o.tier} model configured`);
  // LangChain loads on the first model call, not in every agent process
  const { routeAndCall, cachedCall, createBudgetGuard, isModelError, raiseApprovalId } = await import('../models/index.ts');
  const call = o.call ?? {};
  const guard = createBudgetGuard(o.store);
  const actor = { kind: 'agent', id: o.attribution.agent } as const;
  const runId = o.run?.runId ?? o.attribution.runId;
  // a task outside any run still has its own budget (Keel-Budget-Usd): it binds under a task-scoped key
  const budgetRunId = runId ?? (o.run?.budgetUsd !== undefined && o.taskId ? `task-${o.taskId}` : undefined);
  if (budgetRunId && o.run?.budgetUsd !== undefined) await guard.ensure({ scope: 'run', key: budgetRunId, usd: o.run.budgetUsd, period: 'month', mode: 'hard' }, actor);
  const scopes = { customerId: o.attribution.customerId, agent: o.attribution.agent, workflow: o.run?.workflow, runId: budgetRunId };
  const policy = o.policy ?? 'cheaper';
  const tiers = [o.tier, ...(policy === 'cheaper' ? FALLBACK[o.tier].filter((t) => o.models!.has(t)) : [])];
  let refusal: (Error & { refusal?: { scope: string; key: string; period: 'day' | 'month'; window: string; limitUsd: number; spentUsd: number; reservedUsd: number; askedUsd: number | undefined } }) | undefined;
  const attribution = { ...o.attribution, ...(o.run?.workflow ? { workflow: o.run.workflow } : {}), capability: o.capability };
  const messages = o.messages as BaseMessageLike[];

  // low-urgency work waits for its batch (one call for many items, its cost split among them);
  // a batch is admitted against the engine's budget, each item's share is recorded for its customer
  if (call.urgency === 'low' && o.services && !call.tools?.length) {
    const { system, user } = splitPrompt(messages);
    const batcher = user !== undefined ? await o.services.batcher(o.capability, o.tier, system ?? '', o.models, guard) : undefined;
    if (batcher && user !== undefined) {
      const a = await batcher.submit({ text: user, attribution, urgency: 'low', signal: o.signal });
      return { text: a.text, usage: a.usage, costUsd: a.costUsd, model: a.model, batched: { size: a.batchSize, id: a.batchId } };
    }
  }

  // the answer of the first tier the budgets admit; undefined when every tier was refused
  const provider = async (): Promise<ModelAnswer | undefined> => {
    for (const tier of tiers) {
      try {
        const decision = tier === o.tier && call.route ? { ...call.route, tier: (tier === 'small' ? 1 : 2) as 1 | 2 } : undefined;
        const r = await routeAndCall({
          models: o.models!,
          tier: tier === 'small' ? 1 : 2,
          ...(decision ? { decision } : {}),
          messages,
          attribution,
          costs: o.store,
          signal: o.signal,
          invoke: { budget: { guard, scopes }, ...(refusal ? { details: { downgradedFrom: o.tier, reason: refusal.message } } : {}), ...(call.tools?.length ? { tools: call.tools } : {}) },
        });
        const answer: ModelAnswer = { text: r.text, usage: r.usage, costUsd: r.costUsd, model: r.model };
        if (r.toolCalls) answer.toolCalls = r.toolCalls;
        if (r.savedUsd !== undefined) answer.savedUsd = r.savedUsd;
        if (refusal) answer.downgraded = { from: o.tier, to: tier, reason: refusal.message };
        if (r.budgetWarnings?.length) answer.budgetWarnings = r.budgetWarnings;
        return answer;
      } catch (err) {
        if (!isModelError(err, 'MODEL_BUDGET_REFUSED')) throw err;
        refusal ??= err as unknown as NonNullable<typeof refusal>;
      }
    }
    return undefined;
  };

  // a declared-cacheable call is served from the intent cache when the same request (same
  // intent, scope, entities and polarity, a close paraphrase) was answered before
  const cache = call.cacheable && o.services && !call.tools?.length ? await o.services.cache() : undefined;
  let answer: ModelAnswer | undefined;
  if (cache) {
    const text = call.cacheText ?? splitPrompt(messages).user ?? '';
    let fromProvider: ModelAnswer | undefined;
    try {
      const r = await cachedCall({
        cache,
        costs: o.store,
        attribution,
        // one tier's answers never serve another's (a large model's answer is what was paid for)
        request: { capability: `${o.capability}@${o.tier}`, intent: call.intent ?? 'other', scope: call.cacheScope === 'global' ? 'global' : `customer:${o.attribution.customerId ?? 'none'}`, text, ...(call.entities ? { entities: call.entities } : {}), ...(call.uses ? { uses: call.uses } : {}) },
        call: async () => {
          const a = await provider();
          if (!a) throw refusal!; // every tier refused
          fromProvider = a;
          return a;
        },
      });
      answer = r.cacheHit ? { text: r.text, usage: r.usage, costUsd: 0, model: r.model, cacheHit: true, savedUsd: r.savedUsd } : { ...fromProvider!, cacheHit: false };
    } catch (err) {
      // the cache's own failure (e.g. the embedding model is not provisioned) never costs the answer
      if (fromProvider) throw err;
      o.services!.logger?.warn({ err }, 'intent cache unavailable: asking the model');
    }
  }
  answer ??= await provider();
  if (answer) return answer;
  const rf = refusal!.refusal;
  if (policy === 'ask' && rf) {
    const scope = rf.scope as 'customer' | 'agent' | 'workflow' | 'run' | 'engine';
    const id = raiseApprovalId(scope, rf.key, rf.period, rf.window);
    if (!(await o.store.getApproval(id))) {
      const deadline = new Date(Date.now() + 24 * 3_600_000).toISOString();
      await o.store
        .createApproval({
          id,
          action: 'budget.raise',
          subject: `budget/${scope}:${rf.key}/${rf.period}/${rf.window}`,
          // approving adds raiseUsd to this window's limit (the budget itself is unchanged)
          payload: { ...rf, raiseUsd: Math.max(rf.limitUsd, rf.askedUsd ?? 0), text: `${refusal!.message}. Approve to raise this ${rf.period}'s limit by $${Math.max(rf.limitUsd, rf.askedUsd ?? 0)}.` },
          requestedBy: actor,
          deadline,
          ...(runId ? { correlationId: runId } : {}),
        })
        .catch(async (err: unknown) => {
          if (!(await o.store.getApproval(id))) throw err; // not a lost race
        });
    }
  }
  throw refusal!;
}

/** The handler's output, parsed by the capability's schema; AGENT_BAD_OUTPUT names every issue. */
export function checkOutput<O>(cap: Capability<unknown, O>, raw: unknown): O {
  const parsed = cap.output.safeParse(raw);
  if (!parsed.success) {
    throw new AgentError('AGENT_BAD_OUTPUT', `capability ${cap.name} returned output that fails its schema: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(output)'}: ${i.message}`).join('; ')}`);
  }
  return parsed.data;
}
