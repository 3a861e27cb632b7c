import { isDeepStrictEqual } from 'node:util';
import type { AgentDefinition, Capability, TaskContext } from './define.ts';
import type { ScopedState } from './scoped-state.ts';
import { AgentError } from './errors.ts';
import type { StateStore, Entity, CommittedEvent } from '../shared-state/index.ts';
import { WorkflowError, type RunState } from '../workflows/index.ts';
import type { Envelope } from '../bus/index.ts';
import { createLogger } from '../observability/index.ts';
import { trace } from '@opentelemetry/api';
import { loadConfig, type KeelConfig } from '../config/index.ts';
import type { ModelRegistry } from '../models/index.ts';

export interface ReplayStep {
  step: string;
  capability: string | null;
  /** same: the handler decided what it decided then; diverged: it now decides otherwise */
  result: 'same' | 'diverged' | 'not_replayed';
  reason?: string;
  recorded?: unknown;
  replayed?: unknown;
  /** recorded effects / model answers read back (never executed) */
  effectsReadBack: number;
  modelAnswersReadBack: number;
  writesSuppressed: number;
  /** model calls whose prompt now differs from the recorded one, with the difference */
  promptChanges?: PromptChange[];
}

/** A model call of a replayed step asked something else than it did when it ran. */
export interface PromptChange {
  /** 1 for the step's first model call */
  call: number;
  tier: string;
  /** the first message that differs (0-based), its role, and the text recorded vs now (common prefix and suffix elided) */
  message: number;
  role: string;
  recorded: string;
  now: string;
  /** a unified-style rendering: `- recorded` / `+ now` lines */
  diff: string;
}

export interface ReplayReport {
  runId: string;
  workflow: string;
  version: number;
  steps: ReplayStep[];
  divergences: number;
  /**
   * model calls that reached a provider during the replay, counted: `ctx.llm` answers from the
   * log (never a call), so only a handler that used `ctx.models` directly — given a registry in
   * `opts.models` — adds to it. A faithful replay reports 0.
   */
  modelCalls: number;
  /** side-effect functions executed during the replay, counted (effects are read back, connectors stop the step): 0 when faithful */
  sideEffects: number;
}

export interface ReplayOptions {
  /**
   * a model registry the replayed handlers see as `ctx.models` (default none). Every call through
   * it reaches the provider and is counted in `modelCalls`: use it to find handlers that bypass
   * `ctx.llm`, never to re-ask.
   */
  models?: ModelRegistry;
}

/** Stops replaying a step: it did something the log cannot answer. Caught in `replayRun`. */
class ReplayStop extends AgentError {
  readonly reason: string;
  constructor(reason: string) {
    super('AGENT_REPLAY_STOPPED', reason);
    this.name = 'ReplayStop';
    this.reason = reason;
  }
}

/** State as of a point in time: the entity's state at its last version no later than `at`. */
async function stateAsOf<S>(store: StateStore, type: string, id: string, at: string): Promise<Entity<S> | null> {
  const h: CommittedEvent[] = await store.history(type, id);
  const last = [...h].reverse().find((e) => e.time <= at);
  return last ? store.getAt<S>(type, id, last.version) : null;
}

/**
 * Deterministic replay of a finished run: each completed step's handler runs again in this
 * process on its recorded input, with reads of the shared state as of the step's start, its
 * side effects and model calls answered from the log (never executed), and its writes
 * suppressed. A step whose output now differs from the recorded one is a divergence.
 */
