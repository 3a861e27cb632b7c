/**
 * `notBefore` on a step, `trigger.when`, and `matches` conditions: the planner's decisions as
 * pure functions of the run's state and explicit times.
 */
import { describe, expect, it } from 'vitest';
import {
  defineWorkflow, evaluate, planCancel, planOutcome, planRetryFrom, planStart, planWake, reduceRun, WorkflowDefinitionError,
  type EvalContext, type Plan, type RunState, type WorkflowInput,
} from '../../workflows/index.ts';

const t0 = new Date('2026-01-01T00:00:00Z');
const at = (ms: number) => new Date(t0.getTime() + ms);
const apply = (st: RunState, p: Plan) => p.events.reduce((s, e) => reduceRun(s, e as { type: string; data: unknown }) as RunState, st);
const tasks = (p: Plan) => p.effects.filter((e) => e.kind === 'task').map((e) => (e as { step: string }).step);

/** a → b (not before `$.steps.a.output.at`) → c; a has an undo */
const paged = defineWorkflow({
  name: 'paged',
  version: 1,
  steps: {
    a: { capability: 'x.a', compensate: { capability: 'x.undo-a' } },
    b: { capability: 'x.b', after: ['a'], notBefore: '$.steps.a.output.at', input: { n: '$.steps.a.output.n' } },
    c: { capability: 'x.c', after: ['b'] },
  },
});

/** Starts a run of `paged` and completes `a` at t0+10 ms with `output`. */
function afterA(output: unknown) {
  const s = planStart('r1', paged, {}, {}, t0);
  let st = apply(s.created, s);
  const p = planOutcome('r1', st, { step: 'a', attempt: 1, role: 'step', ok: true, output }, at(10));
  st = apply(st, p);
  return { st, p };
}

