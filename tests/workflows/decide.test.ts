import { describe, expect, it } from 'vitest';
import { reduceRun, type RunState } from '../../workflows/index.ts';
import { defineWorkflow, WorkflowDefinitionError } from '../../workflows/index.ts';
import { planStart, planOutcome, planWake, planCancel, type Plan } from '../../workflows/index.ts';
import { loadConfig } from '../../config/index.ts';

const t0 = new Date('2026-01-01T00:00:00Z');
const at = (ms: number) => new Date(t0.getTime() + ms);
const apply = (st: RunState, p: Plan) => p.events.reduce((s, e) => reduceRun(s, e as { type: string; data: unknown }) as RunState, st);

const gated = defineWorkflow({
  name: 'gated',
  version: 1,
  steps: {
    draft: { capability: 'x.draft' },
    ok: { after: ['draft'], approval: { action: 'reply.send', policy: 'reply.email', deadlineMs: 1_000, onTimeout: 'reject' } },
    send: { capability: 'x.send', after: ['ok'], when: { path: '$.steps.ok.output.decision', equals: 'approved' } },
  },
});

function startAndDraft(policies?: Record<string, 'approve' | 'audit' | 'auto'>) {
  const s = planStart('r1', gated, {}, { policies }, t0);
  let st = s.created;
  st = apply(st, s);
  const p = planOutcome('r1', st, { step: 'draft', attempt: 1, role: 'step', ok: true, output: { text: 'hi' } }, at(10));
  return { st: apply(st, p), p };
}

describe('the workflow planner (pure)', () => {
  it('waits for the operator by default, and rejects at the deadline when the definition says so', () => {
    const { st, p } = startAndDraft();
    expect(p.effects.map((e) => e.kind)).toEqual(['approval']);
    expect(st.steps.ok!.status).toBe('waiting_approval');
    expect(st.nextWakeAt).toBe(at(1_010).toISOString());
    const w = planWake('r1', st, at(1_011));
    const after = apply(st, w);
    expect(after.steps.ok!.output).toMatchObject({ decision: 'rejected', by: 'deadline' });
    expect(after.steps.send!.status).toBe('skipped');
    expect(after.status).toBe('completed');
  });

  it('lets the action through under an audit-only or automatic policy, recording the decision', () => {
    for (const mode of ['audit', 'auto'] as const) {
      const { st, p } = startAndDraft({ 'reply.email': mode });
      expect(st.steps.ok!.output).toMatchObject({ decision: 'approved', by: `policy:${mode}` });
      expect(p.effects.filter((e) => e.kind === 'task').map((e) => (e as { capability: string }).capability)).toEqual(['x.send']);
      expect(p.effects.some((e) => e.kind === 'audit')).toBe(mode === 'audit');
    }
  });

  it('retries a failed attempt after its backoff, then fails the step for good and compensates in reverse order', () => {
    const wf = defineWorkflow({
      name: 'comp',
      version: 1,
      steps: {
        a: { capability: 'a', compensate: { capability: 'undo-a' } },
        b: { capability: 'b', after: ['a'], compensate: { capability: 'undo-b' } },
        c: { capability: 'c', after: ['b'], retry: { maxAttempts: 2, backoffMs: 500, factor: 2 } },
      },
    });
    const s = planStart('r2', wf, {}, {}, t0);
    let st = apply(s.created, s);
    st = apply(st, planOutcome('r2', st, { step: 'a', attempt: 1, role: 'step', ok: true }, at(1)));
    st = apply(st, planOutcome('r2', st, { step: 'b', attempt: 1, role: 'step', ok: true }, at(2)));
    st = apply(st, planOutcome('r2', st, { step: 'c', attempt: 1, role: 'step', ok: false, error: 'boom' }, at(3)));
    expect(st.steps.c).toMatchObject({ status: 'failed', retryAt: at(503).toISOString() });
    const retry = planWake('r2', st, at(600));
    expect(retry.effects).toMatchObject([{ kind: 'task', capability: 'c', attempt: 2 }]);
    st = apply(st, retry);
    const fail = planOutcome('r2', st, { step: 'c', attempt: 2, role: 'step', ok: false, error: 'boom again' }, at(700));
    expect(fail.effects).toMatchObject([{ kind: 'task', role: 'compensation', capability: 'undo-b' }]);
    st = apply(st, fail);
    const next = planOutcome('r2', st, { step: 'b', attempt: 0, role: 'compensation', ok: true }, at(800));
    expect(next.effects).toMatchObject([{ kind: 'task', role: 'compensation', capability: 'undo-a' }]);
    st = apply(st, next);
    st = apply(st, planOutcome('r2', st, { step: 'a', attempt: 0, role: 'compensation', ok: true }, at(900)));
    expect(st.status).toBe('failed');
    expect(st.compensations.map((c) => [c.step, c.status])).toEqual([['b', 'completed'], ['a', 'completed']]);
    // a stale duplicate outcome changes nothing
    expect(planOutcome('r2', st, { step: 'c', attempt: 1, role: 'step', ok: true }, at(1_000)).events).toHaveLength(0);
  });

  it('cancels a running run; later outcomes change nothing', () => {
    const s = planStart('r3', gated, {}, {}, t0);
    let st = apply(s.created, s);
    st = apply(st, planCancel('r3', st, 'operator', at(5)));
    expect(st).toMatchObject({ status: 'cancelled', nextWakeAt: null });
    expect(planOutcome('r3', st, { step: 'draft', attempt: 1, role: 'step', ok: true }, at(6)).effects).toHaveLength(0);
    expect(planCancel('r3', st, 'operator', at(7)).events).toHaveLength(0);
  });

  it('refuses invalid definitions with every problem named', () => {
    expect(() => defineWorkflow({ name: 'bad', version: 1, steps: { a: { capability: 'x', after: ['b'] }, b: { capability: 'y', after: ['a'] }, c: { after: ['zz'], capability: 'z' } } })).toThrow(WorkflowDefinitionError);
    try {
      defineWorkflow({ name: 'bad', version: 1, steps: { a: { capability: 'x', after: ['b'] }, b: { capability: 'y', after: ['a'] }, c: { after: ['zz'], capability: 'z' } } });
    } catch (err) {
      expect((err as WorkflowDefinitionError).issues.join('\n')).toMatch(/unknown step 'zz'[\s\S]*cycle/);
    }
    expect(() => loadConfig({ KEEL_POLICY_REPLY_EMAIL: 'sometimes' })).toThrow(/approve, audit or auto/);
    expect(loadConfig({ KEEL_POLICY_REPLY_CHAT: 'AUTO' }).policies).toEqual({ 'reply.chat': 'auto' });
  });
});
