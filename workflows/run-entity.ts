import { z } from 'zod';
import type { EntityTypeDef, State } from '../shared-state/index.ts';

/**
 * A workflow run is an entity like any other: its event log is the run's history, its state the
 * run's current position. Each transition is a custom event; `reduceRun` is pure, so replays and
 * the workflow engine's own decisions compute the same state the store does.
 */
export type StepStatus = 'pending' | 'waiting' | 'scheduled' | 'waiting_approval' | 'escalated' | 'completed' | 'failed' | 'skipped' | 'compensated' | 'superseded';
export type RunStatus = 'running' | 'completed' | 'failed' | 'compensating' | 'cancelled' | 'superseded';

/** Where a run stands in its concurrency key's lane (see `concurrencyKey` in definition.ts). */
export interface RunLane {
  key: string;
  /** requested: joining; waiting: another run holds it; acquired: this run holds it; committed: it started the `supersede.before` step */
  status: 'requested' | 'waiting' | 'acquired' | 'committed';
  /** the run holding the lane while this one waits */
  holder?: string;
  /** when the join is tried again (a lost join or release is repaired by this timer) */
  retryAt?: string;
}

/** Why a dead-lettered task failed its step (from the dead letter). */
export interface StepDeadLetter {
  reason: string;
  stream?: string;
  seq?: number;
  subject?: string;
}

export interface StepState {
  status: StepStatus;
  attempt: number;
  taskId?: string;
  input?: unknown;
  scheduledAt?: string;
  /** `notBefore`: the step waits (status `waiting`) until this time, then is scheduled */
  waitUntil?: string;
  /** when the step times out (scheduled) or its approval deadline passes (waiting_approval) */
  deadlineAt?: string;
  /** when a lost dispatch is re-published (once after scheduling; again after each publish the bus refused) */
  redispatchAt?: string;
  /** how often the task was re-published */
  redispatches?: number;
  /** when a failed attempt is retried */
  retryAt?: string;
  completedAt?: string;
  output?: unknown;
  error?: string;
  errors?: string[];
  durationMs?: number;
  agent?: string;
  costUsd?: number;
  approvalId?: string;
  /** the dead letter that failed the step, if that is how it failed */
  deadLetter?: StepDeadLetter;
  /** superseded approvals: by which run, why */
  supersededBy?: string;
  reason?: string;
}

export interface RunState extends State {
  workflow: string;
  version: number;
  definition: Record<string, unknown>;
  status: RunStatus;
  input: unknown;
  customer?: string;
  budgetUsd?: number;
  spentUsd: number;
  steps: Record<string, StepState>;
  /** completed steps in completion order (compensation runs them in reverse) */
  completedOrder: string[];
  compensations: Array<{ step: string; status: 'scheduled' | 'completed' | 'failed'; taskId: string; at: string; output?: unknown; error?: string }>;
  nextWakeAt: string | null;
  error?: string;
  startedAt: string;
  finishedAt?: string;
  traceId?: string;
  lane?: RunLane;
  /** the newer run that superseded this one */
  supersededBy?: string;
  /** how many times the run ended failed (a run retried after a failure may fail again) */
  failures?: number;
}

const stepEvent = z.object({ step: z.string(), at: z.string() }).loose();
const RUN_EVENTS = {
  step_scheduled: stepEvent,
  step_waiting: z.object({ step: z.string(), until: z.string(), at: z.string() }).loose(),
  step_redispatched: stepEvent,
  step_dispatch_failed: stepEvent,
  step_completed: stepEvent,
  step_failed: stepEvent,
  step_skipped: stepEvent,
  step_reset: stepEvent,
  approval_requested: stepEvent,
  approval_escalated: stepEvent,
  approval_decided: stepEvent,
  approval_superseded: stepEvent,
  step_redriven: stepEvent,
  lane_requested: z.object({ key: z.string(), at: z.string() }).loose(),
  lane_waiting: z.object({ key: z.string(), at: z.string() }).loose(),
  lane_acquired: z.object({ key: z.string(), at: z.string() }).loose(),
  lane_committed: z.object({ key: z.string(), at: z.string() }).loose(),
  compensation_scheduled: stepEvent,
  compensation_completed: stepEvent,
  compensation_failed: stepEvent,
  run_finished: z.object({ status: z.enum(['completed', 'failed', 'cancelled', 'superseded']), at: z.string() }).loose(),
  run_resumed: z.object({ at: z.string() }).loose(),
  spent: z.object({ usd: z.number(), at: z.string() }).loose(),
} as const;

