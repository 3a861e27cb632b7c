/**
 * `npm run bench -- workflow`: a 3-step workflow of no-op capabilities, each in its own agent
 * process, on SQLite (synchronous FULL and NORMAL) and on MongoDB (FerretDB here), beside
 * baselines in the same run (bench/baselines.ts):
 *
 * - the raw nats.js chain of three hops through three processes (persists nothing: the ceiling);
 * - the durable chain: the same three hop processes, each committing one SQLite row with the
 *   pragmas of Keel's store before forwarding (the least durable work a step can do), at FULL
 *   and NORMAL; on MongoDB one `insertOne` per hop with Keel's write concern;
 * - LangGraph.js in one process: a → b → c with Keel's SQLite checkpointer, at FULL and NORMAL.
 *
 * Every result carries `system`, `store`, `sync`, `mode` (`throughput` | `serial`) and
 * `in_flight`; `baseline`/`ratio` are the raw chain with the same mode and in-flight count,
 * `durable_baseline`/`ratio_to_durable` and `langgraph_baseline`/`ratio_to_langgraph` the
 * baselines with the same store, sync, mode and in-flight count.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { REPO_ROOT } from '../config/index.ts';
import { connectBus, createBus, listAgents, type Bus } from '../bus/index.ts';
import { openStore } from '../shared-state/index.ts';
import { WorkflowEngine } from '../workflows/index.ts';
import { defineWorkflow } from '../workflows/index.ts';
import { startMongo, tempDir, uniqueName, waitFor } from '../testkit/index.ts';
import { benchNats, compare, figures, type Bench, type Figures, type ScenarioResult } from './lib.ts';
import { BenchError } from './errors.ts';
import { BUILTIN_FEATURES, entityTypesOf } from '../agents/index.ts';
import { DEFAULT_WRITE_CONCERN, startHopChain, startLangGraphChain, writeConcernLabel, type HopChain, type HopWork, type Sync } from './baselines.ts';

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

export const WINDOW = 64;
/** one run at a time: pure end-to-end latency */
export const SERIAL = 1;
/** MongoDB (FerretDB here): a small window and few runs, unchanged so figures compare across versions */
export const MONGO_WINDOW = 4;

export type System = 'keel' | 'raw-nats' | 'durable-nats' | 'langgraph';
export type StoreKind = 'sqlite' | 'mongodb' | 'none';
export type Mode = 'throughput' | 'serial';

/** One measured scenario before it is compared with the others. */
export interface Measured {
  system: System;
  store: StoreKind;
  /** `FULL` | `NORMAL` for SQLite, the write concern for MongoDB (`w:majority,j:true`), `none` */
  sync: string;
  mode: Mode;
  in_flight: number;
  scenario: string;
  figures: Figures;
}

type Reference = Figures & { scenario: string };

export interface WorkflowResult extends ScenarioResult {
  system: System;
  store: StoreKind;
  sync: string;
  mode: Mode;
  in_flight: number;
  /** the durable hop chain with the same store, sync, mode and in-flight count (Keel results only) */
  durable_baseline: Reference | null;
  ratio_to_durable: number | null;
  /** in-process LangGraph with the same store, sync, mode and in-flight count (Keel results only) */
  langgraph_baseline: Reference | null;
  ratio_to_langgraph: number | null;
}

const modeOf = (inFlight: number): Mode => (inFlight === SERIAL ? 'serial' : 'throughput');

/**
 * Compares every measured scenario with its references: the raw chain of the same mode and
 * in-flight count (`baseline`, `ratio`, via {@link compare}); for Keel also the durable chain and
 * LangGraph of the same store, sync, mode and in-flight count.
 */
