/**
 * The workflow engine's decisions, as pure functions of a run's state and the time. Every
 * process that completes a step, fires a timer or answers an approval computes the next events
 * the same way and appends them with the expected version: exactly one writer wins each
 * transition, the others reload and find nothing left to do.
 */
import { reduceRun, type RunState, type StepState, type StepDeadLetter } from './run-entity.ts';
import type { EventInput } from '../shared-state/index.ts';
import type { WorkflowDef, StepDef } from './definition.ts';
import { WorkflowError } from './errors.ts';
import { evaluate, resolveMapping, type EvalContext } from './expr.ts';

export type Role = 'step' | 'compensation' | 'escalation';

export type Effect =
  | { kind: 'task'; role: Role; step: string; attempt: number; capability: string; taskId: string; input: unknown }
  | { kind: 'approval'; step: string; approvalId: string; action: string; subject: string; payload: unknown; deadlineAt: string }
  | { kind: 'audit'; step: string; action: string; subject: string; payload: unknown; policy: string; mode: PolicyMode }
  /** join the concurrency key's lane, or leave it (the run finished) */
  | { kind: 'lane'; op: 'join' | 'release'; key: string }
  /** mark a pending approval record superseded (it can no longer be approved) */
  | { kind: 'approval_superseded'; step: string; approvalId: string; by: string; reason: string };

export type { PolicyMode } from '../config/index.ts';
import type { PolicyMode } from '../config/index.ts';

export interface Plan {
  events: EventInput[];
  effects: Effect[];
  state: RunState;
}

/**
 * A lost dispatch (crash between append and publish) is re-published this long after scheduling.
 * A (re-)publish the bus refused (a leader election, a partition) arms the next one, each time twice
 * as late, at most {@link REDISPATCH_MAX_MS} after the failure (see {@link planDispatchFailed}).
 */
export const REDISPATCH_AFTER_MS = 5_000;
export const REDISPATCH_MAX_MS = 60_000;
export const DEFAULT_STEP_TIMEOUT_MS = 5 * 60_000;
/** A join not answered (crash) is tried again after this; a waiting run re-checks its lane this often. */
export const LANE_RETRY_MS = 5_000;
export const LANE_RECHECK_MS = 30_000;
/** The step name a run's `onFailure` escalation task carries (not a step of the definition). */
export const FAILURE_STEP = '~failure';
/** Dead-letter reasons that a retry of the same task cannot fix: the step fails for good at once. */
export const isFinalDeadLetter = (reason: string) => reason !== 'max_deliveries';

export const taskIdOf = (runId: string, step: string, attempt: number, role: Role = 'step') =>
  role === 'step' ? `${runId}.${step}.${attempt}` : `${runId}.${step}.${role}`;

/**
 * Approval ids: run id and step joined by '_' (the store allows letters, digits, '_' and '-'); a
 * step asked again (`keel run retry --from` an earlier step) gets a new approval, `-<attempt>`.
 */
export const approvalIdOf = (runId: string, step: string, attempt = 1) => (attempt > 1 ? `${runId}_${step}-${attempt}` : `${runId}_${step}`);

/** The run's own definition snapshot (validated, defaults applied, when the run started). */
export function definitionOf(run: RunState): WorkflowDef {
  return run.definition as unknown as WorkflowDef;
}

/** The latest time a `notBefore` may name (its ISO form must sort as a string: 4-digit years). */
const MAX_TIME_MS = Date.UTC(9999, 11, 31, 23, 59, 59, 999);
/** ISO 8601: a date, or a date and time with a zone (a time without one would depend on the process's zone). */
const ISO_TIME = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2}))?$/;

/** A step's `notBefore`, resolved: epoch ms, undefined (no wait), or why it is not a time. */
export function notBeforeOf(mapping: unknown, ctx: EvalContext): { until?: number } | { error: string } {
  const v = resolveMapping(mapping, ctx);
  if (v === undefined || v === null) return {};
  let ms = Number.NaN;
  if (typeof v === 'number') ms = v;
  else if (typeof v === 'string' && ISO_TIME.test(v)) ms = Date.parse(v);
  if (!Number.isFinite(ms) || ms < 0 || ms > MAX_TIME_MS) {
    const shown = JSON.stringify(v) ?? String(v);
    return { error: `${shown.length > 200 ? `${shown.slice(0, 200)}...` : shown} (expected an ISO 8601 time with a zone, e.g. 2026-03-01T09:00:00Z, or epoch ms)` };
  }
  return { until: ms };
}

