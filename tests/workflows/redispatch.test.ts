/**
 * Re-dispatch of a scheduled step's task. A dispatch lost to a crash is re-published once, 5 s
 * after scheduling. A publish the bus refused (a NATS leader election, a partition:
 * tests/bus/cluster-chaos.int.test.ts) arms the next re-publish, each time twice as late (at most
 * REDISPATCH_MAX_MS), so such a re-publish is not the last one; a task merely waiting in a long
 * queue is not re-published again and again. Pure planner decisions at explicit times.
 */
import { describe, expect, it } from 'vitest';
import { defineWorkflow, planDispatchFailed, planOutcome, planStart, planWake, reduceRun, REDISPATCH_AFTER_MS, DEFAULT_STEP_TIMEOUT_MS, type Plan, type RunState } from '../../workflows/index.ts';
import { REDISPATCH_MAX_MS } from '../../workflows/decide.ts';

const t0 = new Date('2026-01-01T00:00:00Z');
const at = (ms: number) => new Date(t0.getTime() + ms);
const apply = (st: RunState, p: Plan) => p.events.reduce((s, e) => reduceRun(s, e as { type: string; data: unknown }) as RunState, st);

const one = defineWorkflow({ name: 'one', version: 1, steps: { a: { capability: 'x.a' } } });

function started(): RunState {
  const s = planStart('r1', one, {}, {}, t0);
  return apply(s.created, s);
}

describe('re-dispatch of a scheduled step', () => {
  it('a dispatch that went out is re-published once after 5 s, then the step waits for its deadline', () => {
    let st = started();
    expect(st.nextWakeAt).toBe(at(REDISPATCH_AFTER_MS).toISOString());
    const w = planWake('r1', st, at(REDISPATCH_AFTER_MS));
    expect(w.effects).toMatchObject([{ kind: 'task', step: 'a', attempt: 1, taskId: st.steps.a!.taskId }]);
    st = apply(st, w);
    expect(st.steps.a).toMatchObject({ status: 'scheduled', redispatches: 1 });
    expect(st.steps.a!.redispatchAt).toBeUndefined();
    expect(st.nextWakeAt).toBe(st.steps.a!.deadlineAt);
    expect(planWake('r1', st, at(REDISPATCH_AFTER_MS + 60_000)).effects).toHaveLength(0);
  });

  it('each re-publish the bus refused arms the next, twice as late, until the step completes', () => {
    let st = started();
    const taskId = st.steps.a!.taskId;
    // the first dispatch was refused: the re-dispatch already pending (5 s) stays as it is
    expect(planDispatchFailed('r1', st, 'a', 1, at(10)).events).toHaveLength(0);
    let now = REDISPATCH_AFTER_MS;
    const gaps: number[] = [];
    for (let i = 0; i < 6; i++) {
      const w = planWake('r1', st, at(now));
      expect(w.effects).toMatchObject([{ kind: 'task', step: 'a', attempt: 1, taskId }]);
      st = apply(st, w);
      // ... and refused again
      const f = planDispatchFailed('r1', st, 'a', 1, at(now));
      expect(f.events.map((e) => e.type)).toEqual(['step_dispatch_failed']);
      st = apply(st, f);
      const next = Date.parse(st.steps.a!.redispatchAt!) - t0.getTime();
      gaps.push(next - now);
      expect(st.nextWakeAt).toBe(st.steps.a!.redispatchAt);
      now = next;
    }
    expect(gaps).toEqual([1, 2, 3, 4, 5, 6].map((k) => Math.min(REDISPATCH_AFTER_MS * 2 ** k, REDISPATCH_MAX_MS)));
    expect(now).toBeLessThan(DEFAULT_STEP_TIMEOUT_MS); // the step's deadline still comes after
    // a failure reported twice arms one re-dispatch, not two
    expect(planDispatchFailed('r1', st, 'a', 1, at(now - 1)).events).toHaveLength(0);

    st = apply(st, planOutcome('r1', st, { step: 'a', attempt: 1, role: 'step', ok: true }, at(now - 1)));
    expect(st.status).toBe('completed');
    expect(st.nextWakeAt).toBeNull();
    // a late report of a refused publish changes nothing on a finished step
    expect(planDispatchFailed('r1', st, 'a', 1, at(now)).events).toHaveLength(0);
  });

  it('a refused publish of an older attempt does not arm the current one', () => {
    let st = started();
    st = apply(st, planWake('r1', st, at(REDISPATCH_AFTER_MS)));
    expect(planDispatchFailed('r1', st, 'a', 2, at(REDISPATCH_AFTER_MS)).events).toHaveLength(0);
  });
});