type Ev = { type: string; data: unknown };

/**
 * A step's next timer. A `waiting` step's time counts only while it could then be scheduled: the
 * run is running and not waiting for its lane (the lane's own timer, or its answer, wakes it),
 * so a due step that cannot start does not keep its run at the head of the due-timer sweep.
 */
function wakeOf(s: StepState, canStart: boolean): string | undefined {
  const c = [
    s.status === 'scheduled' ? s.redispatchAt : undefined,
    s.status === 'scheduled' || s.status === 'waiting_approval' ? s.deadlineAt : undefined,
    s.status === 'failed' ? s.retryAt : undefined,
    s.status === 'waiting' && canStart ? s.waitUntil : undefined,
  ];
  return c.filter((x): x is string => !!x).sort()[0];
}

function withWake(st: RunState): RunState {
  if (st.status !== 'running' && st.status !== 'compensating') return { ...st, nextWakeAt: null };
  const laneWait = !!st.lane && (st.lane.status === 'requested' || st.lane.status === 'waiting');
  const lane = laneWait ? st.lane!.retryAt : undefined;
  const canStart = st.status === 'running' && !laneWait;
  const all = [...Object.values(st.steps).map((s) => wakeOf(s, canStart)), lane].filter((x): x is string => !!x).sort();
  return { ...st, nextWakeAt: all[0] ?? null };
}

