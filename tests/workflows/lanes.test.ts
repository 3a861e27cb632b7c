/**
 * The planner's side of issue #20 (pure, no servers): per-key lanes with supersession, a dead
 * letter failing its step at once, a run's failure escalation, and re-driving a dead-lettered
 * task. The lane's own decisions (join, release, commit) are pure too.
 */
import { describe, expect, it } from 'vitest';
import {
  defineWorkflow, type WorkflowDefinitionError, reduceRun, reduceLane, planStart, planOutcome, planWake, planLane, planSupersede, planRedrive, planApproval,
  planJoin, planRelease, planCommit, LANE_RETRY_MS, FAILURE_STEP, type Plan, type RunState, type LaneState,
} from '../../workflows/index.ts';

const t0 = new Date('2026-01-01T00:00:00Z');
const at = (ms: number) => new Date(t0.getTime() + ms);
const apply = (st: RunState, p: Plan) => p.events.reduce((s, e) => reduceRun(s, e as { type: string; data: unknown }) as RunState, st);

/** intake names the key; then a draft, an approval, a send — the shape of inbound-message. */
const keyed = defineWorkflow({
  name: 'keyed',
  version: 1,
  concurrencyKey: '$.steps.intake.output.ticketId',
  supersede: { before: 'send', reason: { $concat: ['new message ', '$.steps.intake.output.messageId'] } },
  onFailure: { escalate: 'ops.escalate', input: { runId: '$.run.id', reason: '$.run.error' } },
  steps: {
    intake: { capability: 'x.intake', retry: { maxAttempts: 3, backoffMs: 1_000, factor: 2 } },
    draft: { capability: 'x.draft', after: ['intake'] },
    ok: { after: ['draft'], approval: { action: 'reply.send', deadlineMs: 60_000 } },
    send: { capability: 'x.send', after: ['ok'], when: { path: '$.steps.ok.output.decision', equals: 'approved' }, input: { text: { $coalesce: ['$.steps.ok.output.text', '$.steps.draft.output.text'] } } },
  },
});

function started(runId = 'r1') {
  const s = planStart(runId, keyed, { m: 1 }, {}, t0);
  return apply(s.created, s);
}

function intakeDone(runId = 'r1', messageId = 'm1') {
  const st = started(runId);
  const p = planOutcome(runId, st, { step: 'intake', attempt: 1, role: 'step', ok: true, output: { ticketId: 'tkt-1', messageId } }, at(10));
  return { st: apply(st, p), p };
}

const lane = (o: Partial<LaneState> = {}): LaneState => ({ workflow: 'keyed', key: 'tkt-1', holder: null, committed: false, waiting: [], superseded: [], ...o });
const applyLane = (l: LaneState, events: Array<{ type: string; data?: unknown }>) => events.reduce((s, e) => reduceLane(s, { type: e.type, data: e.data }) as LaneState, l);