class Planner {
  readonly events: EventInput[] = [];
  readonly effects: Effect[] = [];
  state: RunState;
  readonly def: WorkflowDef;
  readonly runId: string;
  readonly now: Date;
  constructor(runId: string, state: RunState, now: Date) {
    this.runId = runId;
    this.state = state;
    this.def = definitionOf(state);
    this.now = now;
  }
  get at(): string {
    return this.now.toISOString();
  }
  emit(type: string, data: Record<string, unknown>): void {
    const d = { ...data, at: this.at };
    const before = this.state;
    this.events.push({ type, data: d });
    this.state = reduceRun(this.state, { type, data: d }) as RunState;
    if (type === 'run_finished') this.onFinished(before);
  }
  /** A run that ends leaves its lane, and a failed one escalates when the definition says so. */
  private onFinished(before: RunState): void {
    if (before.status !== 'running' && before.status !== 'compensating') return;
    if (before.lane) this.effects.push({ kind: 'lane', op: 'release', key: before.lane.key });
    const f = this.def.onFailure;
    if (f && this.state.status === 'failed') {
      const input = resolveMapping(f.input ?? { runId: '$.run.id', reason: '$.run.error' }, this.ctx());
      // once per failure: a run retried after failing and failing again escalates again
      const n = this.state.failures ?? 1;
      const step = n > 1 ? `${FAILURE_STEP}-${n}` : FAILURE_STEP;
      this.effects.push({ kind: 'task', role: 'escalation', step, attempt: 0, capability: f.escalate, taskId: taskIdOf(this.runId, step, 0, 'escalation'), input });
    }
  }
  ctx(): EvalContext {
    const steps: EvalContext['steps'] = {};
    for (const [k, v] of Object.entries(this.state.steps)) steps[k] = { output: v.output, status: v.status };
    return { input: this.state.input, steps, run: { id: this.runId, customer: this.state.customer, status: this.state.status, ...(this.state.error ? { error: this.state.error } : {}) } };
  }
  step(id: string): StepState {
    return this.state.steps[id] ?? { status: 'pending', attempt: 0 };
  }
  plan(): Plan {
    return { events: this.events, effects: this.effects, state: this.state };
  }

  schedule(id: string, s: StepDef, inputOverride?: unknown): void {
    const attempt = this.step(id).attempt + 1;
    const input = inputOverride ?? resolveMapping(s.input ?? '$.input', this.ctx());
    if (s.approval) {
      const approvalId = approvalIdOf(this.runId, id, attempt);
      const deadlineAt = new Date(this.now.getTime() + s.approval.deadlineMs).toISOString();
      const subject = String(resolveMapping(s.approval.subject ?? `workflow_run/${this.runId}`, this.ctx()) ?? `workflow_run/${this.runId}`);
      const payload = resolveMapping(s.approval.payload ?? s.input ?? null, this.ctx());
      const policy = s.approval.policy === undefined ? undefined : String(resolveMapping(s.approval.policy, this.ctx()));
      const mode = (policy && (this.state as RunState & { policies?: Record<string, PolicyMode> }).policies?.[policy]) || 'approve';
      if (policy && mode !== 'approve') {
        // the operator's policy lets this action through; audit-only leaves a record to review
        this.emit('approval_requested', { step: id, approvalId, attempt, deadlineAt, input: payload, policy, mode });
        this.emit('approval_decided', { step: id, decision: 'approved', by: `policy:${mode}` });
        if (mode === 'audit') this.effects.push({ kind: 'audit', step: id, action: s.approval.action, subject, payload, policy, mode });
        return;
      }
      this.emit('approval_requested', { step: id, approvalId, attempt, deadlineAt, input: payload });
      this.effects.push({ kind: 'approval', step: id, approvalId, action: s.approval.action, subject, payload, deadlineAt });
      return;
    }
    const taskId = taskIdOf(this.runId, id, attempt);
    this.emit('step_scheduled', {
      step: id,
      attempt,
      taskId,
      input,
      deadlineAt: new Date(this.now.getTime() + (s.timeoutMs ?? DEFAULT_STEP_TIMEOUT_MS)).toISOString(),
      redispatchAt: new Date(this.now.getTime() + REDISPATCH_AFTER_MS).toISOString(),
    });
    this.effects.push({ kind: 'task', role: 'step', step: id, attempt, capability: s.capability!, taskId, input });
  }