export function assembleResults(measured: readonly Measured[]): WorkflowResult[] {
  const ref = (m: Measured | undefined): Reference | null => (m ? { scenario: m.scenario, ...m.figures } : null);
  const find = (system: System, like: Measured, sameStore: boolean) =>
    measured.find((o) => o.system === system && o.mode === like.mode && o.in_flight === like.in_flight && (!sameStore || (o.store === like.store && o.sync === like.sync)));
  return measured.map((m) => {
    const raw = m.system === 'raw-nats' ? null : ref(find('raw-nats', m, false));
    const durable = m.system === 'keel' ? ref(find('durable-nats', m, true)) : null;
    const lg = m.system === 'keel' ? ref(find('langgraph', m, true)) : null;
    return {
      ...compare(m.scenario, m.figures, raw),
      system: m.system,
      store: m.store,
      sync: m.sync,
      mode: m.mode,
      in_flight: m.in_flight,
      durable_baseline: durable,
      ratio_to_durable: compare(m.scenario, m.figures, durable).ratio,
      langgraph_baseline: lg,
      ratio_to_langgraph: compare(m.scenario, m.figures, lg).ratio,
    };
  });
}

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

/**
 * Starts `n` runs with at most `window` in flight; latency = start → run finished notice.
 * Runs that finish other than `completed` are counted in `notes.failed_runs` (with their first
 * errors) and left out of the throughput, so one failing scenario does not hide the others.
 */
async function driveRuns(engine: WorkflowEngine, bus: Bus, n: number, window: number, progress?: (m: string) => void): Promise<Figures> {
  const started = new Map<string, number>();
  const lat: number[] = [];
  const failures: string[] = [];
  let finished = 0;
  let release: (() => void) | undefined;
  let allDone!: () => void;
  const done = new Promise<void>((r) => (allDone = r));
  const sub = bus.nc.subscribe(bus.subjects.runFinishedAll, {
    callback: (_e, m) => {
      const { runId, status, error } = m.json<{ runId: string; status: string; error?: unknown }>();
      const t = started.get(runId);
      if (t === undefined) return;
      started.delete(runId);
      finished++;
      if (status === 'completed') lat.push(performance.now() - t);
      else failures.push(`${status}: ${typeof error === 'string' ? error : JSON.stringify(error)}`);
      release?.();
      if (finished === n) allDone();
    },
  });
  // one random tag per call (random bytes per run id were 1.5 % of the starter's CPU)
  const tag = uniqueName('r');
  const t0 = performance.now();
  // the window counts runs from their start: up to `window` are being started or running at once
  // (a start is a durable write of the run, so starting one at a time would cap the rate at the
  // starter's commit latency, not the engine's)
  for (let i = 0; i < n; i++) {
    while (started.size >= window) await new Promise<void>((r) => (release = r));
    const runId = `b-${i}-${tag}`;
    started.set(runId, performance.now());
    engine.start(CHAIN, { i }, { runId }).catch((err: unknown) => {
      if (!started.delete(runId)) return;
      finished++;
      failures.push(`start failed: ${(err as Error).message}`);
      release?.();
      if (finished === n) allDone();
    });
    if (window > 1) await new Promise<void>((r) => setImmediate(r));
  }
  await done;
  const elapsed = performance.now() - t0;
  sub.unsubscribe();
  if (lat.length === 0) throw new BenchError('BENCH_INCOMPLETE', `none of ${n} runs completed; first: ${failures[0] ?? '?'}`);
  if (failures.length) progress?.(`  WARNING: ${failures.length} of ${n} runs did not complete; first: ${failures[0]}`);
  return figures(lat.length, elapsed, lat, failures.length ? { failed_runs: failures.length, first_failures: failures.slice(0, 3) } : undefined);
}

/** Sizes of one bench run: throughput runs, serial runs, warm-up runs. */
interface Sizes {
  n: number;
  serial: number;
  warmup: number;
}

const sizesFor = (n: number): Sizes => ({ n, serial: Math.max(10, Math.floor(n / 10)), warmup: Math.min(100, n) });

