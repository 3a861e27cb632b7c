/**
 * Durable workflow timers fire from one place at a time: the agent instance holding the
 * `workflow-timers` lease sweeps; the others wait on the bus and never query the store for due
 * timers. A holder killed by SIGKILL is replaced within the lease TTL, so a timer due while it is
 * dead still fires within 5 s of its due time.
 */
import { describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { z } from 'zod';
import { REPO_ROOT } from '../../config/index.ts';
import { connectBus, createBus, listAgents, WORKFLOW_TIMER_LEASE, type Bus, type Manifest } from '../../bus/index.ts';
import { openStore, type StateStore } from '../../shared-state/index.ts';
import { defineAgent, defineCapability, runAgent, type RunningAgent } from '../../runtime/index.ts';
import { WorkflowEngine, loadWorkflowCatalog, workflowRunType, type RunState } from '../../workflows/index.ts';
import { createLogger } from '../../observability/index.ts';
import { natsSuite, uniqueName, waitFor } from '../helpers/index.ts';
import { startCountingProvider } from './provider.ts';
import { ALL_ENTITY_TYPES } from '../helpers/types.ts';

const AGENTS = join(REPO_ROOT, 'tests', 'workflows', 'fixtures', 'wf-agents.ts');
const DEFS = join(REPO_ROOT, 'tests', 'workflows', 'fixtures', 'deadline.ts');

const suite = natsSuite('timers');

async function newBus(): Promise<Bus> {
  const nc = await connectBus({ servers: suite.nats!.url });
  suite.defer(() => nc.close());
  const bus = createBus(nc, { prefix: uniqueName('t') });
  await bus.provision();
  return bus;
}

/** A store that counts the due-timer queries made through it (the sweeps). */
function countingStore(store: StateStore): { store: StateStore; timerQueries(): number } {
  let n = 0;
  const wrapped = new Proxy(store, {
    get(target, prop, receiver) {
      if (prop === 'query') {
        return (type: string, q: { filter?: Record<string, unknown> }) => {
          if (type === 'workflow_run' && q?.filter && 'nextWakeAt' in q.filter) n++;
          return target.query(type, q as never);
        };
      }
      if (prop === 'close') return async () => undefined; // shared: closed by the test
      const v = Reflect.get(target, prop, receiver) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return { store: wrapped, timerQueries: () => n };
}

const holders = (ms: Manifest[]) => ms.filter((m) => m.leases?.includes(WORKFLOW_TIMER_LEASE));

describe('workflow timers', () => {
  it('only the lease holder looks for due timers; the others do not query the store; a graceful stop hands over at once', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const bus = await newBus();
    const store = await openStore(`sqlite:${join(suite.dir, `${uniqueName('s')}.db`)}`, { types: [workflowRunType] });
    suite.defer(() => store.close());
    const def = defineAgent({
      name: 'idle',
      version: '1.0.0',
      capabilities: [defineCapability({ name: 'idle.noop', version: '1', input: z.unknown(), output: z.unknown(), handler: async () => ({}) })],
    });
    const agents: Array<{ running: RunningAgent; timerQueries(): number }> = [];
    for (let i = 0; i < 3; i++) {
      const c = countingStore(store);
      const running = await runAgent(def, { natsUrl: suite.nats!.url, state: c.store, prefix: bus.subjects.prefix, sweepMs: 200, logger: createLogger('idle', { level: 'silent' }) });
      suite.defer(() => running.stop(0));
      agents.push({ running, timerQueries: c.timerQueries });
    }
    await waitFor(() => agents.some((a) => a.running.timers.holding()), { what: 'a timer lease holder' });
    await new Promise((r) => setTimeout(r, 2_000));
    const holder = agents.find((a) => a.running.timers.holding())!;
    const others = agents.filter((a) => a !== holder);
    expect(agents.filter((a) => a.running.timers.holding())).toHaveLength(1);
    expect(holder.timerQueries()).toBeGreaterThanOrEqual(8); // every 200 ms
    for (const o of others) {
      expect(o.timerQueries()).toBe(0);
      expect(o.running.timers.sweeps()).toBe(0);
    }
    // the registry says who holds it
    expect(holders(await listAgents(bus.nc, bus.subjects.registryBucket)).map((m) => m.instanceId)).toEqual([holder.running.instanceId]);

    // a graceful stop hands the lease over at once, not after the TTL
    const t0 = performance.now();
    await holder.running.stop(0);
    await waitFor(() => others.some((a) => a.running.timers.holding()), { timeoutMs: 5_000, intervalMs: 10, what: 'the next holder' });
    const handoverMs = performance.now() - t0;
    console.log(`[timers] graceful handover in ${Math.round(handoverMs)} ms`);
    expect(handoverMs).toBeLessThan(1_000);
    const next = others.find((a) => a.running.timers.holding())!;
    const idle = others.find((a) => a !== next)!;
    const before = idle.timerQueries();
    await new Promise((r) => setTimeout(r, 1_000));
    expect(next.timerQueries()).toBeGreaterThan(0);
    expect(idle.timerQueries()).toBe(before);
  });

  it('SIGKILL of the sweeper holder just before a timer is due: the timer fires within 5 s of its due time', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const bus = await newBus();
    const state = `sqlite:${join(suite.dir, `${bus.subjects.prefix}.db`)}`;
    const store = await openStore(state, { types: ALL_ENTITY_TYPES });
    suite.defer(() => store.close());
    const provider = await startCountingProvider();
    suite.defer(() => provider.close());
    const engine = new WorkflowEngine({ store, bus, actor: { kind: 'human', id: 'tester' }, catalog: await loadWorkflowCatalog([], [DEFS]) });
    // the default sweep interval (KEEL_WORKFLOW_SWEEP_MS=1000) and lease TTL (2 s)
    const env: Record<string, string | undefined> = { ...process.env, KEEL_NATS_URL: suite.nats!.url, KEEL_SUBJECT_PREFIX: bus.subjects.prefix, KEEL_STATE: state, PROVIDER_URL: provider.url, KEEL_LOG_LEVEL: 'warn', KEEL_WORKFLOW_SWEEP_MS: undefined };
    const procs: ChildProcess[] = [];
    for (const which of ['alpha', 'beta', 'gamma']) {
      const child = spawn(process.execPath, [join(REPO_ROOT, 'cli', 'keel.ts'), 'agent', 'start', AGENTS], { env: { ...env, WF_AGENT: which }, stdio: ['ignore', 'inherit', 'inherit'] });
      procs.push(child);
      suite.defer(async () => {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGKILL');
          await new Promise((r) => child.once('exit', r));
        }
      });
    }
    const registry = () => listAgents(bus.nc, bus.subjects.registryBucket);
    await waitFor(async () => (await registry()).length === 3 && holders(await registry()).length === 1, { timeoutMs: 30_000, what: 'three agents, one holding the timer lease' });

    const { runId } = await engine.start('deadline', { n: 0 });
    await waitFor(async () => !!(await store.getApproval(`${runId}_ok`)), { what: 'the approval' });
    const dueAt = Date.parse((await store.get<RunState>('workflow_run', runId))!.state.nextWakeAt!);
    // kill the holder shortly before the timer is due: it is due while no sweeper runs
    await new Promise((r) => setTimeout(r, Math.max(0, dueAt - Date.now() - 300)));
    const [holder] = holders(await registry());
    const victim = procs.find((p) => p.pid === holder!.pid)!;
    expect(victim).toBeDefined();
    const killedAt = Date.now();
    victim.kill('SIGKILL');
    await new Promise((r) => victim.once('exit', r));
    expect(killedAt).toBeLessThan(dueAt);

    await waitFor(async () => (await store.get<RunState>('workflow_run', runId))?.state.steps.ok?.status === 'escalated', { timeoutMs: 15_000, intervalMs: 25, what: 'the deadline to fire' });
    const fired = (await engine.get(runId))!.history.find((e) => e.type === 'approval_escalated')!;
    const delayMs = Date.parse(fired.time) - dueAt;
    const [next] = holders(await registry()).filter((m) => m.pid !== holder!.pid);
    console.log(`[timers] holder ${holder!.agent} (pid ${holder!.pid}) killed ${dueAt - killedAt} ms before the timer was due; it fired ${delayMs} ms after its due time (by ${fired.meta.actor.id}; lease now with ${next?.agent ?? '?'})`);
    expect(delayMs).toBeGreaterThanOrEqual(0);
    expect(delayMs).toBeLessThanOrEqual(5_000);
    expect(fired.meta.actor.id).not.toBe(holder!.agent);
  }, 60_000);
});
