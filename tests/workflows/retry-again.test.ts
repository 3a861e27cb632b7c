/**
 * A run retried after it failed (`keel run retry --from`): an approval step asked again gets a new
 * approval (the decided one is not reused), and a second failure escalates again.
 */
import { describe, expect, it } from 'vitest';
import { defineWorkflow, planStart, planOutcome, planApproval, planRetryFrom, reduceRun, FAILURE_STEP, type Plan, type RunState } from '../../workflows/index.ts';

const t0 = new Date('2026-01-01T00:00:00Z');
const at = (ms: number) => new Date(t0.getTime() + ms);
const apply = (st: RunState, p: Plan) => p.events.reduce((s, e) => reduceRun(s, e as { type: string; data: unknown }) as RunState, st);

const wf = defineWorkflow({
  name: 'draft-review',
  version: 1,
  onFailure: { escalate: 'ops.block', input: { runId: '$.run.id', reason: '$.run.error' } },
  steps: {
    draft: { capability: 'w.draft' },
    review: { after: ['draft'], approval: { action: 'publish', deadlineMs: 60_000 } },
    apply: { capability: 'w.apply', after: ['review'], input: { decision: '$.steps.review.output.decision' } },
  },
});

describe('retrying a failed run', () => {
  it('asks the operator again with a new approval id, and a second failure escalates with a new task', () => {
    const s0 = planStart('r1', wf, {}, {}, at(0));
    let st = apply(s0.created, s0);
    st = apply(st, planOutcome('r1', st, { step: 'draft', attempt: 1, role: 'step', ok: true, output: { v: 1 } }, at(1)));
    expect(st.steps.review).toMatchObject({ status: 'waiting_approval', approvalId: 'r1_review', attempt: 1 });
    st = apply(st, planApproval('r1', st, 'review', 'rejected', 'human:op', undefined, at(2)));
    const fail1 = planOutcome('r1', st, { step: 'apply', attempt: 1, role: 'step', ok: false, error: 'rejected by human:op', deadLetter: { reason: 'permanent_error' } }, at(3));
    st = apply(st, fail1);
    expect(st).toMatchObject({ status: 'failed', failures: 1 });
    expect(fail1.effects).toEqual([expect.objectContaining({ role: 'escalation', taskId: `r1.${FAILURE_STEP}.escalation` })]);

    // retried from the draft: a new draft, then a new approval (not the decided one)
    st = apply(st, planRetryFrom('r1', st, 'draft', undefined, at(4)));
    expect(st.status).toBe('running');
    st = apply(st, planOutcome('r1', st, { step: 'draft', attempt: 2, role: 'step', ok: true, output: { v: 2 } }, at(5)));
    const again = planOutcome('r1', st, { step: 'draft', attempt: 2, role: 'step', ok: true, output: { v: 2 } }, at(5));
    expect(again.events).toEqual([]); // already recorded
    expect(st.steps.review).toMatchObject({ status: 'waiting_approval', approvalId: 'r1_review-2', attempt: 2 });
    st = apply(st, planApproval('r1', st, 'review', 'rejected', 'human:op', undefined, at(6)));
    const fail2 = planOutcome('r1', st, { step: 'apply', attempt: 2, role: 'step', ok: false, error: 'rejected again', deadLetter: { reason: 'permanent_error' } }, at(7));
    st = apply(st, fail2);
    expect(st).toMatchObject({ status: 'failed', failures: 2 });
    expect(fail2.effects).toEqual([expect.objectContaining({ role: 'escalation', capability: 'ops.block', taskId: `r1.${FAILURE_STEP}-2.escalation` })]);
  });

  it('a pending approval of a step that runs again is marked superseded (it can no longer be decided)', () => {
    const s0 = planStart('r2', wf, {}, {}, at(0));
    let st = apply(s0.created, s0);
    st = apply(st, planOutcome('r2', st, { step: 'draft', attempt: 1, role: 'step', ok: true, output: { v: 1 } }, at(1)));
    const p = planRetryFrom('r2', st, 'draft', undefined, at(2));
    expect(p.effects).toContainEqual({ kind: 'approval_superseded', step: 'review', approvalId: 'r2_review', by: 'r2', reason: "run retried from step 'draft'" });
    st = apply(st, p);
    expect(st.steps.review).toMatchObject({ status: 'pending' });
  });
});
