import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { context, trace, type Context } from '@opentelemetry/api';
import { defineMessage, type Bus } from '../bus/index.ts';
import { isStateError, type Actor, type AppendOptions, type StateStore, type CommittedEvent } from '../shared-state/index.ts';
import type { RunState } from './run-entity.ts';
import { extractTraceContext, injectTraceHeaders, getTracer, type Logger } from '../observability/index.ts';
import { defineWorkflow, type WorkflowDef, type WorkflowInput } from './definition.ts';
import { WorkflowError } from './errors.ts';
import { planApproval, planCancel, planOutcome, planRetryFrom, planStart, planWake, type Effect, type Plan, type StepOutcome, type PolicyMode } from './decide.ts';

/** Headers that tie a task to its run. */
export const RUN_HEADERS = { runId: 'Keel-Run-Id', step: 'Keel-Step', attempt: 'Keel-Attempt', role: 'Keel-Role' } as const;

// WorkflowError lives in errors.ts (decide.ts throws it too); re-exported here for existing imports
export { WorkflowError };

export interface WorkflowEngineOptions {
  store: StateStore;
  bus: Bus;
  /** who appends: the agent, the operator or the system */
  actor: Actor;
  logger?: Logger;
  /** definitions that can be started by name */
  catalog?: Record<string, WorkflowDef>;
  /** policy modes by action key (KeelConfig.policies, from KEEL_POLICY_*); an unlisted action is `approve` */
  policies?: Record<string, PolicyMode>;
}

const RUN = 'workflow_run';

/**
 * The decentralized workflow engine. There is no coordinator: whichever process finishes a step,
 * fires a due timer, or answers an approval loads the run, computes the next events with the
 * pure planner, and appends them with the expected version. One writer wins; the others reload
 * and find the work done. Tasks are then dispatched with `Nats-Msg-Id` = task id, so a dispatch
 * repeated after a crash is stored once, and the task's idempotency record keeps it from running twice.
 */
export class WorkflowEngine {
  readonly store: StateStore;
  readonly bus: Bus;
  readonly actor: Actor;
  readonly log: Logger | undefined;
  readonly catalog: Record<string, WorkflowDef>;
  readonly policies: Record<string, PolicyMode>;
  private readonly anyTask = new Map<string, ReturnType<typeof defineMessage>>();

  constructor(o: WorkflowEngineOptions) {
    this.store = o.store;
    this.bus = o.bus;
    this.actor = o.actor;
    this.log = o.logger;
    this.catalog = o.catalog ?? {};
    this.policies = o.policies ?? {};
  }

  resolve(def: string | WorkflowDef | WorkflowInput): WorkflowDef {
    if (typeof def !== 'string') return defineWorkflow(def);
    const d = this.catalog[def];
    if (!d) throw new WorkflowError('WORKFLOW_NOT_FOUND', `unknown workflow '${def}'; known: ${Object.keys(this.catalog).join(', ') || '(none)'}`);
    return d;
  }

  /** Starts a run (idempotent by runId: starting the same id twice starts it once). */
  async start(def: string | WorkflowDef, input: unknown, o: { runId?: string; customer?: string; budgetUsd?: number; causationId?: string } = {}): Promise<{ runId: string; created: boolean; traceId: string }> {
    const d = this.resolve(def);
    const runId = o.runId ?? `run-${randomUUID()}`;
    const span = getTracer('keel.workflow').startSpan(`workflow ${d.name}`, { attributes: { 'keel.run_id': runId, 'keel.workflow': d.name, 'keel.workflow.version': d.version } });
    const ctx = trace.setSpan(context.active(), span);
    try {
      const traceparent = injectTraceHeaders(ctx).traceparent;
      const plan = planStart(runId, d, input, { customer: o.customer, budgetUsd: o.budgetUsd, traceId: span.spanContext().traceId, policies: this.policies });
      const created = { ...plan.created, ...(traceparent ? { traceparent } : {}) };
      try {
        await this.store.append(RUN, runId, 0, [{ type: 'created', data: created }, ...plan.events], this.meta(runId, o.causationId, span.spanContext().traceId));
      } catch (err) {
        if (isStateError(err, 'STATE_VERSION_CONFLICT')) {
          const existing = await this.store.get<RunState>(RUN, runId);
          return { runId, created: false, traceId: existing?.state.traceId ?? '' };
        }
        throw err;
      }
      await context.with(ctx, () => this.perform(runId, { ...created, ...plan.state }, plan.effects, o.causationId));
      return { runId, created: true, traceId: span.spanContext().traceId };
    } finally {
      span.end();
    }
  }