/** Keel: three agent processes on `state`, runs started from this process. */
async function keelScenario(natsUrl: string, state: string, s: Sizes, window: number, sync: Sync | undefined, progress: (m: string) => void): Promise<Measured[]> {
  const prefix = uniqueName('wb');
  const nc = await connectBus({ servers: natsUrl });
  const bus = createBus(nc, { prefix });
  await bus.provision();
  const store = await openStore(state, { types: ALL_ENTITY_TYPES, ...(sync ? { sqlite: { synchronous: sync } } : {}) });
  const engine = new WorkflowEngine({ store, bus, actor: { kind: 'system', id: 'bench' } });
  const env: Record<string, string> = { KEEL_NATS_URL: natsUrl, KEEL_SUBJECT_PREFIX: prefix, KEEL_STATE: state, KEEL_WORKFLOW_SWEEP_MS: '2000', ...(sync ? { KEEL_SQLITE_SYNC: sync } : {}) };
  const procs = ['bench.a', 'bench.b', 'bench.c'].map((cap) => spawnProc([join(REPO_ROOT, 'cli', 'keel.ts'), 'agent', 'start', join(REPO_ROOT, 'bench', 'fixtures', 'noop-agents.ts')], { ...env, NOOP_CAP: cap }));
  try {
    await waitFor(async () => (await listAgents(nc, bus.subjects.registryBucket)).length === 3, { timeoutMs: 60_000, what: 'three agent processes' });
    progress(`  warm-up`);
    await driveRuns(engine, bus, s.warmup, window, progress);
    progress(`  ${s.n} runs, ${window} in flight`);
    const f = await driveRuns(engine, bus, s.n, window, progress);
    progress(`  ${s.serial} runs, one at a time`);
    const l = await driveRuns(engine, bus, s.serial, SERIAL, progress);
    const d = store.info.durability as { synchronous?: string; writeConcern?: Parameters<typeof writeConcernLabel>[0] };
    const kind: StoreKind = store.info.kind === 'sqlite' ? 'sqlite' : 'mongodb';
    const syncLabel = kind === 'sqlite' ? String(d.synchronous) : writeConcernLabel(d.writeConcern);
    const flavor = kind === 'sqlite' ? `SQLite ${syncLabel}` : `MongoDB (${syncLabel})`;
    const notes = (runs: number, inFlight: number, fig: Figures) => ({ runs, in_flight: inFlight, durability: store.info.durability, ...fig.notes });
    return [
      { system: 'keel', store: kind, sync: syncLabel, mode: 'throughput', in_flight: window, scenario: `Keel workflow a→b→c, 3 agent processes, ${flavor}, ${window} runs in flight`, figures: { ...f, notes: notes(s.n, window, f) } },
      { system: 'keel', store: kind, sync: syncLabel, mode: 'serial', in_flight: SERIAL, scenario: `Keel workflow a→b→c, 3 agent processes, ${flavor}, one run at a time`, figures: { ...l, notes: notes(s.serial, SERIAL, l) } },
    ];
  } finally {
    await stopAll(procs);
    await store.close();
    const jsm = await jetstreamManager(nc);
    for (const st of Object.values(bus.subjects.streams)) await jsm.streams.delete(st).catch(() => undefined);
    await nc.close();
  }
}

const describeWork = (w: HopWork): { system: System; store: StoreKind; sync: string; label: string } =>
  w.store === 'none'
    ? { system: 'raw-nats', store: 'none', sync: 'none', label: 'raw nats.js 3-hop chain, 3 processes' }
    : w.store === 'sqlite'
      ? { system: 'durable-nats', store: 'sqlite', sync: w.sync, label: `nats.js 3-hop chain + 1 SQLite commit per hop (${w.sync}), 3 processes` }
      : { system: 'durable-nats', store: 'mongodb', sync: writeConcernLabel(w.writeConcern ?? DEFAULT_WRITE_CONCERN), label: `nats.js 3-hop chain + 1 insertOne per hop (${writeConcernLabel(w.writeConcern ?? DEFAULT_WRITE_CONCERN)}), 3 processes` };

/** A hop chain: warm-up, then each `[count, inFlight]` in turn. */
async function hopScenario(natsUrl: string, work: HopWork, plan: Array<[number, number]>, progress: (m: string) => void): Promise<Measured[]> {
  const d = describeWork(work);
  const chain: HopChain = await startHopChain(natsUrl, work, uniqueName(d.system === 'raw-nats' ? 'RAWCHAIN' : 'DURCHAIN'));
  try {
    progress('  warm-up');
    await chain.drive(Math.min(200, plan[0]![0]), plan[0]![1]);
    const out: Measured[] = [];
    for (const [count, inFlight] of plan) {
      progress(`  ${count} runs, ${inFlight === SERIAL ? 'one at a time' : `${inFlight} in flight`}`);
      const f = await chain.drive(count, inFlight);
      out.push({ ...d, mode: modeOf(inFlight), in_flight: inFlight, scenario: `${d.label}, ${inFlight === SERIAL ? 'one at a time' : `${inFlight} in flight`}`, figures: { ...f, notes: { runs: count, in_flight: inFlight } } });
    }
    return out;
  } finally {
    await chain.stop();
  }
}