describe('notBefore', () => {
  it('a ready step whose time is ahead waits; its time is the run\'s next wake; it is scheduled once due, not before', () => {
    const until = at(60_000).toISOString();
    const { st, p } = afterA({ at: until, n: 7 });
    expect(tasks(p)).toEqual([]);
    expect(p.events.map((e) => e.type)).toEqual(['step_completed', 'step_waiting']);
    expect(p.events[1]!.data).toMatchObject({ step: 'b', until });
    expect(st.steps.b).toMatchObject({ status: 'waiting', waitUntil: until, attempt: 0 });
    expect(st.nextWakeAt).toBe(until);
    expect(st.status).toBe('running');

    // a sweep before the time changes nothing
    expect(planWake('r1', st, at(59_999)).events).toHaveLength(0);

    // at the time: scheduled with its input mapped then, and the wake moves to the task's timers
    const w = planWake('r1', st, at(60_000));
    expect(w.effects).toMatchObject([{ kind: 'task', step: 'b', attempt: 1, capability: 'x.b', input: { n: 7 } }]);
    const st2 = apply(st, w);
    expect(st2.steps.b).toMatchObject({ status: 'scheduled', scheduledAt: until, attempt: 1 });
    expect(st2.nextWakeAt).toBe(at(65_000).toISOString()); // the redispatch check, 5 s on
    // and the run goes on as any other
    const done = apply(st2, planOutcome('r1', st2, { step: 'b', attempt: 1, role: 'step', ok: true }, at(61_000)));
    const end = apply(done, planOutcome('r1', done, { step: 'c', attempt: 1, role: 'step', ok: true }, at(62_000)));
    expect(end.status).toBe('completed');
  });

  it('a sweep after the time schedules it too (a late sweep), and epoch ms count as a time', () => {
    const { st } = afterA({ at: at(5_000).getTime() });
    expect(st.steps.b).toMatchObject({ status: 'waiting', waitUntil: at(5_000).toISOString() });
    expect(tasks(planWake('r1', st, at(9_000)))).toEqual(['b']);
  });

  it('a time now or in the past, or no time at all, schedules at once', () => {
    for (const when of [at(10).toISOString(), at(-3_600_000).toISOString(), at(0).getTime(), null, undefined, '2025-12-31T23:00:00+01:00']) {
      const { st, p } = afterA({ at: when });
      expect(tasks(p), String(when)).toEqual(['b']);
      expect(st.steps.b!.status).toBe('scheduled');
    }
  });

  it('an ISO time with an offset is read in its zone', () => {
    // 2026-01-01T02:00+02:00 is t0: not in the future at t0+10 ms; 03:00+02:00 is an hour ahead
    expect(tasks(afterA({ at: '2026-01-01T02:00:00+02:00' }).p)).toEqual(['b']);
    expect(afterA({ at: '2026-01-01T03:00:00+02:00' }).st.steps.b!.waitUntil).toBe(at(3_600_000).toISOString());
  });

  it('something that is not a time fails the step for good and the run compensates', () => {
    for (const garbage of ['tomorrow-ish', { day: 1 }, true, '2026-01-01T10:00:00', '']) {
      const { st, p } = afterA({ at: garbage });
      expect(p.events.find((e) => e.type === 'step_failed')!.data, JSON.stringify(garbage)).toMatchObject({ step: 'b', final: true });
      expect(st.steps.b!.status).toBe('failed');
      expect(st.steps.b!.error).toBe(`notBefore of step 'b' is not a time: ${JSON.stringify(garbage)} (expected an ISO 8601 time with a zone, e.g. 2026-03-01T09:00:00Z, or epoch ms)`);
      // a's undo runs, nothing else is dispatched
      expect(p.effects).toMatchObject([{ kind: 'task', role: 'compensation', capability: 'x.undo-a' }]);
      expect(st.status).toBe('compensating');
      const end = apply(st, planOutcome('r1', st, { step: 'a', attempt: 0, role: 'compensation', ok: true }, at(20)));
      expect(end.status).toBe('failed');
      expect(end.error).toContain("notBefore of step 'b' is not a time");
    }
  });

  it('retry from a step resets a waiting step, which waits again for a time still ahead (and runs at once for one past)', () => {
    const { st } = afterA({ at: at(60_000).toISOString() });
    const r = planRetryFrom('r1', st, 'a', undefined, at(1_000));
    const st2 = apply(st, r);
    expect(st2.steps.b).toMatchObject({ status: 'pending' });
    expect(st2.steps.b!.waitUntil).toBeUndefined();
    expect(tasks(r)).toEqual(['a']);
    expect(st2.nextWakeAt).toBe(at(6_000).toISOString()); // a's redispatch, not b's old time
    // re-driven from b itself: it waits again for its time
    const again = apply(st, planRetryFrom('r1', st, 'b', undefined, at(2_000)));
    expect(again.steps.b).toMatchObject({ status: 'waiting', waitUntil: at(60_000).toISOString() });
    // once the time has passed, the re-driven step runs at once
    const late = planRetryFrom('r1', st, 'b', undefined, at(70_000));
    expect(tasks(late)).toEqual(['b']);
  });

  it('cancelling a run with a waiting step ends it, and no wake is left', () => {
    const { st } = afterA({ at: at(60_000).toISOString() });
    const end = apply(st, planCancel('r1', st, 'op', at(1_000)));
    expect(end.status).toBe('cancelled');
    expect(end.nextWakeAt).toBeNull();
    expect(planWake('r1', end, at(61_000)).events).toHaveLength(0);
  });

  it('a waiting step does not wake its run while the run compensates (a parallel step failed)', () => {
    const wf = defineWorkflow({
      name: 'par',
      version: 1,
      steps: {
        later: { capability: 'x.later', notBefore: '$.input.at' },
        now: { capability: 'x.now', compensate: { capability: 'x.undo-now' } },
        boom: { capability: 'x.boom', after: ['now'] },
      },
    });
    const s = planStart('r2', wf, { at: at(60_000).toISOString() }, {}, t0);
    expect(tasks(s)).toEqual(['now']);
    let st = apply(s.created, s);
    expect(st.steps.later).toMatchObject({ status: 'waiting' });
    st = apply(st, planOutcome('r2', st, { step: 'now', attempt: 1, role: 'step', ok: true }, at(10)));
    st = apply(st, planOutcome('r2', st, { step: 'boom', attempt: 1, role: 'step', ok: false, error: 'x' }, at(20)));
    expect(st.status).toBe('compensating');
    // only the waiting step had a timer, and it cannot start now: nothing keeps the run in the sweep
    expect(st.nextWakeAt).toBeNull();
    expect(tasks(planWake('r2', st, at(61_000)))).toEqual([]);
    st = apply(st, planOutcome('r2', st, { step: 'now', attempt: 0, role: 'compensation', ok: true }, at(30)));
    expect(st.status).toBe('failed');
    expect(st.steps.later!.status).toBe('waiting');
  });

  it('works for an approval step: the approval is requested once due, its deadline counted from then', () => {
    const wf = defineWorkflow({
      name: 'gate-later',
      version: 1,
      steps: { ok: { approval: { action: 'x.page', deadlineMs: 1_000 }, notBefore: '$.input.at' } },
    });
    const s = planStart('r3', wf, { at: at(30_000).toISOString() }, {}, t0);
    const st = apply(s.created, s);
    expect(s.effects).toEqual([]);
    expect(st.steps.ok).toMatchObject({ status: 'waiting' });
    const w = planWake('r3', st, at(30_000));
    expect(w.effects).toMatchObject([{ kind: 'approval', step: 'ok', deadlineAt: at(31_000).toISOString() }]);
    expect(apply(st, w).steps.ok!.status).toBe('waiting_approval');
  });

  it('a step that becomes ready behind a lane waits for the lane too: the time alone does not schedule it', () => {
    const wf = defineWorkflow({
      name: 'laned',
      version: 1,
      concurrencyKey: '$.input.key',
      steps: { later: { capability: 'x.later', notBefore: '$.input.at' } },
    });
    const s = planStart('r4', wf, { key: 'k', at: at(60_000).toISOString() }, {}, t0);
    let st = apply(s.created, s);
    expect(st.lane).toMatchObject({ status: 'requested' });
    expect(st.steps.later!.status).toBe('pending');
    // the lane is granted (not modelled here: the event as planLane would emit it), then the time passes
    st = reduceRun(st, { type: 'lane_acquired', data: { key: 'k', at: at(1).toISOString() } }) as RunState;
    const p = planWake('r4', st, at(2));
    st = apply(st, p);
    expect(st.steps.later).toMatchObject({ status: 'waiting' });
    expect(st.nextWakeAt).toBe(at(60_000).toISOString());
    expect(tasks(planWake('r4', st, at(60_000)))).toEqual(['later']);
  });
});