  /**
   * An attempt failed: retry after backoff, or fail the step for good. A dead letter whose
   * reason a retry cannot fix (an invalid task, a permanent error) fails it for good at once.
   */
  failAttempt(id: string, error: string, deadLetter?: StepDeadLetter): void {
    const s = this.def.steps[id]!;
    const st = this.step(id);
    const retry = s.retry ?? { maxAttempts: 1, backoffMs: 1_000, factor: 2 };
    const dl = deadLetter ? { deadLetter } : {};
    if (st.attempt < retry.maxAttempts && !(deadLetter && isFinalDeadLetter(deadLetter.reason))) {
      const delay = retry.backoffMs * retry.factor ** (st.attempt - 1);
      this.emit('step_failed', { step: id, attempt: st.attempt, error, retryAt: new Date(this.now.getTime() + delay).toISOString(), ...dl });
    } else {
      this.emit('step_failed', { step: id, attempt: st.attempt, error, final: true, ...dl });
    }
  }

  /**
   * The concurrency key's lane: once the key resolves the run asks to join it, and until it
   * holds the lane nothing new is scheduled. True while the run must wait.
   */
  private laneGate(): boolean {
    if (this.def.concurrencyKey === undefined) return false;
    const lane = this.state.lane;
    if (lane) return lane.status !== 'acquired' && lane.status !== 'committed';
    const key = resolveMapping(this.def.concurrencyKey, this.ctx());
    if (typeof key !== 'string' || key === '') return false; // not known yet: steps before it run unserialized
    this.emit('lane_requested', { key, retryAt: new Date(this.now.getTime() + LANE_RETRY_MS).toISOString() });
    this.effects.push({ kind: 'lane', op: 'join', key });
    return true;
  }

  /** Whatever follows from the state now: start ready steps, compensate, finish. */
  advance(): void {
    for (let guard = 0; guard < 1000; guard++) {
      const before = this.events.length;
      this.advanceOnce();
      if (this.events.length === before) return;
    }
  }

  private advanceOnce(): void {
    const st = this.state;
    if (st.status === 'compensating') {
      this.compensateNext();
      return;
    }
    if (st.status !== 'running') return;
    const failed = Object.entries(st.steps).find(([, s]) => s.status === 'failed' && !s.retryAt);
    if (failed) {
      return this.beginCompensation(`step '${failed[0]}' failed: ${failed[1].error ?? 'unknown error'}`);
    }
    if (st.budgetUsd !== undefined && st.spentUsd > st.budgetUsd) {
      return this.beginCompensation(`budget exceeded: spent $${st.spentUsd.toFixed(4)} of $${st.budgetUsd}`);
    }
    if (this.laneGate()) return;
    let pendingLeft = false;
    for (const [id, s] of Object.entries(this.def.steps)) {
      const cur = this.step(id);
      if (cur.status === 'waiting') {
        // its `notBefore` time: scheduled here (behind the lane and budget checks) once due
        pendingLeft = true;
        if (!cur.waitUntil || Date.parse(cur.waitUntil) <= this.now.getTime()) this.schedule(id, s, cur.input);
        continue;
      }
      if (cur.status !== 'pending') continue;
      pendingLeft = true;
      const deps = s.after.map((d) => this.step(d).status);
      if (!deps.every((d) => d === 'completed' || d === 'skipped')) continue;
      if (s.when && !evaluate(s.when, this.ctx())) {
        this.emit('step_skipped', { step: id, reason: 'condition false' });
        continue;
      }
      if (s.notBefore !== undefined) {
        const nb = notBeforeOf(s.notBefore, this.ctx());
        if ('error' in nb) {
          // a mapping that yields no time cannot be fixed by waiting or retrying
          this.emit('step_failed', { step: id, attempt: cur.attempt, error: `notBefore of step '${id}' is not a time: ${nb.error}`, final: true });
          return; // the next pass compensates before anything else starts
        }
        if (nb.until !== undefined && nb.until > this.now.getTime()) {
          this.emit('step_waiting', { step: id, until: new Date(nb.until).toISOString() });
          continue;
        }
      }
      this.schedule(id, s, cur.input);
    }
    const all = Object.keys(this.def.steps).map((id) => this.step(id).status);
    if (!pendingLeft && all.every((x) => x === 'completed' || x === 'skipped')) this.emit('run_finished', { status: 'completed' });
  }