  /**
   * A task of a run finished or failed for good (called by the agent runtime). `complete` is
   * the task's idempotency claim: completed in the same transaction as the run's advance, so a
   * step costs one write less and a step is never recorded done without its run moving on.
   */
  async onOutcome(runId: string, o: StepOutcome, causationId?: string, complete?: AppendOptions['complete']): Promise<void> {
    const appended = await this.transact(runId, (st) => planOutcome(runId, st, o), causationId, complete);
    if (complete && !appended) await this.store.complete(complete.key, complete.token, complete.result, { cost: complete.cost });
  }

  async decideApproval(approvalId: string, decision: 'approved' | 'rejected', by: Actor, text?: string, reason?: string): Promise<{ runId: string; step: string; applied: boolean }> {
    const a = await this.store.getApproval(approvalId);
    const runId = a?.correlationId ?? '';
    const step = approvalId.slice(runId.length + 1);
    const run = runId ? await this.store.get<RunState>(RUN, runId) : null;
    if (!a || !run || !run.state.steps[step]) throw new WorkflowError('WORKFLOW_APPROVAL_NOT_FOUND', `no approval '${approvalId}' (see \`keel approvals\`)`);
    if (a && a.state === 'pending') await this.store.decideApproval(approvalId, { decision, by, ...(reason ? { reason } : {}) }).catch((err: unknown) => this.log?.warn({ err }, 'approval record already decided'));
    let applied = false;
    await this.transact(runId, (st) => {
      const p = planApproval(runId, st, step, decision, `${by.kind}:${by.id}`, text);
      applied = p.events.length > 0;
      return p;
    });
    return { runId, step, applied };
  }

  async retryFrom(runId: string, step: string, input?: unknown): Promise<void> {
    await this.transact(runId, (st) => planRetryFrom(runId, st, step, input));
  }

  async cancel(runId: string, by: string): Promise<boolean> {
    let did = false;
    await this.transact(runId, (st) => {
      const p = planCancel(runId, st, by);
      did = p.events.length > 0;
      return p;
    });
    return did;
  }

  /** Fires every due timer of every run (any process may call this; races resolve by version). */
  async wakeDue(now = new Date(), limit = 100): Promise<number> {
    const page = await this.store.query<RunState>(RUN, { filter: { nextWakeAt: { $lte: now.toISOString() } }, sort: { nextWakeAt: 'asc' }, limit });
    let n = 0;
    for (const r of page.items) {
      if (!r.state.nextWakeAt) continue;
      try {
        await this.transact(r.entityId, (st) => planWake(r.entityId, st, now));
        n++;
      } catch (err) {
        this.log?.warn({ err, runId: r.entityId }, 'could not advance run on its timer');
      }
    }
    return n;
  }

  async get(runId: string): Promise<{ state: RunState; version: number; history: CommittedEvent[] } | null> {
    const e = await this.store.get<RunState>(RUN, runId);
    if (!e) return null;
    return { state: e.state, version: e.version, history: await this.store.history(RUN, runId) };
  }

  private meta(runId: string, causationId?: string, traceId?: string) {
    return { actor: this.actor, correlationId: runId, ...(causationId ? { causationId } : {}), ...(traceId ? { traceId } : {}) };
  }

