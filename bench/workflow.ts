/**
 * `npm run bench -- workflow`: a 3-step workflow of no-op capabilities, each in its own agent
 * process, on SQLite and on MongoDB (FerretDB here), beside a raw nats.js chain of three hops
 * through three processes in the same run.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { jetstreamManager, jetstream, AckPolicy } from '@nats-io/jetstream';
import { REPO_ROOT } from '../config/index.ts';
import { connectBus, createBus, listAgents, type Bus } from '../bus/index.ts';
import { openStore } from '../shared-state/index.ts';
import { WorkflowEngine } from '../workflows/index.ts';
import { defineWorkflow } from '../workflows/index.ts';
import { startMongo, tempDir, uniqueName, waitFor } from '../testkit/index.ts';
import { benchNats, compare, figures, type Bench, type Figures } from './lib.ts';
import { BenchError } from './errors.ts';
import { BUILTIN_FEATURES, entityTypesOf } from '../agents/index.ts';

const ALL_ENTITY_TYPES = entityTypesOf(BUILTIN_FEATURES);

const CHAIN = defineWorkflow({
  name: 'bench-chain',
  version: 1,
  steps: {
    a: { capability: 'bench.a', input: '$.input' },
    b: { capability: 'bench.b', after: ['a'], input: '$.steps.a.output' },
    c: { capability: 'bench.c', after: ['b'], input: '$.steps.b.output' },
  },
});

const WINDOW = 64;
/** one run at a time: pure end-to-end latency */
const SERIAL = 1;