describe('per-key lanes (pure)', () => {
  it('refuses supersede without a key, or naming an unknown step', () => {
    const issues = (def: Parameters<typeof defineWorkflow>[0]) => {
      try {
        defineWorkflow(def);
        return [];
      } catch (err) {
        return (err as WorkflowDefinitionError).issues;
      }
    };
    expect(issues({ name: 'a', version: 1, supersede: { before: 'x' }, steps: { x: { capability: 'c' } } })).toEqual(['supersede: needs a concurrencyKey']);
    expect(issues({ name: 'a', version: 1, concurrencyKey: '$.input.k', supersede: { before: 'nope' }, steps: { x: { capability: 'c' } } })).toEqual(["supersede.before: unknown step 'nope'"]);
  });

  it('once the key resolves the run asks for the lane and schedules nothing until it holds it; a lost join is tried again', () => {
    const { st, p } = intakeDone();
    expect(p.events.map((e) => e.type)).toEqual(['step_completed', 'lane_requested']);
    expect(p.effects).toEqual([{ kind: 'lane', op: 'join', key: 'tkt-1' }]);
    expect(st.steps.draft!.status).toBe('pending');
    expect(st.nextWakeAt).toBe(at(10 + LANE_RETRY_MS).toISOString());
    // no answer (the process died): the timer asks again
    const w = planWake('r1', st, at(10 + LANE_RETRY_MS));
    expect(w.effects).toEqual([{ kind: 'lane', op: 'join', key: 'tkt-1' }]);
    // the lane answers: the run carries on
    const a = planLane('r1', st, 'tkt-1', { acquired: true }, at(20));
    expect(a.effects.map((e) => (e.kind === 'task' ? e.step : e.kind))).toEqual(['draft']);
    // waiting: still nothing scheduled, and it re-checks on its timer
    const wt = planLane('r1', st, 'tkt-1', { acquired: false, holder: 'r0' }, at(20));
    expect(apply(st, wt).lane).toMatchObject({ status: 'waiting', holder: 'r0' });
    expect(wt.effects).toEqual([]);
  });

  it('the newest run wins: it supersedes the holder until the holder commits, then waits for it; older waiting runs are superseded', () => {
    // r1 holds; r2 joins: r1 superseded, r2 holds
    let l = lane({ holder: 'r1' });
    const j2 = planJoin(l, 'r2', { supersede: true, holderLive: true });
    expect(j2).toMatchObject({ acquired: true, superseded: ['r1'], activated: [] });
    l = applyLane(l, j2.events);
    expect(l).toMatchObject({ holder: 'r2', superseded: [{ runId: 'r1', by: 'r2' }] });
    // r2 commits (its send starts); r3 and then r4 join: they wait, and r4 supersedes r3
    expect(planCommit(l, 'r1').ok).toBe(false);
    const c = planCommit(l, 'r2');
    l = applyLane(l, c.events);
    const j3 = planJoin(l, 'r3', { supersede: true, holderLive: true });
    l = applyLane(l, j3.events);
    expect(j3.acquired).toBe(false);
    const j4 = planJoin(l, 'r4', { supersede: true, holderLive: true });
    l = applyLane(l, j4.events);
    expect(j4).toMatchObject({ acquired: false, superseded: ['r3'] });
    expect(l).toMatchObject({ holder: 'r2', committed: true, waiting: ['r4'] });
    // r2 finishes: r4 takes the lane
    const r = planRelease(l, 'r2', { supersede: true });
    expect(r.activated).toEqual(['r4']);
    l = applyLane(l, r.events);
    expect(l).toMatchObject({ holder: 'r4', committed: false, waiting: [] });
    // r1 re-joins (it had not heard it was superseded): told so, nothing changes
    expect(planJoin(l, 'r1', { supersede: true, holderLive: true })).toMatchObject({ acquired: false, supersededBy: 'r2', events: [] });
    // a holder that finished without releasing (crash) is released by the next join
    expect(planJoin(l, 'r5', { supersede: true, holderLive: false })).toMatchObject({ acquired: true, superseded: [] });
  });

  it('without supersede, runs of a key take turns in arrival order', () => {
    let l = lane({ holder: 'a' });
    for (const r of ['b', 'c']) l = applyLane(l, planJoin(l, r, { supersede: false, holderLive: true }).events);
    expect(l.waiting).toEqual(['b', 'c']);
    const r = planRelease(l, 'a', { supersede: false });
    expect(r.activated).toEqual(['b']);
  });

  it('a superseded run: its pending approval is marked superseded (effect), the run ends superseded and leaves its lane', () => {
    let { st } = intakeDone();
    st = apply(st, planLane('r1', st, 'tkt-1', { acquired: true }, at(20)));
    st = apply(st, planOutcome('r1', st, { step: 'draft', attempt: 1, role: 'step', ok: true, output: { text: 'hi' } }, at(30)));
    expect(st.steps.ok!.status).toBe('waiting_approval');
    const p = planSupersede('r1', st, 'r2', 'new message m2 (run r2)', at(40));
    const after = apply(st, p);
    expect(after).toMatchObject({ status: 'superseded', supersededBy: 'r2', error: 'new message m2 (run r2)' });
    expect(after.steps.ok).toMatchObject({ status: 'superseded', supersededBy: 'r2', reason: 'new message m2 (run r2)' });
    expect(p.effects).toEqual([
      { kind: 'approval_superseded', step: 'ok', approvalId: 'r1_ok', by: 'r2', reason: 'new message m2 (run r2)' },
      { kind: 'lane', op: 'release', key: 'tkt-1' },
    ]);
    // approving it now changes nothing
    expect(planApproval('r1', after, 'ok', 'approved', 'human:op', undefined, at(50)).events).toEqual([]);
  });

  it('a dead letter that a retry cannot fix fails the step at once (despite its retry policy), with the reason; the failure escalates', () => {
    const st = started();
    const p = planOutcome('r1', st, { step: 'intake', attempt: 1, role: 'step', ok: false, error: 'schema_mismatch: message: Required', deadLetter: { reason: 'schema_mismatch', seq: 7 } }, at(10));
    const after = apply(st, p);
    expect(after.status).toBe('failed');
    expect(after.error).toContain('schema_mismatch: message: Required');
    expect(after.steps.intake).toMatchObject({ status: 'failed', deadLetter: { reason: 'schema_mismatch', seq: 7 } });
    expect(p.effects).toEqual([{ kind: 'task', role: 'escalation', step: FAILURE_STEP, attempt: 0, capability: 'ops.escalate', taskId: `r1.${FAILURE_STEP}.escalation`, input: { runId: 'r1', reason: after.error } }]);
    // the bus gave up after its deliveries (maybe transient): the step's retry policy still applies
    const q = planOutcome('r1', st, { step: 'intake', attempt: 1, role: 'step', ok: false, error: 'max_deliveries: timeout', deadLetter: { reason: 'max_deliveries' } }, at(10));
    expect(apply(st, q).steps.intake).toMatchObject({ status: 'failed', retryAt: at(1_010).toISOString() });
  });

  it('re-driving a dead-lettered task reopens its step; the run completes when the new delivery does', () => {
    const wf = defineWorkflow({ name: 'one', version: 1, steps: { a: { capability: 'x.a' } } });
    const s = planStart('r9', wf, {}, {}, t0);
    let st = apply(s.created, s);
    st = apply(st, planOutcome('r9', st, { step: 'a', attempt: 1, role: 'step', ok: false, error: 'permanent_error: smtp down', deadLetter: { reason: 'permanent_error', seq: 3 } }, at(10)));
    expect(st.status).toBe('failed');
    const r = planRedrive('r9', st, 'a', 1, { seq: 3, by: 'human:op' }, at(20));
    st = apply(st, r);
    expect(st.status).toBe('running');
    expect(st.steps.a).toMatchObject({ status: 'scheduled', attempt: 1 });
    expect(planRedrive('r9', st, 'a', 1, { seq: 3, by: 'human:op' }, at(21)).events).toEqual([]);
    st = apply(st, planOutcome('r9', st, { step: 'a', attempt: 1, role: 'step', ok: true, output: {} }, at(30)));
    expect(st.status).toBe('completed');
  });
});