describe('matches conditions', () => {
  const ctx = (v: unknown): EvalContext => ({ input: { v }, steps: {}, run: { id: 'r' } });
  const c = { path: '$.input.v', matches: '^<[^>]+@example\\.com>$' };

  it('is true for a matching string, false for another string, a non-string or nothing', () => {
    expect(evaluate(c, ctx('<a1@example.com>'))).toBe(true);
    expect(evaluate(c, ctx('<a1@example.org>'))).toBe(false);
    expect(evaluate(c, ctx('x <a1@example.com>'))).toBe(false);
    for (const v of [42, { a: '<a1@example.com>' }, ['<a1@example.com>'], null, undefined, true]) expect(evaluate(c, ctx(v)), JSON.stringify(v)).toBe(false);
    // no flags: case matters
    expect(evaluate({ path: '$.input.v', matches: 'abc' }, ctx('ABC'))).toBe(false);
  });

  it('skips a step in a run when false', () => {
    const wf = defineWorkflow({
      name: 'm',
      version: 1,
      steps: { reply: { capability: 'x.reply', when: { path: '$.input.subject', matches: '^(Re|RE): ' } } },
    });
    const yes = planStart('r5', wf, { subject: 'Re: invoice' }, {}, t0);
    expect(tasks(yes)).toEqual(['reply']);
    const no = planStart('r6', wf, { subject: 'invoice' }, {}, t0);
    expect(apply(no.created, no).steps.reply!.status).toBe('skipped');
  });

  it('an invalid regular expression is refused by defineWorkflow, naming the step or the trigger', () => {
    const bad = (extra: Partial<WorkflowInput>) => () => defineWorkflow({ name: 'bad', version: 1, steps: { s: { capability: 'x.s' } }, ...extra });
    expect(bad({ steps: { s: { capability: 'x.s', when: { path: '$.input.v', matches: '(unclosed' } } } })).toThrow(/steps\.s\.when\.matches: invalid regular expression \/\(unclosed\//);
    expect(bad({ trigger: { event: 'mail.received', when: { path: '$.input.event.data.subject', matches: '[z-a]' } } })).toThrow(/trigger\.when\.matches: invalid regular expression/);
    try {
      bad({ trigger: { event: 'mail.received', when: { path: '$.input.event.data.subject', matches: '*' } } })();
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(WorkflowDefinitionError);
      expect((err as WorkflowDefinitionError).code).toBe('WORKFLOW_INVALID');
    }
  });
});

describe('trigger.when', () => {
  it('is a condition like a step\'s: an invalid one is refused at define time', () => {
    const def = (when: unknown) => () => defineWorkflow({ name: 'tw', version: 1, trigger: { event: 'mail.received', when } as never, steps: { s: { capability: 'x.s' } } });
    expect(def({ path: '$.input.event.data.inReplyTo', truthy: true })).not.toThrow();
    expect(def({ path: 'input.event', truthy: true })).toThrow(WorkflowDefinitionError); // not a $. path
    expect(def({ path: '$.input.event', contains: 'x' })).toThrow(WorkflowDefinitionError); // no such operator
    expect(def({ path: '$.input.event', matches: 1 })).toThrow(WorkflowDefinitionError);
  });
});