function spawnProc(args: string[], env: Record<string, string>): ChildProcess {
  return spawn(process.execPath, args, { env: { ...process.env, KEEL_LOG_LEVEL: 'error', ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
}

async function stopAll(ps: ChildProcess[]): Promise<void> {
  await Promise.all(
    ps.map(async (p) => {
      if (p.exitCode !== null || p.signalCode !== null) return;
      const done = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      const t = setTimeout(() => p.kill('SIGKILL'), 5_000);
      await done;
      clearTimeout(t);
    }),
  );
}

/** Starts `n` runs with at most WINDOW in flight; latency = start → run finished notice. */
async function driveRuns(engine: WorkflowEngine, bus: Bus, n: number, window = WINDOW): Promise<Figures> {
  const started = new Map<string, number>();
  const lat: number[] = [];
  let failed = 0;
  let release: (() => void) | undefined;
  let allDone!: () => void;
  const done = new Promise<void>((r) => (allDone = r));
  const sub = bus.nc.subscribe(bus.subjects.runFinishedAll, {
    callback: (_e, m) => {
      const { runId, status } = m.json<{ runId: string; status: string }>();
      const t = started.get(runId);
      if (t === undefined) return;
      started.delete(runId);
      if (status !== 'completed') failed++;
      lat.push(performance.now() - t);
      release?.();
      if (lat.length === n) allDone();
    },
  });
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    while (started.size >= window) await new Promise<void>((r) => (release = r));
    const runId = `b-${i}-${uniqueName('r')}`;
    started.set(runId, performance.now());
    await engine.start(CHAIN, { i }, { runId });
  }
  await done;
  const elapsed = performance.now() - t0;
  sub.unsubscribe();
  if (failed) throw new BenchError('BENCH_INCOMPLETE', `${failed} runs did not complete`);
  return figures(n, elapsed, lat);
}

async function workflowScenario(natsUrl: string, state: string, n: number, progress: (m: string) => void, window = WINDOW): Promise<{ throughput: Figures; latency: Figures }> {
  const prefix = uniqueName('wb');
  const nc = await connectBus({ servers: natsUrl });
  const bus = createBus(nc, { prefix });
  await bus.provision();
  const store = await openStore(state, { types: ALL_ENTITY_TYPES });
  const engine = new WorkflowEngine({ store, bus, actor: { kind: 'system', id: 'bench' } });
  const env = { KEEL_NATS_URL: natsUrl, KEEL_SUBJECT_PREFIX: prefix, KEEL_STATE: state, KEEL_WORKFLOW_SWEEP_MS: '2000' };
  const procs = ['bench.a', 'bench.b', 'bench.c'].map((cap) => spawnProc([join(REPO_ROOT, 'cli', 'keel.ts'), 'agent', 'start', join(REPO_ROOT, 'bench', 'fixtures', 'noop-agents.ts')], { ...env, NOOP_CAP: cap }));
  try {
    await waitFor(async () => (await listAgents(nc, bus.subjects.registryBucket)).length === 3, { timeoutMs: 60_000, what: 'three agent processes' });
    progress(`  warm-up`);
    await driveRuns(engine, bus, Math.min(100, n), window);
    progress(`  ${n} runs, ${window} in flight`);
    const f = await driveRuns(engine, bus, n, window);
    const m = Math.max(10, Math.floor(n / 10));
    progress(`  ${m} runs, one at a time`);
    const l = await driveRuns(engine, bus, m, SERIAL);
    return {
      throughput: { ...f, notes: { runs: n, in_flight: window, durability: store.info.durability } },
      latency: { ...l, notes: { runs: m, in_flight: SERIAL, durability: store.info.durability } },
    };
  } finally {
    await stopAll(procs);
    await store.close();
    const jsm = await jetstreamManager(nc);
    for (const s of Object.values(bus.subjects.streams)) await jsm.streams.delete(s).catch(() => undefined);
    await nc.close();
  }
}

async function rawChain(natsUrl: string, n: number): Promise<{ throughput: Figures; latency: Figures }> {
  const nc = await connectBus({ servers: natsUrl });
  const jsm = await jetstreamManager(nc);
  const stream = uniqueName('RAWCHAIN');
  await jsm.streams.add({ name: stream, subjects: [`${stream}.>`] });
  const hops = ['h1', 'h2', 'h3'];
  for (const h of hops) await jsm.consumers.add(stream, { durable_name: h, filter_subject: `${stream}.${h}`, ack_policy: AckPolicy.Explicit, max_ack_pending: 10_000 });
  const doneSubject = `done.${stream}`;
  const procs = hops.map((h, i) => spawnProc([join(REPO_ROOT, 'bench', 'fixtures', 'raw-hop.ts')], { NATS_URL: natsUrl, STREAM: stream, DURABLE: h, HOP_OUT: i < 2 ? `${stream}.${hops[i + 1]}` : doneSubject }));
  await Promise.all(procs.map((p) => new Promise<void>((r) => p.stdout!.once('data', () => r()))));
  const js = jetstream(nc);
  const drive = async (count: number, window = WINDOW): Promise<Figures> => {
    const started = new Map<number, number>();
    const lat: number[] = [];
    let release: (() => void) | undefined;
    let allDone!: () => void;
    const done = new Promise<void>((r) => (allDone = r));
    const sub = nc.subscribe(doneSubject, {
      callback: (_e, m) => {
        const { i } = m.json<{ i: number }>();
        lat.push(performance.now() - started.get(i)!);
        started.delete(i);
        release?.();
        if (lat.length === count) allDone();
      },
    });
    const t0 = performance.now();
    for (let i = 0; i < count; i++) {
      while (started.size >= window) await new Promise<void>((r) => (release = r));
      started.set(i, performance.now());
      await js.publish(`${stream}.h1`, JSON.stringify({ i }));
    }
    await done;
    const elapsed = performance.now() - t0;
    sub.unsubscribe();
    return figures(count, elapsed, lat);
  };
  try {
    await drive(Math.min(500, n));
    const throughput = await drive(n);
    const latency = await drive(Math.max(50, Math.floor(n / 20)), SERIAL);
    return { throughput, latency };
  } finally {
    await stopAll(procs);
    await jsm.streams.delete(stream).catch(() => undefined);
    await nc.close();
  }
}

export const workflowBench: Bench = {
  name: 'workflow',
  description: '3-step workflow of no-op capabilities in 3 agent processes (SQLite, MongoDB) vs a raw nats.js 3-hop chain',
  async run(ctx) {
    const n = ctx.quick ? 200 : 2_000;
    const nats = await benchNats();
    const url = nats.url;
    const dir = tempDir('keel-bench-wf-');
    try {
      ctx.progress('raw nats.js 3-hop chain (3 processes)');
      const raw = await rawChain(url, n * 2);
      ctx.progress('workflow on SQLite');
      const sqlite = await workflowScenario(url, `sqlite:${join(dir.path, 'bench.db')}`, n, ctx.progress);
      const rawT = { scenario: `raw nats.js 3-hop chain, 3 processes, ${WINDOW} in flight`, ...raw.throughput };
      const rawL = { scenario: 'raw nats.js 3-hop chain, 3 processes, one at a time', ...raw.latency };
      const results = [
        compare(`workflow a→b→c, 3 agent processes, SQLite, ${WINDOW} runs in flight`, sqlite.throughput, rawT),
        compare('workflow a→b→c, 3 agent processes, SQLite, one run at a time', sqlite.latency, rawL),
      ];
      const mongo = process.env.KEEL_BENCH_SKIP_MONGO === '1' ? undefined : await startMongo();
      if (mongo?.ok) {
        try {
          // FerretDB serializes appends on its global cursor: a small window, few runs
          const m = ctx.quick ? 10 : 40;
          const mw = 4;
          ctx.progress(`workflow on MongoDB (${mongo.server.flavor}), ${m} runs`);
          const mf = await workflowScenario(url, `${mongo.server.url.replace(/\/?$/, '/')}${uniqueName('wb')}`, m, ctx.progress, mw);
          results.push(compare(`workflow a→b→c, 3 agent processes, MongoDB (${mongo.server.flavor}), ${mw} runs in flight`, mf.throughput, rawT));
          results.push(compare(`workflow a→b→c, 3 agent processes, MongoDB (${mongo.server.flavor}), one run at a time`, mf.latency, rawL));
        } finally {
          await mongo.server.stop();
        }
      }
      return { results };
    } finally {
      dir.remove();
      await nats.stop();
    }
  },
};