export async function replayRun(store: StateStore, runId: string, agents: readonly AgentDefinition[], config: KeelConfig = loadConfig(), opts: ReplayOptions = {}): Promise<ReplayReport> {
  const run = await store.get<RunState>('workflow_run', runId);
  if (!run) throw new WorkflowError('WORKFLOW_RUN_NOT_FOUND', `no workflow run '${runId}'`);
  const st = run.state;
  const caps = new Map<string, { agent: AgentDefinition; cap: Capability }>();
  for (const a of agents) for (const c of a.capabilities) caps.set(c.name, { agent: a, cap: c });
  const def = st.definition as { steps: Record<string, { capability?: string }> };
  const steps: ReplayStep[] = [];
  const log = createLogger('replay', { level: 'silent' });
  const totals = { modelCalls: 0, sideEffects: 0 };
  const models = opts.models ? countingRegistry(opts.models, () => totals.modelCalls++) : undefined;

  for (const name of st.completedOrder) {
    const s = st.steps[name]!;
    const capability = def.steps[name]?.capability ?? null;
    const base = { step: name, capability, effectsReadBack: 0, modelAnswersReadBack: 0, writesSuppressed: 0 };
    if (!capability) {
      steps.push({ ...base, result: 'not_replayed', reason: 'approval gate (a human decision, recorded)', recorded: s.output });
      continue;
    }
    const found = caps.get(capability);
    if (!found) {
      steps.push({ ...base, result: 'not_replayed', reason: `no handler for capability '${capability}' loaded (pass its agent module)` });
      continue;
    }
    const taskId = s.taskId!;
    // retention (KEEL_RUN_RETENTION) deletes old task records: then nothing can be read back
    const kept = config.retention?.runsMs;
    if (kept && Date.parse(s.completedAt ?? st.startedAt) < Date.now() - kept && !(await store.getIdempotency(`task:${capability}:${taskId}`))) {
      steps.push({ ...base, result: 'not_replayed', reason: 'its recorded results were deleted by retention (the step completed longer ago than KEEL_RUN_RETENTION; see docs/operations.md)' });
      continue;
    }
    const at = s.scheduledAt ?? st.startedAt;
    const counters = { ...base };
    const allowed = new Set(found.cap.permissions?.entityTypes ?? []);
    const deny = (t: string) => {
      if (!allowed.has(t)) throw new ReplayStop(`reads entity type '${t}' it does not declare`);
    };
    const state: ScopedState = {
      get: async <S>(t: string, id: string) => (deny(t), stateAsOf<S>(store, t, id, at)),
      getAt: async <S>(t: string, id: string, v: number) => (deny(t), store.getAt<S>(t, id, v)),
      history: async (t, id) => (deny(t), (await store.history(t, id)).filter((e) => e.time <= at)),
      query: async <S>(t: string, q?: Parameters<ScopedState['query']>[1]) => (deny(t), store.query<S>(t, q)),
      append: async <S>(t: string, id: string) => {
        deny(t);
        counters.writesSuppressed++;
        const cur = await store.get<S>(t, id);
        if (!cur) throw new ReplayStop(`wrote entity ${t}/${id} that does not exist now`);
        return { entity: cur, events: [] };
      },
    };
    const recordedEffect = async <T>(name2: string): Promise<T> => {
      const rec = await store.getIdempotency(`effect:${capability}:${taskId}:${name2}`);
      if (!rec || rec.status !== 'completed') throw new ReplayStop(`side effect '${name2}' is not in the log (the step now does something it did not do)`);
      return rec.result as T;
    };
    let modelN = 0;
    const promptChanges: PromptChange[] = [];
    const hadModel = (await store.getIdempotency(`effect:${capability}:${taskId}:model-1`))?.status === 'completed';
    const env = {
      id: taskId,
      type: `task.${capability}`,
      subject: `replay.task.${capability}`,
      data: s.input,
      idempotencyKey: taskId,
      correlationId: runId,
      causationId: undefined,
      customer: st.customer,
      budgetUsd: undefined,
      publishedAt: undefined,
      traceparent: undefined,
      tracestate: undefined,
      deliveryCount: 1,
      streamSeq: undefined,
      headers: {},
    } satisfies Envelope<unknown>;
    const ctx: TaskContext<unknown> = {
      replay: true,
      input: s.input,
      envelope: env,
      agent: found.agent.name,
      capability,
      config,
      state,
      enqueue: async () => {
        counters.writesSuppressed++;
        return { id: 'replay' };
      },
      effect: async <T>(n: string): Promise<T> => {
        counters.effectsReadBack++;
        return recordedEffect<T>(n);
      },
      connector: async () => {
        throw new ReplayStop('calls a connector outside ctx.effect (not recorded, cannot replay)');
      },
      secrets: {},
      budgetUsd: undefined,
      logger: log,
      span: trace.getActiveSpan() ?? trace.wrapSpanContext({ traceId: '0'.repeat(32), spanId: '0'.repeat(16), traceFlags: 0 }),
      signal: new AbortController().signal,
      working: () => undefined,
      models,
      llm: async (tier, messages, callOpts) => {
        const n = ++modelN;
        const rec = await recordedEffect<{ prompt?: { tier?: string; messages?: unknown[] } } & Record<string, unknown>>(callOpts?.key ? `model-${callOpts.key}` : `model-${n}`);
        counters.modelAnswersReadBack++;
        // answers recorded before prompts were kept carry none: those are not compared
        if (rec.prompt?.messages) {
          const change = promptChange(n, tier, rec.prompt.messages, messages);
          if (change) promptChanges.push(change);
        }
        const { prompt: _prompt, ...answer } = rec;
        return answer as unknown as Awaited<ReturnType<TaskContext<unknown>['llm']>>;
      },
      // a model was configured then iff its answers are in the log
      hasModel: () => hadModel,
      // recall is recorded (inside ctx.effect) and read back from there; a live read is not replayable
      memory: async () => {
        throw new ReplayStop('reads long-term memory outside ctx.effect (not recorded, cannot replay)');
      },
    };
    try {
      const parsed = found.cap.output.safeParse(await found.cap.handler(ctx));
      const replayed = parsed.success ? parsed.data : { invalidOutput: parsed.error.issues.map((i) => i.message) };
      const same = isDeepStrictEqual(JSON.parse(JSON.stringify(replayed ?? null)), JSON.parse(JSON.stringify(s.output ?? null)));
      // a changed prompt diverges even when the recorded answer makes the output come out the same
      const reason = promptChanges.length
        ? `model call ${promptChanges.map((c) => c.call).join(', ')}: the prompt changed (the recorded answer was to another question)${same ? '' : '; output differs from the recorded one'}`
        : same ? undefined : 'output differs from the recorded one';
      steps.push({ ...counters, result: reason ? 'diverged' : 'same', ...(reason ? { reason } : {}), ...(promptChanges.length ? { promptChanges } : {}), recorded: s.output, replayed });
    } catch (err) {
      const reason = err instanceof ReplayStop ? err.reason : `handler threw: ${(err as Error).message}`;
      steps.push({ ...counters, result: 'diverged', reason, ...(promptChanges.length ? { promptChanges } : {}), recorded: s.output });
    }
  }
  return { runId, workflow: st.workflow, version: st.version, steps, divergences: steps.filter((x) => x.result === 'diverged').length, ...totals };
}