  private beginCompensation(reason: string): void {
    this.state = { ...this.state, error: reason };
    this.compensateNext(reason);
  }

  /** Schedules the next compensation (reverse completion order), or finishes the run as failed. */
  private compensateNext(reason?: string): boolean {
    const st = this.state;
    if (st.compensations.some((c) => c.status === 'scheduled')) return false;
    const done = new Set(st.compensations.map((c) => c.step));
    const next = [...st.completedOrder].reverse().find((id) => this.def.steps[id]?.compensate && !done.has(id));
    if (!next) {
      this.emit('run_finished', { status: 'failed', error: reason ?? st.error ?? 'failed' });
      return false;
    }
    const c = this.def.steps[next]!.compensate!;
    const taskId = taskIdOf(this.runId, next, 0, 'compensation');
    const input = resolveMapping(c.input ?? `$.steps.${next}.output`, this.ctx());
    this.emit('compensation_scheduled', { step: next, taskId, reason: reason ?? st.error });
    this.effects.push({ kind: 'task', role: 'compensation', step: next, attempt: 0, capability: c.capability, taskId, input });
    return true;
  }

  /** Timers due at `now`: lost dispatches, step timeouts, retries, approval deadlines, lane re-checks. */
  wake(): void {
    const lane = this.state.lane;
    if (lane && (lane.status === 'requested' || lane.status === 'waiting') && lane.retryAt && Date.parse(lane.retryAt) <= this.now.getTime()) {
      const retryAt = new Date(this.now.getTime() + (lane.status === 'waiting' ? LANE_RECHECK_MS : LANE_RETRY_MS)).toISOString();
      this.emit(lane.status === 'waiting' ? 'lane_waiting' : 'lane_requested', { key: lane.key, ...(lane.holder ? { holder: lane.holder } : {}), retryAt });
      this.effects.push({ kind: 'lane', op: 'join', key: lane.key });
    }
    for (const [id, s] of Object.entries(this.state.steps)) {
      const def = this.def.steps[id];
      if (!def) continue;
      const due = (t?: string) => !!t && Date.parse(t) <= this.now.getTime();
      if (s.status === 'scheduled' && due(s.deadlineAt)) {
        this.failAttempt(id, `timed out after ${def.timeoutMs ?? DEFAULT_STEP_TIMEOUT_MS} ms`);
      } else if (s.status === 'scheduled' && due(s.redispatchAt)) {
        this.emit('step_redispatched', { step: id });
        this.effects.push({ kind: 'task', role: 'step', step: id, attempt: s.attempt, capability: def.capability!, taskId: s.taskId!, input: s.input });
      } else if (s.status === 'failed' && due(s.retryAt)) {
        this.schedule(id, def, s.input);
      } else if (s.status === 'waiting_approval' && due(s.deadlineAt) && def.approval) {
        const t = def.approval.onTimeout;
        if (t === 'reject' || t === 'approve') {
          this.emit('approval_decided', { step: id, decision: t === 'approve' ? 'approved' : 'rejected', by: 'deadline' });
        } else {
          this.emit('approval_escalated', { step: id, capability: t.escalate });
          const taskId = taskIdOf(this.runId, id, 0, 'escalation');
          this.effects.push({ kind: 'task', role: 'escalation', step: id, attempt: 0, capability: t.escalate, taskId, input: resolveMapping(t.input ?? { runId: '$.run.id', step: id }, this.ctx()) });
        }
      }
    }
    this.advance();
  }
}

export function planStart(runId: string, def: WorkflowDef, input: unknown, opts: { customer?: string; traceId?: string; budgetUsd?: number; policies?: Record<string, PolicyMode> }, now = new Date()): Plan & { created: RunState } {
  // the stored snapshot is plain data: an input schema (a zod object) stays in memory
  const { inputSchema: _schema, ...snapshot } = def;
  const created: RunState = {
    workflow: def.name,
    version: def.version,
    definition: snapshot as unknown as Record<string, unknown>,
    status: 'running',
    input,
    ...(opts.customer ? { customer: opts.customer } : {}),
    ...(opts.traceId ? { traceId: opts.traceId } : {}),
    // the policies in force when the run started stay with it (replays decide the same way)
    ...(opts.policies && Object.keys(opts.policies).length ? { policies: opts.policies } : {}),
    ...((opts.budgetUsd ?? def.budgetUsd) !== undefined ? { budgetUsd: opts.budgetUsd ?? def.budgetUsd } : {}),
    spentUsd: 0,
    steps: Object.fromEntries(Object.keys(def.steps).map((k) => [k, { status: 'pending', attempt: 0 }])),
    completedOrder: [],
    compensations: [],
    nextWakeAt: null,
    startedAt: now.toISOString(),
  };
  const p = new Planner(runId, created, now);
  p.advance();
  return { ...p.plan(), created };
}

