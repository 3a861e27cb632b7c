import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { context, isSpanContextValid, trace, type Context } from '@opentelemetry/api';
import { defineMessage, type Bus } from '../bus/index.ts';
import { isStateError, type Actor, type AppendOptions, type StateStore, type CommittedEvent } from '../shared-state/index.ts';
import type { RunState } from './run-entity.ts';
import { extractTraceContext, injectTraceHeaders, getTracer, type Logger } from '../observability/index.ts';
import { defineWorkflow, type WorkflowDef, type WorkflowInput } from './definition.ts';
import { WorkflowError, type FieldIssue } from './errors.ts';
import {
  definitionOf, planApproval, planCancel, planDispatchFailed, planLane, planLaneCommitted, planOutcome, planRedrive, planRetryFrom, planStart, planSupersede, planWake,
  type Effect, type Plan, type StepOutcome, type PolicyMode,
} from './decide.ts';
import { resolveMapping } from './expr.ts';
import { LANE, emptyLane, laneIdOf, planCommit, planJoin, planRelease, type LaneDecision, type LaneState } from './lane.ts';
import { currentApprovalOf, resolveApprovalId } from './ids.ts';
import { schemaIssues, type TaskSchemaSource } from './schemas.ts';

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
  /**
   * capability input schemas, where known (e.g. `registryTaskSchemas(bus)`): a run's first tasks
   * and the task an approval's edited text feeds are checked against them before anything is
   * accepted. Without it only a definition's `inputSchema` is checked.
   */
  taskSchemas?: TaskSchemaSource;
}

