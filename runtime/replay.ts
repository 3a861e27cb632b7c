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
}

export interface ReplayReport {
  runId: string;
  workflow: string;
  version: number;
  steps: ReplayStep[];
  divergences: number;
  /** always 0: replay executes no model call and no side effect */
  modelCalls: 0;
  sideEffects: 0;
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
export async function replayRun(store: StateStore, runId: string, agents: readonly AgentDefinition[], config: KeelConfig = loadConfig()): Promise<ReplayReport> {
  const run = await store.get<RunState>('workflow_run', runId);
  if (!run) throw new WorkflowError('WORKFLOW_RUN_NOT_FOUND', `no workflow run '${runId}'`);
  const st = run.state;
  const caps = new Map<string, { agent: AgentDefinition; cap: Capability }>();
  for (const a of agents) for (const c of a.capabilities) caps.set(c.name, { agent: a, cap: c });
  const def = st.definition as { steps: Record<string, { capability?: string }> };
  const steps: ReplayStep[] = [];
  const log = createLogger('replay', { level: 'silent' });

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
      models: undefined,
      llm: async () => {
        counters.modelAnswersReadBack++;
        return recordedEffect(`model-${++modelN}`);
      },
      // a model was configured then iff its answers are in the log
      hasModel: () => hadModel,
    };
    try {
      const parsed = found.cap.output.safeParse(await found.cap.handler(ctx));
      const replayed = parsed.success ? parsed.data : { invalidOutput: parsed.error.issues.map((i) => i.message) };
      const same = isDeepStrictEqual(JSON.parse(JSON.stringify(replayed ?? null)), JSON.parse(JSON.stringify(s.output ?? null)));
      steps.push({ ...counters, result: same ? 'same' : 'diverged', ...(same ? {} : { reason: 'output differs from the recorded one' }), recorded: s.output, replayed });
    } catch (err) {
      const reason = err instanceof ReplayStop ? err.reason : `handler threw: ${(err as Error).message}`;
      steps.push({ ...counters, result: 'diverged', reason, recorded: s.output });
    }
  }
  return { runId, workflow: st.workflow, version: st.version, steps, divergences: steps.filter((x) => x.result === 'diverged').length, modelCalls: 0, sideEffects: 0 };
}