/** In-process LangGraph a → b → c on Keel's SQLite checkpointer. */
async function langGraphScenario(path: string, sync: Sync, s: Sizes, progress: (m: string) => void): Promise<Measured[]> {
  const chain = await startLangGraphChain(path, sync, uniqueName('lg'));
  try {
    progress('  warm-up');
    await chain.drive(s.warmup, WINDOW);
    progress(`  ${s.n} runs, ${WINDOW} in flight`);
    const f = await chain.drive(s.n, WINDOW);
    progress(`  ${s.serial} runs, one at a time`);
    const l = await chain.drive(s.serial, SERIAL);
    const label = `LangGraph.js StateGraph a→b→c in 1 process, Keel SQLite checkpointer (${sync}), durability sync`;
    const base = { system: 'langgraph', store: 'sqlite', sync } as const;
    return [
      { ...base, mode: 'throughput', in_flight: WINDOW, scenario: `${label}, ${WINDOW} runs in flight`, figures: { ...f, notes: { runs: s.n, in_flight: WINDOW } } },
      { ...base, mode: 'serial', in_flight: SERIAL, scenario: `${label}, one run at a time`, figures: { ...l, notes: { runs: s.serial, in_flight: SERIAL } } },
    ];
  } finally {
    await chain.close();
  }
}

/**
 * What to measure, for working on one part (figures to quote come from a full run):
 * `KEEL_BENCH_SYSTEMS` (comma list of keel, raw-nats, durable-nats, langgraph; default all) and
 * `KEEL_BENCH_SYNCS` (FULL, NORMAL: the SQLite scenarios; default both), `KEEL_BENCH_STORES`
 * (sqlite, mongodb; default both; `KEEL_BENCH_SKIP_MONGO=1` is the same as `sqlite`).
 */
export function benchSelection(env: NodeJS.ProcessEnv = process.env): { systems: Set<System>; syncs: Sync[]; stores: Set<'sqlite' | 'mongodb'> } {
  const all: System[] = ['keel', 'raw-nats', 'durable-nats', 'langgraph'];
  const list = (v: string | undefined) => (v ?? '').split(',').map((x) => x.trim()).filter(Boolean);
  const systems = list(env.KEEL_BENCH_SYSTEMS);
  for (const x of systems) if (!all.includes(x as System)) throw new BenchError('BENCH_BAD_FLAG', `KEEL_BENCH_SYSTEMS: unknown system '${x}' (known: ${all.join(', ')})`);
  const syncs = list(env.KEEL_BENCH_SYNCS).map((x) => x.toUpperCase());
  for (const x of syncs) if (x !== 'FULL' && x !== 'NORMAL') throw new BenchError('BENCH_BAD_FLAG', `KEEL_BENCH_SYNCS: unknown sync '${x}' (known: FULL, NORMAL)`);
  const stores = list(env.KEEL_BENCH_STORES);
  for (const x of stores) if (x !== 'sqlite' && x !== 'mongodb') throw new BenchError('BENCH_BAD_FLAG', `KEEL_BENCH_STORES: unknown store '${x}' (known: sqlite, mongodb)`);
  const storeSet = new Set<'sqlite' | 'mongodb'>(stores.length ? (stores as Array<'sqlite' | 'mongodb'>) : ['sqlite', 'mongodb']);
  if (env.KEEL_BENCH_SKIP_MONGO === '1') storeSet.delete('mongodb');
  const sqliteSyncs: Sync[] = syncs.length ? (syncs as Sync[]) : ['FULL', 'NORMAL'];
  return { systems: new Set(systems.length ? (systems as System[]) : all), syncs: storeSet.has('sqlite') ? sqliteSyncs : [], stores: storeSet };
}