  /** Load → plan → append with the expected version → perform effects; reload on conflict. */
  /** Returns whether events were appended. */
  private async transact(runId: string, plan: (st: RunState) => Plan, causationId?: string, complete?: AppendOptions['complete']): Promise<boolean> {
    for (let attempt = 0; attempt < 50; attempt++) {
      const run = await this.store.get<RunState>(RUN, runId);
      if (!run) throw new WorkflowError('WORKFLOW_RUN_NOT_FOUND', `no workflow run '${runId}'`);
      const p = plan(run.state);
      if (p.events.length === 0) return false;
      try {
        await this.store.append(RUN, runId, run.version, p.events, this.meta(runId, causationId, trace.getActiveSpan()?.spanContext().traceId), complete ? { complete } : {});
      } catch (err) {
        if (isStateError(err, 'STATE_VERSION_CONFLICT')) {
          await new Promise((r) => setTimeout(r, Math.random() * 5 * (attempt + 1)));
          continue; // someone else advanced it: reload and plan again
        }
        throw err;
      }
      await this.perform(runId, p.state, p.effects, causationId);
      if (run.state.status !== p.state.status && (p.state.status === 'completed' || p.state.status === 'failed' || p.state.status === 'cancelled')) this.announceFinish(runId, p.state);
      return true;
    }
    throw new WorkflowError('WORKFLOW_CONTENDED', `run ${runId} kept changing under us; will retry`, true);
  }

  /**
   * A best-effort notice on core NATS (`<prefix>.run.finished.<status>`) for waiters such as
   * `keel run start --wait` and benchmarks; the run's state remains the record.
   */
  private announceFinish(runId: string, st: RunState): void {
    try {
      this.bus.nc.publish(this.bus.subjects.runFinished(st.status), JSON.stringify({ runId, status: st.status, workflow: st.workflow, error: st.error ?? null }));
    } catch (err) {
      this.log?.debug({ err }, 'could not announce run end');
    }
  }

  private async perform(runId: string, st: RunState & { traceparent?: string }, effects: Effect[], causationId?: string): Promise<void> {
    if (effects.length === 0) return;
    // keep the whole run in one trace, even for dispatches made by a timer
    let ctx: Context = context.active();
    const active = trace.getSpan(ctx)?.spanContext();
    const hasActive = !!active && active.traceId !== '00000000000000000000000000000000';
    if (!hasActive && st.traceparent) ctx = extractTraceContext({ traceparent: st.traceparent });
    await context.with(ctx, async () => {
      for (const e of effects) {
        if (e.kind === 'audit') {
          await this.store.appendAudit({ actor: { kind: 'system', id: `policy:${e.mode}` }, action: e.action, subject: e.subject, details: { runId, step: e.step, policy: e.policy, mode: e.mode, payload: e.payload } });
          continue;
        }
        if (e.kind === 'approval') {
          const existing = await this.store.getApproval(e.approvalId);
          if (!existing) {
            await this.store
              .createApproval({ id: e.approvalId, action: e.action, subject: e.subject, payload: e.payload, requestedBy: this.actor, deadline: e.deadlineAt, correlationId: runId })
              .catch(async (err: unknown) => {
                if (!(await this.store.getApproval(e.approvalId))) throw err; // not a lost race: a real failure
              });
          }
          continue;
        }
        let mt = this.anyTask.get(e.capability);
        if (!mt) this.anyTask.set(e.capability, (mt = defineMessage(`task.${e.capability}`, z.unknown())));
        const left = st.budgetUsd === undefined ? undefined : Math.max(0, st.budgetUsd - st.spentUsd);
        await this.bus.publish(this.bus.subjects.task(e.capability), mt, e.input, {
          id: e.taskId,
          idempotencyKey: e.taskId,
          correlationId: runId,
          ...(causationId ? { causationId } : {}),
          ...(st.customer ? { customer: st.customer } : {}),
          ...(left !== undefined ? { budgetUsd: left } : {}),
          headers: {
            [RUN_HEADERS.runId]: runId,
            [RUN_HEADERS.step]: e.step,
            [RUN_HEADERS.attempt]: String(e.attempt),
            [RUN_HEADERS.role]: e.role,
            // without a tracer in this process the run's own trace context still travels on
            ...(!hasActive && st.traceparent ? { traceparent: st.traceparent } : {}),
          },
        });
      }
    });
  }
}

/** Reads the run coordinates a task carries, if it belongs to a workflow run. */
export function runCoordinates(headers: Record<string, string>): { runId: string; step: string; attempt: number; role: 'step' | 'compensation' | 'escalation' } | undefined {
  const runId = headers[RUN_HEADERS.runId];
  const step = headers[RUN_HEADERS.step];
  if (!runId || !step) return undefined;
  const role = headers[RUN_HEADERS.role];
  return { runId, step, attempt: Number(headers[RUN_HEADERS.attempt] ?? 1), role: role === 'compensation' || role === 'escalation' ? role : 'step' };
}