/** A registry whose chat models count every call that reaches the provider. */
function countingRegistry(models: ModelRegistry, count: () => void): ModelRegistry {
  return {
    ...models,
    has: (t) => models.has(t),
    describe: () => models.describe(),
    get(tier, o) {
      const h = models.get(tier, o);
      const chat = h.chat;
      const counted = new Proxy(chat, {
        get(target, prop, receiver) {
          const v: unknown = Reflect.get(target, prop, receiver);
          if ((prop === 'invoke' || prop === 'stream' || prop === 'batch') && typeof v === 'function') {
            return (...args: unknown[]) => {
              count();
              return (v as (...a: unknown[]) => unknown).apply(target, args);
            };
          }
          return v;
        },
      });
      return { ...h, chat: counted };
    },
  };
}

const textOf = (m: unknown): { role: string; text: string } => {
  if (typeof m === 'string') return { role: 'user', text: m };
  const o = (m ?? {}) as { role?: unknown; content?: unknown; _getType?: () => string };
  const role = typeof o.role === 'string' ? o.role : typeof o._getType === 'function' ? o._getType() : 'message';
  return { role, text: typeof o.content === 'string' ? o.content : JSON.stringify(o.content ?? m) };
};

/** The first message that differs between the recorded prompt and the one asked now, or undefined when they are the same. */
export function promptChange(call: number, tier: string, recorded: readonly unknown[], now: readonly unknown[]): PromptChange | undefined {
  const a = JSON.parse(JSON.stringify(recorded)) as unknown[];
  const b = JSON.parse(JSON.stringify(now)) as unknown[];
  if (isDeepStrictEqual(a, b)) return undefined;
  const n = Math.max(a.length, b.length);
  for (let i = 0; i < n; i++) {
    if (isDeepStrictEqual(a[i], b[i])) continue;
    const x = i < a.length ? textOf(a[i]) : { role: '(none)', text: '' };
    const y = i < b.length ? textOf(b[i]) : { role: '(none)', text: '' };
    let p = 0;
    while (p < x.text.length && p < y.text.length && x.text[p] === y.text[p]) p++;
    let q = 0;
    while (q < x.text.length - p && q < y.text.length - p && x.text[x.text.length - 1 - q] === y.text[y.text.length - 1 - q]) q++;
    const from = Math.max(0, p - 40);
    const cut = (t: string) => `${from > 0 ? '…' : ''}${t.slice(from, t.length - q).slice(0, 2_000)}${q > 0 ? '…' : ''}`;
    const recordedPart = cut(x.text);
    const nowPart = cut(y.text);
    const diff = [`@@ model call ${call} (${tier}), message ${i} (${y.role === '(none)' ? x.role : y.role}) @@`, ...recordedPart.split('\n').map((l) => `- ${l}`), ...nowPart.split('\n').map((l) => `+ ${l}`)].join('\n');
    return { call, tier, message: i, role: y.role === '(none)' ? x.role : y.role, recorded: recordedPart, now: nowPart, diff };
  }
  return undefined;
}