export const workflowBench: Bench = {
  name: 'workflow',
  description: '3-step workflow of no-op capabilities in 3 agent processes (SQLite FULL/NORMAL, MongoDB) vs raw and durable nats.js 3-hop chains and in-process LangGraph',
  async run(ctx) {
    const s = sizesFor(ctx.quick ? 200 : 2_000);
    const nats = await benchNats();
    const url = nats.url;
    const dir = tempDir('keel-bench-wf-');
    const measured: Measured[] = [];
    const { systems, syncs, stores } = benchSelection();
    try {
      if (systems.has('raw-nats') && stores.has('sqlite')) {
        ctx.progress('raw nats.js 3-hop chain (3 processes)');
        measured.push(...(await hopScenario(url, { store: 'none' }, [[s.n * 2, WINDOW], [s.serial, SERIAL]], ctx.progress)));
      }
      for (const sync of systems.has('durable-nats') ? syncs : []) {
        ctx.progress(`durable nats.js 3-hop chain, 1 SQLite commit per hop, ${sync}`);
        measured.push(...(await hopScenario(url, { store: 'sqlite', path: join(dir.path, `hops-${sync}.db`), sync }, [[s.n, WINDOW], [s.serial, SERIAL]], ctx.progress)));
      }
      for (const sync of systems.has('langgraph') ? syncs : []) {
        ctx.progress(`LangGraph.js in one process, SQLite checkpointer, ${sync}`);
        measured.push(...(await langGraphScenario(join(dir.path, `langgraph-${sync}.db`), sync, s, ctx.progress)));
      }
      for (const sync of systems.has('keel') ? syncs : []) {
        ctx.progress(`workflow on SQLite, ${sync}`);
        measured.push(...(await keelScenario(url, `sqlite:${join(dir.path, `keel-${sync}.db`)}`, s, WINDOW, sync, ctx.progress)));
      }
      const mongo = stores.has('mongodb') ? await startMongo() : undefined;
      if (mongo?.ok) {
        try {
          const flavor = mongo.server.flavor;
          const ms: Sizes = { n: ctx.quick ? 10 : 40, serial: 10, warmup: ctx.quick ? 4 : 8 };
          const base = mongo.server.url.replace(/\/?$/, '/');
          // baselines with the same number in flight as Keel's MongoDB scenario
          if (systems.has('raw-nats')) {
            ctx.progress(`raw nats.js 3-hop chain, ${MONGO_WINDOW} in flight (for the MongoDB comparison)`);
            measured.push(...(await hopScenario(url, { store: 'none' }, [[s.n, MONGO_WINDOW]], ctx.progress)));
          }
          const database = uniqueName('hops');
          if (systems.has('durable-nats')) {
            ctx.progress(`durable nats.js 3-hop chain, 1 insertOne per hop (${flavor})`);
            measured.push(...(await hopScenario(url, { store: 'mongodb', url: mongo.server.url, database }, [[ctx.quick ? 40 : 200, MONGO_WINDOW], [ctx.quick ? 10 : 50, SERIAL]], ctx.progress)));
          }
          if (systems.has('keel')) {
            ctx.progress(`workflow on MongoDB (${flavor}), ${ms.n} runs`);
            try {
              const keelMongo = await keelScenario(url, `${base}${uniqueName('wb')}`, ms, MONGO_WINDOW, undefined, ctx.progress);
              measured.push(...keelMongo.map((m) => ({ ...m, scenario: m.scenario.replace('MongoDB', `MongoDB (${flavor})`) })));
            } catch (err) {
              // the SQLite figures and the baselines above still stand; say why this one is missing
              ctx.progress(`  Keel on MongoDB (${flavor}) not measured: ${(err as Error).message}`);
            }
          }
        } finally {
          await mongo.server.stop();
        }
      } else if (mongo) ctx.progress(`MongoDB scenario skipped: ${mongo.reason}`);
      return { results: assembleResults(measured) };
    } finally {
      dir.remove();
      await nats.stop();
    }
  },
};
