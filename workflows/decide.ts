/**
 * The workflow engine's decisions, as pure functions of a run's state and the time. Every
 * process that completes a step, fires a timer or answers an approval computes the next events
 * the same way and appends them with the expected version: exactly one writer wins each
 * transition, the others reload and find nothing left to do.
 */
import { reduceRun, type RunState, type StepState } from './run-entity.ts';
import type { EventInput } from '../shared-state/index.ts';
import type { WorkflowDef, StepDef } from './definition.ts';
import { WorkflowError } from './errors.ts';
import { evaluate, resolveMapping, type EvalContext } from './expr.ts';

export type Role = 'step' | 'compensation' | 'escalation';

export type Effect =
  | { kind: 'task'; role: Role; step: string; attempt: number; capability: string; taskId: string; input: unknown }
  | { kind: 'approval'; step: string; approvalId: string; action: string; subject: string; payload: unknown; deadlineAt: string }
  | { kind: 'audit'; step: string; action: string; subject: string; payload: unknown; policy: string; mode: PolicyMode };

export type { PolicyMode } from '../config/index.ts';
import type { PolicyMode } from '../config/index.ts';

export interface Plan {
  events: EventInput[];
  effects: Effect[];
  state: RunState;
}

/** A lost dispatch (crash between append and publish) is re-published this long after scheduling. */
export const REDISPATCH_AFTER_MS = 5_000;
export const DEFAULT_STEP_TIMEOUT_MS = 5 * 60_000;

export const taskIdOf = (runId: string, step: string, attempt: number, role: Role = 'step') =>
  role === 'step' ? `${runId}.${step}.${attempt}` : `${runId}.${step}.${role}`;

/** Approval ids: run id and step joined by '_' (the store allows letters, digits, '_' and '-'). */
export const approvalIdOf = (runId: string, step: string) => `${runId}_${step}`;

/** The run's own definition snapshot (validated, defaults applied, when the run started). */
export function definitionOf(run: RunState): WorkflowDef {
  return run.definition as unknown as WorkflowDef;
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
    this.events.push({ type, data: d });
    this.state = reduceRun(this.state, { type, data: d }) as RunState;
  }
  ctx(): EvalContext {
    const steps: EvalContext['steps'] = {};
    for (const [k, v] of Object.entries(this.state.steps)) steps[k] = { output: v.output, status: v.status };
    return { input: this.state.input, steps, run: { id: this.runId, customer: this.state.customer } };
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
      const approvalId = approvalIdOf(this.runId, id);
      const deadlineAt = new Date(this.now.getTime() + s.approval.deadlineMs).toISOString();
      const subject = String(resolveMapping(s.approval.subject ?? `workflow_run/${this.runId}`, this.ctx()) ?? `workflow_run/${this.runId}`);
      const payload = resolveMapping(s.approval.payload ?? s.input ?? null, this.ctx());
      const policy = s.approval.policy === undefined ? undefined : String(resolveMapping(s.approval.policy, this.ctx()));
      const mode = (policy && (this.state as RunState & { policies?: Record<string, PolicyMode> }).policies?.[policy]) || 'approve';
      if (policy && mode !== 'approve') {
        // the operator's policy lets this action through; audit-only leaves a record to review
        this.emit('approval_requested', { step: id, approvalId, deadlineAt, input: payload, policy, mode });
        this.emit('approval_decided', { step: id, decision: 'approved', by: `policy:${mode}` });
        if (mode === 'audit') this.effects.push({ kind: 'audit', step: id, action: s.approval.action, subject, payload, policy, mode });
        return;
      }
      this.emit('approval_requested', { step: id, approvalId, deadlineAt, input: payload });
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

  /** An attempt failed: retry after backoff, or fail the step for good. */
  failAttempt(id: string, error: string): void {
    const s = this.def.steps[id]!;
    const st = this.step(id);
    const retry = s.retry ?? { maxAttempts: 1, backoffMs: 1_000, factor: 2 };
    if (st.attempt < retry.maxAttempts) {
      const delay = retry.backoffMs * retry.factor ** (st.attempt - 1);
      this.emit('step_failed', { step: id, attempt: st.attempt, error, retryAt: new Date(this.now.getTime() + delay).toISOString() });
    } else {
      this.emit('step_failed', { step: id, attempt: st.attempt, error, final: true });
    }
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
    let pendingLeft = false;
    for (const [id, s] of Object.entries(this.def.steps)) {
      const cur = this.step(id);
      if (cur.status !== 'pending') continue;
      pendingLeft = true;
      const deps = s.after.map((d) => this.step(d).status);
      if (!deps.every((d) => d === 'completed' || d === 'skipped')) continue;
      if (s.when && !evaluate(s.when, this.ctx())) {
        this.emit('step_skipped', { step: id, reason: 'condition false' });
        continue;
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

  /** Timers due at `now`: lost dispatches, step timeouts, retries, approval deadlines. */
  wake(): void {
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
  const created: RunState = {
    workflow: def.name,
    version: def.version,
    definition: def as unknown as Record<string, unknown>,
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
  else p.failAttempt(o.step, o.error ?? 'failed');
  p.advance();
  return p.plan();
}

export function planWake(runId: string, state: RunState, now = new Date()): Plan {
  const p = new Planner(runId, state, now);
  if (state.status === 'running' || state.status === 'compensating') p.wake();
  return p.plan();
}

export function planApproval(runId: string, state: RunState, step: string, decision: 'approved' | 'rejected', by: string, text: string | undefined, now = new Date()): Plan {
  const p = new Planner(runId, state, now);
  const cur = p.step(step);
  if (cur.status !== 'waiting_approval' && cur.status !== 'escalated') return p.plan();
  p.emit('approval_decided', { step, decision, by, ...(text !== undefined ? { text } : {}) });
  p.advance();
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
  p.emit('step_reset', { step, steps: [...downstream], ...(inputOverride !== undefined ? { inputOverride } : {}) });
  p.advance();
  return p.plan();
}

export function planCancel(runId: string, state: RunState, by: string, now = new Date()): Plan {
  const p = new Planner(runId, state, now);
  if (state.status === 'running' || state.status === 'compensating') p.emit('run_finished', { status: 'cancelled', error: `cancelled by ${by}` });
  return p.plan();
}