export interface StepOutcome {
  step: string;
  attempt: number;
  role: Role;
  ok: boolean;
  output?: unknown;
  error?: string;
  agent?: string;
  durationMs?: number;
  costUsd?: number;
  /** the task was dead-lettered: why, and where the letter is */
  deadLetter?: StepDeadLetter;
}

/** A task of this run finished (or failed for good); empty plan when it was already recorded. */
export function planOutcome(runId: string, state: RunState, o: StepOutcome, now = new Date()): Plan {
  const p = new Planner(runId, state, now);
  const cur = p.step(o.step);
  if (o.role === 'compensation') {
    const c = state.compensations.find((x) => x.step === o.step && x.status === 'scheduled');
    if (!c) return p.plan();
    p.emit(o.ok ? 'compensation_completed' : 'compensation_failed', { step: o.step, output: o.output, error: o.error });
    p.advance();
    return p.plan();
  }
  if (o.role === 'escalation') return p.plan();
  // stale: a different attempt, or the step already moved on
  if (cur.status !== 'scheduled' || cur.attempt !== o.attempt) return p.plan();
  if (o.ok) p.emit('step_completed', { step: o.step, attempt: o.attempt, output: o.output, agent: o.agent, durationMs: o.durationMs, costUsd: o.costUsd });
  else p.failAttempt(o.step, o.error ?? 'failed', o.deadLetter);
  p.advance();
  return p.plan();
}

export function planWake(runId: string, state: RunState, now = new Date()): Plan {
  const p = new Planner(runId, state, now);
  if (state.status === 'running' || state.status === 'compensating') p.wake();
  return p.plan();
}

/**
 * The bus refused a step's task (the publish failed after the run recorded the dispatch): while the
 * step is still scheduled for that attempt and no re-dispatch is pending, arm one, 5 s after the
 * first failure and twice as late after each re-dispatch that failed too (at most 60 s).
 */
export function planDispatchFailed(runId: string, state: RunState, step: string, attempt: number, now = new Date()): Plan {
  const p = new Planner(runId, state, now);
  const cur = state.steps[step];
  if ((state.status !== 'running' && state.status !== 'compensating') || cur?.status !== 'scheduled' || cur.attempt !== attempt || cur.redispatchAt) return p.plan();
  const delay = Math.min(REDISPATCH_AFTER_MS * 2 ** (cur.redispatches ?? 0), REDISPATCH_MAX_MS);
  p.emit('step_dispatch_failed', { step, attempt, redispatchAt: new Date(now.getTime() + delay).toISOString() });
  return p.plan();
}

export function planApproval(runId: string, state: RunState, step: string, decision: 'approved' | 'rejected', by: string, text: string | undefined, now = new Date(), reason?: string): Plan {
  const p = new Planner(runId, state, now);
  const cur = p.step(step);
  if (state.status !== 'running' || (cur.status !== 'waiting_approval' && cur.status !== 'escalated')) return p.plan();
  p.emit('approval_decided', { step, decision, by, ...(text !== undefined ? { text } : {}), ...(reason ? { reason } : {}) });
  p.advance();
  return p.plan();
}

/** The lane answered a join: the run holds it (and carries on), or waits for `holder`. */
export function planLane(runId: string, state: RunState, key: string, outcome: { acquired: true } | { acquired: false; holder: string | null }, now = new Date()): Plan {
  const p = new Planner(runId, state, now);
  const lane = state.lane;
  if ((state.status !== 'running' && state.status !== 'compensating') || !lane || lane.key !== key) return p.plan();
  if (outcome.acquired) {
    if (lane.status === 'acquired' || lane.status === 'committed') return p.plan();
    p.emit('lane_acquired', { key });
    p.advance();
  } else if (lane.status !== 'waiting' || lane.holder !== (outcome.holder ?? undefined)) {
    p.emit('lane_waiting', { key, ...(outcome.holder ? { holder: outcome.holder } : {}), retryAt: new Date(now.getTime() + LANE_RECHECK_MS).toISOString() });
  }
  return p.plan();
}