const TERMINAL = new Set(['completed', 'failed', 'cancelled', 'superseded']);
const isLive = (st: RunState | undefined) => st?.status === 'running' || st?.status === 'compensating';

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
  readonly taskSchemas: TaskSchemaSource | undefined;
  private readonly anyTask = new Map<string, ReturnType<typeof defineMessage>>();

  constructor(o: WorkflowEngineOptions) {
    this.store = o.store;
    this.bus = o.bus;
    this.actor = o.actor;
    this.log = o.logger;
    this.catalog = o.catalog ?? {};
    this.policies = o.policies ?? {};
    this.taskSchemas = o.taskSchemas;
  }

  /** The problems of the tasks a plan would dispatch, under their capabilities' known input schemas. */
  private async taskIssues(effects: Effect[]): Promise<FieldIssue[]> {
    const out: FieldIssue[] = [];
    if (!this.taskSchemas) return out;
    for (const e of effects) {
      if (e.kind !== 'task' || e.role !== 'step') continue;
      const schema = await this.taskSchemas(e.capability);
      if (schema) out.push(...schemaIssues(schema, e.input, { step: e.step, capability: e.capability }));
    }
    return out;
  }

  /**
   * Checks a run's input before it exists: against the definition's `inputSchema`, and the first
   * tasks against their capabilities' input schemas where known. Throws WORKFLOW_INVALID_INPUT
   * naming every field.
   */
  async validateInput(def: string | WorkflowDef, input: unknown): Promise<void> {
    const d = this.resolve(def);
    if (!d.inputSchema && !this.taskSchemas) return;
    const schema = typeof d.inputSchema === 'function' ? await d.inputSchema() : d.inputSchema;
    const issues: FieldIssue[] = schema ? schemaIssues(schema, input) : [];
    if (issues.length === 0) issues.push(...(await this.taskIssues(planStart('validate', d, input, { policies: this.policies }).effects)));
    if (issues.length) {
      throw new WorkflowError('WORKFLOW_INVALID_INPUT', `invalid input for workflow '${d.name}': ${issues.map((i) => `${i.path}: ${i.message}${i.capability ? ` (${i.capability})` : ''}`).join('; ')}`, { issues });
    }
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
    await this.validateInput(d, input);
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
    if (complete && !appended) await this.store.complete(complete.key, complete.token, complete.result, { cost: complete.cost, unclaimed: complete.unclaimed, attempt: complete.attempt });
  }

  /**
   * The operator's decision on an approval (its id, or a unique prefix of it). The real decider
   * is recorded on the run's event and on the approval, with the edited text and the reason. An
   * edited text is checked against the input schema of the step that consumes it before anything
   * is recorded; a superseded approval is refused, naming the current one.
   */
  async decideApproval(approvalId: string, decision: 'approved' | 'rejected', by: Actor, text?: string, reason?: string): Promise<{ id: string; runId: string; step: string; applied: boolean }> {
    const id = await resolveApprovalId(this.store, approvalId);
    const a = await this.store.getApproval(id);
    const runId = a?.correlationId ?? '';
    const run = runId ? await this.store.get<RunState>(RUN, runId) : null;
    // the step that asked for it (a step asked again has a new approval id: `<run>_<step>-<attempt>`)
    const step = Object.entries(run?.state.steps ?? {}).find(([, x]) => x.approvalId === id)?.[0] ?? id.slice(runId.length + 1);
    if (!a || !run || !run.state.steps[step]) throw new WorkflowError('WORKFLOW_APPROVAL_NOT_FOUND', `no approval '${approvalId}' (see \`keel approvals\`)`);
    const current = run.state.steps[step]!.approvalId;
    if (current && current !== id) throw new WorkflowError('WORKFLOW_APPROVAL_NOT_FOUND', `approval '${id}' was replaced by '${current}' when step '${step}' was asked again (see \`keel approvals\`)`);
    if (a.state === 'superseded' || run.state.steps[step]!.status === 'superseded') throw await this.supersededError(id, runId, run.state);
    const decidedBy = `${by.kind}:${by.id}`;
    if (decision === 'approved' && text !== undefined) {
      const issues: FieldIssue[] = text.trim() === '' ? [{ path: 'text', message: 'the edited text is empty' }] : [];
      if (issues.length === 0) {
        // what the step that consumes the decision would be given, checked against its capability's schema
        const next = planApproval(runId, run.state, step, decision, decidedBy, text, new Date(), reason);
        for (const i of await this.taskIssues(next.effects)) {
          const e = next.effects.find((x) => x.kind === 'task' && x.step === i.step) as { input?: unknown } | undefined;
          const v = i.path.split('.').reduce<unknown>((o, k) => (o && typeof o === 'object' ? (o as Record<string, unknown>)[k] : undefined), e?.input);
          issues.push(v === text ? { ...i, path: 'text' } : { ...i, path: `${i.step}.${i.path}` });
        }
      }
      if (issues.length) throw new WorkflowError('WORKFLOW_INVALID_INPUT', `the edited text cannot be sent: ${issues.map((i) => `${i.path}: ${i.message}${i.capability ? ` (${i.capability} input)` : ''}`).join('; ')}`, { issues });
    }
    let applied = false;
    await this.transact(runId, (st) => {
      const p = planApproval(runId, st, step, decision, decidedBy, text, new Date(), reason);
      applied = p.events.length > 0;
      return p;
    }, undefined, undefined, by);
    const after = (await this.store.get<RunState>(RUN, runId))?.state;
    if (after?.steps[step]?.status === 'superseded') throw await this.supersededError(id, runId, after);
    if (applied) {
      await this.store
        .decideApproval(id, { decision, by, ...(reason ? { reason } : {}), ...(text !== undefined ? { text } : {}) })
        .catch((err: unknown) => this.log?.warn({ err, approvalId: id }, 'approval record already decided'));
      await this.auditDecision(a, step, decision, by, text, reason);
    }
    return { id, runId, step, applied };
  }

  /**
   * One record on the audit hash chain per applied decision, whoever made it (CLI or HTTP):
   * `approval.approved`, `approval.rejected`, or `approval.edited` (approved with a text other than
   * the suggestion's, with both). The actor is the decider; the trace id is the active span's.
   */
  private async auditDecision(a: { id: string; action: string; subject: string; payload: unknown; correlationId: string | null }, step: string, decision: 'approved' | 'rejected', by: Actor, text: string | undefined, reason: string | undefined): Promise<void> {
    const p = a.payload;
    const before = typeof p === 'string' ? p : p && typeof p === 'object' && typeof (p as { text?: unknown }).text === 'string' ? (p as { text: string }).text : null;
    const edited = decision === 'approved' && text !== undefined && text !== before;
    const sc = trace.getActiveSpan()?.spanContext();
    const traceId = sc && isSpanContextValid(sc) ? sc.traceId : null;
    const details: Record<string, unknown> = { approvalId: a.id, runId: a.correlationId, step, action: a.action, subject: a.subject, decidedAt: new Date().toISOString(), traceId };
    if (reason) details.reason = reason;
    if (edited) Object.assign(details, { before, after: text });
    await this.store
      .appendAudit({ actor: by, action: edited ? 'approval.edited' : `approval.${decision}`, subject: `approval/${a.id}`, details })
      .catch((err: unknown) => this.log?.error({ err, approvalId: a.id }, 'the decision is applied but its audit record could not be written'));
  }

  /** The approval that replaced a superseded one: the pending approval of the run now holding the lane. */
  currentApproval(runId: string, st?: RunState): Promise<{ approvalId?: string; runId?: string }> {
    return currentApprovalOf(this.store, runId, st);
  }

  private async supersededError(approvalId: string, runId: string, st: RunState): Promise<WorkflowError> {
    const a = await this.store.getApproval(approvalId);
    const why = a?.reason ?? Object.values(st.steps).find((s) => s.approvalId === approvalId)?.reason ?? st.error ?? 'superseded';
    const cur = await this.currentApproval(runId, st);
    const now = cur.approvalId
      ? `the current one is ${cur.approvalId} (keel approval show ${cur.approvalId})`
      : cur.runId ? `the thread is now handled by run ${cur.runId}, which has no pending approval (being prepared, or already decided: keel run show ${cur.runId})` : 'there is no current one';
    return new WorkflowError('WORKFLOW_APPROVAL_SUPERSEDED', `approval ${approvalId} was superseded (${why}); ${now}`, cur.approvalId ? { current: cur.approvalId } : {});
  }

  async retryFrom(runId: string, step: string, input?: unknown): Promise<void> {
    await this.transact(runId, (st) => planRetryFrom(runId, st, step, input));
  }

  /**
   * A dead-lettered task of this run is being sent again (`keel dlq redrive`): its step waits for
   * the new delivery (a failed run runs again). False when the step has moved on.
   */
  async redrive(runId: string, step: string, attempt: number, letter: { stream?: string; seq: number }, by: Actor = this.actor): Promise<boolean> {
    return this.transact(runId, (st) => planRedrive(runId, st, step, attempt, { ...letter, by: `${by.kind}:${by.id}` }), undefined, undefined, by);
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

  private meta(runId: string, causationId?: string, traceId?: string, actor: Actor = this.actor) {
    return { actor, correlationId: runId, ...(causationId ? { causationId } : {}), ...(traceId ? { traceId } : {}) };
  }

  /** Load → plan → append with the expected version → perform effects; reload on conflict. */
  /** Returns whether events were appended. `actor` (default the engine's) is recorded as who did it. */
  private async transact(runId: string, plan: (st: RunState) => Plan, causationId?: string, complete?: AppendOptions['complete'], actor?: Actor): Promise<boolean> {
    for (let attempt = 0; attempt < 50; attempt++) {
      const run = await this.store.get<RunState>(RUN, runId);
      if (!run) throw new WorkflowError('WORKFLOW_RUN_NOT_FOUND', `no workflow run '${runId}'`);
      let p = plan(run.state);
      if (p.events.length === 0) return false;
      p = await this.commitIfNeeded(runId, run.state, p);
      try {
        // planning reads the run and never changes it: the store plans the append from this read too
        await this.store.append(RUN, runId, run.version, p.events, this.meta(runId, causationId, trace.getActiveSpan()?.spanContext().traceId, actor), complete ? { complete, basis: run } : { basis: run });
      } catch (err) {
        if (isStateError(err, 'STATE_VERSION_CONFLICT')) {
          await new Promise((r) => setTimeout(r, Math.random() * 5 * (attempt + 1)));
          continue; // someone else advanced it: reload and plan again
        }
        throw err;
      }
      await this.perform(runId, p.state, p.effects, causationId);
      if (run.state.status !== p.state.status && TERMINAL.has(p.state.status)) this.announceFinish(runId, p.state);
      return true;
    }
    throw new WorkflowError('WORKFLOW_CONTENDED', `run ${runId} kept changing under us; will retry`, true);
  }

  /**
   * Before a run holding a superseding lane starts its point of no return (`supersede.before`),
   * it commits the lane (one append on the lane, ordered against joins): from then on newer runs
   * wait for it. When a newer run got the lane first, this run is superseded instead.
   */
  private async commitIfNeeded(runId: string, before: RunState, p: Plan): Promise<Plan> {
    const def = definitionOf(before);
    const lane = p.state.lane;
    if (!def.supersede || !lane || lane.status !== 'acquired') return p;
    if (!p.effects.some((e) => e.kind === 'task' && e.role === 'step' && e.step === def.supersede!.before)) return p;
    const laneId = laneIdOf(def.name, lane.key);
    for (let attempt = 0; attempt < 50; attempt++) {
      const cur = await this.store.get<LaneState>(LANE, laneId);
      const c = planCommit(cur?.state ?? emptyLane(def.name, lane.key), runId);
      if (!c.ok) {
        const by = cur?.state.superseded.find((x) => x.runId === runId)?.by ?? cur?.state.holder ?? 'a newer run';
        return planSupersede(runId, before, by, await this.supersedeReason(by, def));
      }
      if (c.events.length === 0) return planLaneCommitted(p);
      try {
        await this.store.append(LANE, laneId, cur!.version, c.events, this.meta(runId));
        return planLaneCommitted(p);
      } catch (err) {
        if (!isStateError(err, 'STATE_VERSION_CONFLICT')) throw err;
      }
    }
    throw new WorkflowError('WORKFLOW_CONTENDED', `lane of run ${runId} kept changing under us; will retry`, true);
  }

  /** The reason a run superseded others: the definition's `supersede.reason` mapped from the newer run. */
  private async supersedeReason(byRunId: string, def: WorkflowDef): Promise<string> {
    const fallback = `superseded by run ${byRunId}`;
    const m = def.supersede?.reason;
    if (m === undefined) return fallback;
    const newer = (await this.store.get<RunState>(RUN, byRunId))?.state;
    if (!newer) return fallback;
    const steps: Record<string, { output?: unknown; status?: string }> = {};
    for (const [k, v] of Object.entries(newer.steps)) steps[k] = { output: v.output, status: v.status };
    const r = resolveMapping(m, { input: newer.input, steps, run: { id: byRunId, customer: newer.customer, status: newer.status } });
    return typeof r === 'string' && r ? `${r} (run ${byRunId})` : fallback;
  }

  /** Applies a lane decision to the lane (expected version), deciding again on a conflict; returns the decision applied. */
  private async changeLane(runId: string, workflow: string, key: string, decide: (lane: LaneState) => Promise<LaneDecision>): Promise<LaneDecision> {
    const laneId = laneIdOf(workflow, key);
    for (let attempt = 0; attempt < 50; attempt++) {
      const cur = await this.store.get<LaneState>(LANE, laneId);
      const d = await decide(cur?.state ?? emptyLane(workflow, key));
      if (d.events.length === 0) return d;
      try {
        await this.store.append(LANE, laneId, cur?.version ?? 0, cur ? d.events : [{ type: 'created', data: emptyLane(workflow, key) }, ...d.events], this.meta(runId));
        return d;
      } catch (err) {
        if (!isStateError(err, 'STATE_VERSION_CONFLICT')) throw err;
        await new Promise((r) => setTimeout(r, Math.random() * 5 * (attempt + 1)));
      }
    }
    throw new WorkflowError('WORKFLOW_CONTENDED', `lane '${key}' kept changing under us; will retry`, true);
  }

  /** Carries out what a lane change decided for the other runs: supersede some, let others go on. */
  private async applyLane(byRunId: string, def: WorkflowDef, key: string, d: LaneDecision): Promise<void> {
    if (d.superseded.length) {
      const reason = await this.supersedeReason(byRunId, def);
      for (const r of d.superseded) await this.transact(r, (st) => planSupersede(r, st, byRunId, reason));
    }
    for (const r of d.activated) await this.transact(r, (st) => planLane(r, st, key, { acquired: true }));
  }

  private async joinLane(runId: string, key: string, st: RunState): Promise<void> {
    const def = definitionOf(st);
    let result: { acquired: boolean; supersededBy?: string; holder: string | null } = { acquired: false, holder: null };
    const d = await this.changeLane(runId, def.name, key, async (lane) => {
      const holderLive = lane.holder && lane.holder !== runId ? isLive((await this.store.get<RunState>(RUN, lane.holder))?.state) : true;
      const j = planJoin(lane, runId, { supersede: !!def.supersede, holderLive });
      result = { acquired: j.acquired, holder: j.state.holder, ...(j.supersededBy ? { supersededBy: j.supersededBy } : {}) };
      return j;
    });
    await this.applyLane(runId, def, key, d);
    if (result.supersededBy) {
      const by = result.supersededBy;
      const reason = await this.supersedeReason(by, def);
      await this.transact(runId, (s) => planSupersede(runId, s, by, reason));
    } else {
      await this.transact(runId, (s) => planLane(runId, s, key, result.acquired ? { acquired: true } : { acquired: false, holder: result.holder }));
    }
  }

  private async releaseLane(runId: string, key: string, st: RunState): Promise<void> {
    const def = definitionOf(st);
    const d = await this.changeLane(runId, def.name, key, async (lane) => planRelease(lane, runId, { supersede: !!def.supersede }));
    const next = d.activated[0];
    await this.applyLane(next ?? runId, def, key, d);
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
        if (e.kind === 'lane') {
          // a failure here is repaired by timers: a joining run asks again (lane_requested), and a
          // waiting run's re-check releases a holder that finished without releasing (lane_waiting)
          await (e.op === 'join' ? this.joinLane(runId, e.key, st) : this.releaseLane(runId, e.key, st)).catch((err: unknown) =>
            this.log?.warn({ err, runId, key: e.key, op: e.op }, 'lane change failed; the run will try again on its timer'),
          );
          continue;
        }
        if (e.kind === 'approval_superseded') {
          await this.store
            .decideApproval(e.approvalId, { decision: 'superseded', by: { kind: 'system', id: `run:${e.by}` }, reason: e.reason.slice(0, 2_000) })
            .catch((err: unknown) => this.log?.debug({ err, approvalId: e.approvalId }, 'approval record not pending; not marking it superseded'));
          continue;
        }
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
        }).catch(async (err: unknown) => {
          // the bus refused it (a leader election, a partition): arm the next re-dispatch, then fail as before
          if (e.role === 'step') {
            await this.transact(runId, (cur) => planDispatchFailed(runId, cur, e.step, e.attempt)).catch((e2: unknown) => this.log?.warn({ err: e2, runId, step: e.step }, 'could not record the failed dispatch; the step waits for its deadline'));
          }
          throw err;
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
