import { describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { REPO_ROOT } from '../../config/index.ts';
import { connectBus, createBus, listAgents, type Bus } from '../../bus/index.ts';
import { openStore, type StateStore } from '../../shared-state/index.ts';
import { type RunState } from '../../workflows/index.ts';
import { WorkflowEngine } from '../../workflows/index.ts';
import { loadWorkflowCatalog } from '../../workflows/index.ts';
import { natsSuite, uniqueName, waitFor } from '../helpers/index.ts';
import { startCountingProvider } from './provider.ts';
import { ALL_ENTITY_TYPES } from '../helpers/types.ts';

const AGENTS = join(REPO_ROOT, 'tests', 'workflows', 'fixtures', 'wf-agents.ts');
/** the three fixture agents co-hosted in one process (KEEL_AGENT_HOSTS layout) */
const HOSTED = ['wf-alpha.ts', 'wf-beta.ts', 'wf-gamma.ts'].map((f) => join(REPO_ROOT, 'tests', 'workflows', 'fixtures', f)).join(',');
const DEFS = join(REPO_ROOT, 'tests', 'workflows', 'fixtures', 'diamond.ts');

const suite = natsSuite('wf');
const closers = { push: (fn: () => Promise<unknown>) => suite.defer(fn) };

interface World {
  bus: Bus;
  store: StateStore;
  engine: WorkflowEngine;
  provider: Awaited<ReturnType<typeof startCountingProvider>>;
  env: Record<string, string>;
  agents: Record<string, ChildProcess>;
  spawnAgent(which: string): ChildProcess;
}

async function world(): Promise<World> {
  const prefix = uniqueName('w');
  const nc = await connectBus({ servers: suite.nats!.url });
  closers.push(() => nc.close());
  const bus = createBus(nc, { prefix });
  await bus.provision();
  const state = `sqlite:${join(suite.dir, `${prefix}.db`)}`;
  const store = await openStore(state, { types: ALL_ENTITY_TYPES });
  closers.push(() => store.close());
  const provider = await startCountingProvider();
  closers.push(() => provider.close());
  const engine = new WorkflowEngine({ store, bus, actor: { kind: 'human', id: 'tester' }, catalog: await loadWorkflowCatalog([], [DEFS]) });
  const env = { KEEL_NATS_URL: suite.nats!.url, KEEL_SUBJECT_PREFIX: prefix, KEEL_STATE: state, PROVIDER_URL: provider.url, KEEL_LOG_LEVEL: 'warn', KEEL_WORKFLOW_SWEEP_MS: '300' };
  const agents: Record<string, ChildProcess> = {};
  const spawnAgent = (which: string) => {
    // `host1`, `host2`: a process co-hosting all three agents; else one agent alone
    const spec = which.startsWith('host') ? HOSTED : AGENTS;
    const child = spawn(process.execPath, [join(REPO_ROOT, 'cli', 'keel.ts'), 'agent', 'start', spec], { env: { ...process.env, ...env, WF_AGENT: which }, stdio: ['ignore', 'inherit', 'inherit'] });
    agents[which] = child;
    closers.push(async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await new Promise((r) => child.once('exit', r));
      }
    });
    return child;
  };
  return { bus, store, engine, provider, env, agents, spawnAgent };
}

/** The layouts the chaos test runs in: one process per agent, or one process co-hosting all three (KEEL_AGENT_HOSTS=all; a kill stops them all until the restart). */
const LAYOUTS = { 'one process per agent': ['alpha', 'beta', 'gamma'], 'co-hosted (one host of all three agents)': ['host1'] } as const;

async function startAll(w: World, processes: readonly string[] = LAYOUTS['one process per agent']): Promise<void> {
  for (const a of processes) w.spawnAgent(a);
  const instances = processes.length * (processes[0]!.startsWith('host') ? 3 : 1);
  await waitFor(async () => (await listAgents(w.bus.nc, w.bus.subjects.registryBucket)).length === instances, { timeoutMs: 30_000, what: `${instances} agent instances in ${processes.length} processes` });
}

const finished = (w: World, runId: string, status = 'completed') =>
  waitFor(async () => (await w.store.get<RunState>('workflow_run', runId))?.state.status === status, { timeoutMs: 30_000, what: `run ${runId} ${status}` });