/** The run holds its lane and starts the `supersede.before` step: recorded with that step. */
export function planLaneCommitted(plan: Plan, now = new Date()): Plan {
  const key = plan.state.lane?.key;
  if (!key || plan.state.lane?.status === 'committed') return plan;
  const data = { key, at: now.toISOString() };
  return { ...plan, events: [...plan.events, { type: 'lane_committed', data }], state: reduceRun(plan.state, { type: 'lane_committed', data }) as RunState };
}

/**
 * A newer run of the same key superseded this one: its pending approvals are marked superseded
 * (and can no longer be approved), and the run ends `superseded`.
 */
export function planSupersede(runId: string, state: RunState, by: string, reason: string, now = new Date()): Plan {
  const p = new Planner(runId, state, now);
  if (state.status !== 'running' && state.status !== 'compensating') return p.plan();
  for (const [id, s] of Object.entries(state.steps)) {
    if (s.status !== 'waiting_approval' && s.status !== 'escalated') continue;
    p.emit('approval_superseded', { step: id, approvalId: s.approvalId, by, reason });
    if (s.approvalId) p.effects.push({ kind: 'approval_superseded', step: id, approvalId: s.approvalId, by, reason });
  }
  p.emit('run_finished', { status: 'superseded', error: reason, supersededBy: by });
  return p.plan();
}

/**
 * A dead-lettered task of this run is sent again (`keel dlq redrive`): its step waits for that
 * delivery as if it had just been dispatched, and a finished (failed) run runs again. Refused
 * once compensations have run (re-drive from a checkpoint with `retryFrom` instead).
 */
export function planRedrive(runId: string, state: RunState, step: string, attempt: number, letter: { stream?: string; seq: number; by: string }, now = new Date()): Plan {
  const p = new Planner(runId, state, now);
  const def = p.def.steps[step];
  const cur = p.step(step);
  if (!def?.capability) throw new WorkflowError('WORKFLOW_BAD_REQUEST', `run ${runId} has no capability step '${step}'`);
  if (state.compensations.length > 0) throw new WorkflowError('WORKFLOW_BAD_REQUEST', `run ${runId} has run compensations; re-drive it with \`keel run retry ${runId} --from ${step}\` instead`);
  if (cur.status !== 'failed' || cur.attempt !== attempt) return p.plan();
  if (state.status !== 'running' && state.status !== 'failed') return p.plan();
  p.emit('step_redriven', { step, attempt, dlq: { stream: letter.stream, seq: letter.seq }, by: letter.by, deadlineAt: new Date(now.getTime() + (def.timeoutMs ?? DEFAULT_STEP_TIMEOUT_MS)).toISOString() });
  return p.plan();
}

/** Re-drives a run from a step: that step and everything after it run again (with new input if given). */
export function planRetryFrom(runId: string, state: RunState, step: string, inputOverride: unknown, now = new Date()): Plan {
  const p = new Planner(runId, state, now);
  if (!p.def.steps[step]) throw new WorkflowError('WORKFLOW_BAD_REQUEST', `run ${runId} has no step '${step}' (steps: ${Object.keys(p.def.steps).join(', ')})`);
  const downstream = new Set([step]);
  for (let changed = true; changed; ) {
    changed = false;
    for (const [id, s] of Object.entries(p.def.steps)) {
      if (!downstream.has(id) && s.after.some((d) => downstream.has(d))) {
        downstream.add(id);
        changed = true;
      }
    }
  }
  // a pending approval of a step that runs again is asked anew (a new id): the old one can no longer be decided
  for (const id of downstream) {
    const cur = p.step(id);
    if ((cur.status === 'waiting_approval' || cur.status === 'escalated') && cur.approvalId) p.effects.push({ kind: 'approval_superseded', step: id, approvalId: cur.approvalId, by: runId, reason: `run retried from step '${step}'` });
  }
  p.emit('step_reset', { step, steps: [...downstream], ...(inputOverride !== undefined ? { inputOverride } : {}) });
  p.advance();
  return p.plan();
}

export function planCancel(runId: string, state: RunState, by: string, now = new Date()): Plan {
  const p = new Planner(runId, state, now);
  if (state.status === 'running' || state.status === 'compensating') p.emit('run_finished', { status: 'cancelled', error: `cancelled by ${by}` });
  return p.plan();
}