export function reduceRun(state: State, e: Ev): State {
  const st = state as RunState;
  const d = e.data as Record<string, unknown> & { step: string; at: string };
  const step = (name: string): StepState => st.steps[name] ?? { status: 'pending', attempt: 0 };
  const put = (name: string, patch: Partial<StepState>, extra: Partial<RunState> = {}): State =>
    withWake({ ...st, ...extra, steps: { ...st.steps, [name]: { ...step(name), ...patch } } });
  switch (e.type) {
    case 'step_scheduled':
      return put(d.step, {
        status: 'scheduled', attempt: d.attempt as number, taskId: d.taskId as string, input: d.input, scheduledAt: d.at,
        deadlineAt: d.deadlineAt as string | undefined, redispatchAt: d.redispatchAt as string | undefined, retryAt: undefined, error: undefined,
      });
    case 'step_waiting':
      return put(d.step, { status: 'waiting', waitUntil: d.until as string });
    case 'step_redispatched':
      return put(d.step, { redispatchAt: undefined, redispatches: (step(d.step).redispatches ?? 0) + 1 });
    case 'step_dispatch_failed':
      // the bus refused the task: publish it again then
      return put(d.step, { redispatchAt: d.redispatchAt as string });
    case 'step_completed': {
      const order = st.completedOrder.includes(d.step) ? st.completedOrder : [...st.completedOrder, d.step];
      return put(d.step, {
        status: 'completed', output: d.output, completedAt: d.at, durationMs: d.durationMs as number | undefined, agent: d.agent as string | undefined,
        costUsd: d.costUsd as number | undefined, deadlineAt: undefined, redispatchAt: undefined, retryAt: undefined,
      }, { completedOrder: order, spentUsd: st.spentUsd + ((d.costUsd as number | undefined) ?? 0) });
    }
    case 'step_failed':
      return put(d.step, {
        status: 'failed', error: d.error as string, errors: [...(step(d.step).errors ?? []), d.error as string],
        retryAt: d.retryAt as string | undefined, deadlineAt: undefined, redispatchAt: undefined,
        ...(d.deadLetter ? { deadLetter: d.deadLetter as StepDeadLetter } : {}),
      });
    case 'step_redriven':
      // a dead-lettered task sent again (keel dlq redrive): the step waits for it like a dispatch
      return put(d.step, { status: 'scheduled', error: undefined, retryAt: undefined, deadlineAt: d.deadlineAt as string | undefined, redispatchAt: undefined, scheduledAt: d.at }, { status: 'running', error: undefined, finishedAt: undefined });
    case 'step_skipped':
      return put(d.step, { status: 'skipped', completedAt: d.at, error: d.reason as string | undefined });
    case 'step_reset': {
      const steps = { ...st.steps };
      for (const name of d.steps as string[]) steps[name] = { status: 'pending', attempt: step(name).attempt, ...(d.inputOverride && name === d.step ? { input: d.inputOverride } : {}) };
      // a finished run left its lane: re-driven, it asks for it again (as the newest run of its key)
      const lane = st.status === 'running' || st.status === 'compensating' ? st.lane : undefined;
      return withWake({ ...st, status: 'running', error: undefined, finishedAt: undefined, lane, steps, completedOrder: st.completedOrder.filter((s) => !(d.steps as string[]).includes(s)) });
    }
    case 'approval_requested':
      // the request's attempt (runs recorded before attempts were: the first)
      return put(d.step, { status: 'waiting_approval', approvalId: d.approvalId as string, attempt: (d.attempt as number | undefined) ?? 1, scheduledAt: d.at, deadlineAt: d.deadlineAt as string, input: d.input });
    case 'approval_escalated':
      return put(d.step, { status: 'escalated', deadlineAt: undefined });
    case 'approval_superseded':
      return put(d.step, { status: 'superseded', deadlineAt: undefined, supersededBy: d.by as string | undefined, reason: d.reason as string | undefined, completedAt: d.at });
    case 'lane_requested':
    case 'lane_waiting':
    case 'lane_acquired':
    case 'lane_committed': {
      const status = ({ lane_requested: 'requested', lane_waiting: 'waiting', lane_acquired: 'acquired', lane_committed: 'committed' } as const)[e.type];
      return withWake({ ...st, lane: { key: d.key as string, status, ...(d.holder ? { holder: d.holder as string } : {}), ...(d.retryAt ? { retryAt: d.retryAt as string } : {}) } });
    }
    case 'approval_decided':
      return put(d.step, { status: 'completed', output: { decision: d.decision, text: d.text, by: d.by, ...(d.reason ? { reason: d.reason } : {}) }, completedAt: d.at, deadlineAt: undefined }, {
        completedOrder: st.completedOrder.includes(d.step) ? st.completedOrder : [...st.completedOrder, d.step],
      });
    case 'compensation_scheduled':
      return withWake({ ...st, status: 'compensating', ...(d.reason ? { error: d.reason as string } : {}), compensations: [...st.compensations, { step: d.step, status: 'scheduled', taskId: d.taskId as string, at: d.at }] });
    case 'compensation_completed':
    case 'compensation_failed':
      return withWake({
        ...st,
        steps: e.type === 'compensation_completed' ? { ...st.steps, [d.step]: { ...step(d.step), status: 'compensated' } } : st.steps,
        compensations: st.compensations.map((c) =>
          c.step === d.step && c.status === 'scheduled' ? { ...c, status: e.type === 'compensation_completed' ? 'completed' : 'failed', output: d.output, error: d.error as string | undefined } : c,
        ),
      });
    case 'run_finished':
      return { ...st, status: d.status as RunStatus, finishedAt: d.at, error: d.error as string | undefined, nextWakeAt: null, ...(d.supersededBy ? { supersededBy: d.supersededBy as string } : {}), ...(d.status === 'failed' ? { failures: (st.failures ?? 0) + 1 } : {}) };
    case 'run_resumed':
      return withWake({ ...st, status: 'running' });
    case 'spent':
      return { ...st, spentUsd: st.spentUsd + (d.usd as number) };
    default:
      return state;
  }
}

export const workflowRunType: EntityTypeDef = {
  name: 'workflow_run',
  schemaVersion: 1,
  schema: z
    .object({
      workflow: z.string().min(1),
      version: z.number().int().min(1),
      definition: z.record(z.string(), z.unknown()),
      status: z.enum(['running', 'completed', 'failed', 'compensating', 'cancelled', 'superseded']),
      input: z.unknown(),
      spentUsd: z.number().default(0),
      steps: z.record(z.string(), z.object({ status: z.string(), attempt: z.number() }).loose()),
      completedOrder: z.array(z.string()).default([]),
      compensations: z.array(z.unknown()).default([]),
      nextWakeAt: z.string().nullable().default(null),
      startedAt: z.string(),
    })
    .loose() as unknown as z.ZodType<State>,
  searchFields: ['workflow', 'status', 'customer'],
  events: RUN_EVENTS,
  reduce: reduceRun,
};