describe('decentralized workflows', () => {
  it('a parallel branch and a join run across three agent processes; only they (and the starter) decide', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const w = await world();
    await startAll(w);
    const { runId } = await w.engine.start('diamond', { n: 0 });
    await finished(w, runId);
    const run = (await w.engine.get(runId))!;
    expect(run.state.steps.d!.output).toMatchObject({ step: 'd', n: 3 });
    expect(run.state.steps.a!.agent).toBe('wf-alpha');
    expect(run.state.steps.d!.agent).toBe('wf-alpha');
    expect(run.state.steps.b!.agent).toBe('wf-beta');
    expect(run.state.steps.c!.agent).toBe('wf-gamma');
    // the join came after both branches
    expect(Date.parse(run.state.steps.d!.completedAt!)).toBeGreaterThanOrEqual(Date.parse(run.state.steps.b!.completedAt!));
    const deciders = new Set(run.history.map((h) => `${h.meta.actor.kind}:${h.meta.actor.id}`));
    expect([...deciders].sort()).toEqual(['agent:wf-alpha', 'agent:wf-beta', 'agent:wf-gamma', 'human:tester']);
    // each step's side effect happened once
    expect(w.provider.byStep(runId)).toEqual({ a: 1, b: 1, c: 1, d: 1 });
  });

  it('`keel replay` of a finished run makes no model call and no side effect and reports no divergence; after a change it reports one', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const w = await world();
    await startAll(w);
    const { runId } = await w.engine.start('diamond', { n: 0 });
    await finished(w, runId);
    const callsBefore = w.provider.calls();
    const replay = (env: Record<string, string>) => {
      const r = spawnSync(process.execPath, [join(REPO_ROOT, 'cli', 'keel.ts'), 'replay', runId, '--agent', AGENTS, '--json'], { env: { ...process.env, ...w.env, KEEL_AGENTS: 'none', ...env }, encoding: 'utf8' });
      return { status: r.status, report: JSON.parse(r.stdout) as { divergences: number; modelCalls: number; sideEffects: number; steps: Array<{ step: string; result: string; effectsReadBack: number }> } };
    };
    const same = replay({});
    expect(same.status).toBe(0);
    expect(same.report).toMatchObject({ divergences: 0, modelCalls: 0, sideEffects: 0 });
    expect(same.report.steps.map((s) => s.result)).toEqual(['same', 'same', 'same', 'same']);
    expect(same.report.steps.every((s) => s.effectsReadBack === 1)).toBe(true);
    const changed = replay({ WF_CHANGE: 'b' });
    expect(changed.status).toBe(1);
    expect(changed.report.divergences).toBe(1);
    expect(changed.report.steps.find((s) => s.step === 'b')!.result).toBe('diverged');
    // replay read effects back from the log: the external API saw nothing new
    expect(w.provider.calls()).toBe(callsBefore);
  });

  it('a step that fails for good runs the compensations of the completed steps in reverse order', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const w = await world();
    await startAll(w);
    const { runId } = await w.engine.start('diamond', { n: 0, fail: 'd' });
    await finished(w, runId, 'failed');
    const run = (await w.engine.get(runId))!;
    expect(run.state.error).toMatch(/step 'd' failed/);
    const order = run.state.completedOrder; // a, then b and c in whichever order they finished
    expect(order[0]).toBe('a');
    expect(run.state.compensations.map((c) => c.step)).toEqual([...order].reverse());
    expect(run.state.compensations.every((c) => c.status === 'completed')).toBe(true);
    expect(w.provider.undos(runId)).toEqual([...order].reverse());
  });

  it('an approval not answered before its deadline escalates as the definition says', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const w = await world();
    await startAll(w);
    const { runId } = await w.engine.start('gated', { n: 0 });
    await waitFor(async () => !!(await w.store.getApproval(`${runId}_ok`)), { what: 'the approval' });
    await waitFor(() => w.provider.escalations(runId).length === 1, { timeoutMs: 15_000, what: 'the escalation' });
    const run = (await w.engine.get(runId))!;
    expect(run.state.steps.ok!.status).toBe('escalated');
    expect(w.provider.escalations(runId)[0]).toMatchObject({ input: { why: 'deadline passed', run: runId } });
    // a late answer still counts
    await w.engine.decideApproval(`${runId}_ok`, 'approved', { kind: 'human', id: 'tester' });
    await finished(w, runId);
    expect(w.provider.byStep(runId)).toEqual({ a: 1, d: 1 });
  });

  for (const [layout, processes] of Object.entries(LAYOUTS))
  it(`SIGKILL of any agent process at random points during 200 runs (${layout}): every run completes, no side effect twice, nothing lost`, async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const w = await world();
    await startAll(w, processes);
    const N = 200;
    const ids: string[] = [];
    let kills = 0;
    const killed: Array<{ pid: number; at: number }> = [];
    let chaos = true;
    const killer = (async () => {
      while (chaos) {
        await new Promise((r) => setTimeout(r, 300 + Math.random() * 700));
        if (!chaos) break;
        const which = processes[Math.floor(Math.random() * processes.length)]!;
        const victim = w.agents[which]!;
        killed.push({ pid: victim.pid!, at: performance.now() });
        victim.kill('SIGKILL');
        await new Promise((r) => victim.once('exit', r));
        kills++;
        const next = w.spawnAgent(which);
        // the next kill comes at a random point of the new process's work, not during its start-up
        // (a process killed before it ever took a task tests nothing, and would starve the runs)
        await waitFor(async () => (await listAgents(w.bus.nc, w.bus.subjects.registryBucket)).some((a) => String(a.instanceId).startsWith(`${next.pid}-`)), { timeoutMs: 30_000, intervalMs: 50, what: `agent process ${next.pid} announced` }).catch(() => undefined);
      }
    })();
    for (let i = 0; i < N; i++) ids.push((await w.engine.start('diamond', { n: i, sleepMs: Math.floor(Math.random() * 20) })).runId);
    // chaos lasts until most runs are done and enough processes died (runs finish faster than kills come)
    await waitFor(async () => kills > 5 && (await w.store.query<RunState>('workflow_run', { filter: { status: 'completed' }, limit: 1 })).total >= N * 0.6, { timeoutMs: 120_000, what: 'most runs under chaos' });
    chaos = false;
    await killer;
    await waitFor(async () => (await w.store.query<RunState>('workflow_run', { filter: { status: 'completed' }, limit: 1 })).total === N, { timeoutMs: 120_000, intervalMs: 500, what: `all ${N} runs completed` });
    expect(kills).toBeGreaterThan(5);
    for (const id of ids) expect(w.provider.byStep(id)).toEqual({ a: 1, b: 1, c: 1, d: 1 });
    // calls, not keys: the API received each effect's key, and a key received a second call only
    // when the process that made the call before it was killed before it (it died before recording
    // the call); every other key received exactly one call. By the caller's pid, not by time: a call
    // sent just before its process was killed can arrive here after the kill was recorded.
    const expected = ids.flatMap((id) => ['a', 'b', 'c', 'd'].map((step) => `${id} ${step}`));
    const perStep = new Map<string, Array<{ at: number; pid: number | undefined }>>();
    for (const r of w.provider.received().filter((x) => x.path === '/effect')) {
      const k = `${r.run} ${r.step}`;
      perStep.set(k, [...(perStep.get(k) ?? []), ...r.times.map((at, i) => ({ at, pid: r.pids[i] }))].sort((x, y) => x.at - y.at));
    }
    expect([...perStep.keys()].sort()).toEqual(expected.sort());
    let repeated = 0;
    for (const [k, calls] of perStep) {
      for (let i = 1; i < calls.length; i++) {
        repeated++;
        const prev = calls[i - 1]!;
        expect(prev.pid, `${k}: call ${i} carries no pid`).toBeTypeOf('number');
        expect(killed.some((x) => x.pid === prev.pid && x.at < calls[i]!.at), `${k}: call ${i + 1} at ${calls[i]!.at.toFixed(0)} ms, but process ${prev.pid} that made call ${i} at ${prev.at.toFixed(0)} ms was not killed before it`).toBe(true);
      }
    }
    expect(w.provider.calls()).toBe(expected.length + repeated);
    console.log(`[chaos] ${layout}: ${N} runs, ${kills} SIGKILLs, ${w.provider.calls()} effect calls for ${N * 4} effects (${repeated} repeated after a kill, each checked)`);
  }, 300_000);
});
