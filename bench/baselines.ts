/**
 * Baselines for `npm run bench -- workflow`, each doing the same a → b → c chain of no-ops:
 *
 * - a **hop chain**: three hop processes on one JetStream stream, each consuming its hop's
 *   subject, doing its step's work, publishing the next hop and acking (plain nats.js). The work
 *   is nothing (`none`: the raw chain, the ceiling), one SQLite row committed with the pragmas of
 *   Keel's store (`sqlite`: WAL, `synchronous` FULL or NORMAL, `BEGIN IMMEDIATE`, lock waits in
 *   fine steps up to a 10 s busy timeout: the least durable work a step can do), or one
 *   `insertOne` with Keel's default write concern (`mongodb`).
 * - **LangGraph.js in one process**: a `StateGraph` a → b → c compiled with Keel's SQLite
 *   checkpointer, one thread per run, `durability: 'sync'` (each step's checkpoint committed
 *   before the next step starts).
 *
 * Run as a script (`node bench/baselines.ts`), this file is one hop process (env HOP_*).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { DatabaseSync } from 'node:sqlite';
import { fileURLToPath } from 'node:url';
import { connect } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, AckPolicy } from '@nats-io/jetstream';
import type { WriteConcernSettings } from 'mongodb';
import { figures, type Figures } from './lib.ts';

export type Sync = 'FULL' | 'NORMAL';

/** What each hop does besides forwarding the message. */
export type HopWork = { store: 'none' } | { store: 'sqlite'; path: string; sync: Sync } | { store: 'mongodb'; url: string; database: string; writeConcern?: WriteConcernSettings };

/** Keel's default MongoDB write concern (shared-state/open.ts), used by the `mongodb` hop. */
export const DEFAULT_WRITE_CONCERN: WriteConcernSettings = { w: 'majority', journal: true };

/** `{ w: 'majority', journal: true }` → `w:majority,j:true` (the `sync` field of a MongoDB result). */
export function writeConcernLabel(wc: WriteConcernSettings | undefined): string {
  if (!wc) return 'default';
  const parts = [`w:${String(wc.w ?? 1)}`];
  if (wc.journal !== undefined) parts.push(`j:${String(wc.journal)}`);
  if (wc.wtimeoutMS !== undefined) parts.push(`wtimeout:${wc.wtimeoutMS}`);
  return parts.join(',');
}

/** The table a `sqlite` hop commits to; one row per hop per run. */
export const HOP_TABLE = 'hop_commits';

/** Runs `count` operations with exactly `window` in flight; `one(i)` resolves when operation i is done. */
export async function windowed(count: number, window: number, one: (i: number) => Promise<void>): Promise<Figures> {
  const lat: number[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: Math.min(window, count) }, async () => {
      while (next < count) {
        const i = next++;
        const s = performance.now();
        await one(i);
        lat.push(performance.now() - s);
      }
    }),
  );
  return figures(count, performance.now() - t0, lat);
}

export interface HopChain {
  /** `count` runs through the three hops, `window` in flight; latency = publish → last hop's notice */
  drive(count: number, window: number): Promise<Figures>;
  stop(): Promise<void>;
}

function stopProcs(ps: ChildProcess[]): Promise<void> {
  return Promise.all(
    ps.map(async (p) => {
      if (p.exitCode !== null || p.signalCode !== null) return;
      const done = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      const t = setTimeout(() => p.kill('SIGKILL'), 5_000);
      await done;
      clearTimeout(t);
    }),
  ).then(() => undefined);
}

/** Opens an SQLite file as Keel's store does: WAL, the given `synchronous`, foreign keys, lock waits done by the caller. */
export function openHopDb(path: string, sync: Sync): DatabaseSync {
  const db = new DatabaseSync(path, { timeout: 5_000 });
  db.exec(`PRAGMA journal_mode = WAL; PRAGMA synchronous = ${sync}; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 0;`);
  return db;
}

/**
 * Starts a hop chain on its own stream: three hop processes (this file as a script), each with
 * its own durable consumer. Resolves when all three are consuming.
 */
export async function startHopChain(natsUrl: string, work: HopWork, name: string): Promise<HopChain> {
  if (work.store === 'sqlite') {
    const db = openHopDb(work.path, work.sync);
    db.exec(`CREATE TABLE IF NOT EXISTS ${HOP_TABLE} (id INTEGER PRIMARY KEY, hop TEXT NOT NULL, payload TEXT NOT NULL, at INTEGER NOT NULL)`);
    db.close();
  }
  const nc = await connect({ servers: natsUrl, noAsyncTraces: true });
  const jsm = await jetstreamManager(nc);
  const stream = name;
  await jsm.streams.add({ name: stream, subjects: [`${stream}.>`] });
  const hops = ['h1', 'h2', 'h3'];
  for (const h of hops) await jsm.consumers.add(stream, { durable_name: h, filter_subject: `${stream}.${h}`, ack_policy: AckPolicy.Explicit, max_ack_pending: 10_000 });
  const doneSubject = `done.${stream}`;
  const workEnv: Record<string, string> =
    work.store === 'sqlite'
      ? { HOP_STORE: 'sqlite', HOP_SQLITE_PATH: work.path, HOP_SQLITE_SYNC: work.sync }
      : work.store === 'mongodb'
        ? { HOP_STORE: 'mongodb', HOP_MONGO_URL: work.url, HOP_MONGO_DB: work.database, HOP_MONGO_WC: JSON.stringify(work.writeConcern ?? DEFAULT_WRITE_CONCERN) }
        : { HOP_STORE: 'none' };
  const procs = hops.map((h, i) =>
    spawn(process.execPath, [fileURLToPath(import.meta.url)], {
      env: { ...process.env, ...workEnv, NATS_URL: natsUrl, STREAM: stream, DURABLE: h, HOP_OUT: i < 2 ? `${stream}.${hops[i + 1]}` : doneSubject },
      stdio: ['ignore', 'pipe', 'inherit'],
    }),
  );
  try {
    await Promise.all(
      procs.map(
        (p) =>
          new Promise<void>((resolve, reject) => {
            p.stdout!.once('data', () => resolve());
            p.once('exit', (code) => reject(new Error(`hop process exited with ${String(code)} before it was ready`)));
          }),
      ),
    );
  } catch (err) {
    await stopProcs(procs);
    await nc.close();
    throw err;
  }
  const js = jetstream(nc);
  const waiting = new Map<number, () => void>();
  const sub = nc.subscribe(doneSubject, {
    callback: (_e, m) => {
      const { i } = m.json<{ i: number }>();
      waiting.get(i)?.();
      waiting.delete(i);
    },
  });
  let seq = 0;
  return {
    async drive(count, window) {
      const base = seq;
      seq += count;
      return windowed(count, window, async (k) => {
        const i = base + k;
        const done = new Promise<void>((r) => waiting.set(i, r));
        await js.publish(`${stream}.h1`, JSON.stringify({ i }));
        await done;
      });
    },
    async stop() {
      sub.unsubscribe();
      await stopProcs(procs);
      await jsm.streams.delete(stream).catch(() => undefined);
      await nc.close();
    },
  };
}

export interface LangGraphChain {
  /** `count` runs (one new thread each), `window` in flight */
  drive(count: number, window: number): Promise<Figures>;
  close(): Promise<void>;
}

/** A → b → c no-op `StateGraph` in this process, checkpointed by Keel's SQLite checkpointer at `path`. */
export async function startLangGraphChain(path: string, sync: Sync, name: string): Promise<LangGraphChain> {
  const { Annotation, END, START, StateGraph } = await import('@langchain/langgraph');
  const { createCheckpointer } = await import('../runtime/langgraph/index.ts');
  const checkpointer = await createCheckpointer(`sqlite:${path}`, { sqlite: { synchronous: sync } });
  const State = Annotation.Root({ i: Annotation<number>() });
  const graph = new StateGraph(State)
    .addNode('a', (s) => ({ i: s.i }))
    .addNode('b', (s) => ({ i: s.i }))
    .addNode('c', (s) => ({ i: s.i }))
    .addEdge(START, 'a')
    .addEdge('a', 'b')
    .addEdge('b', 'c')
    .addEdge('c', END)
    .compile({ checkpointer });
  let seq = 0;
  return {
    async drive(count, window) {
      const base = seq;
      seq += count;
      return windowed(count, window, async (k) => {
        const i = base + k;
        await graph.invoke({ i }, { configurable: { thread_id: `${name}-${i}` }, durability: 'sync' });
      });
    },
    close: () => checkpointer.close(),
  };
}

// ---- one hop process --------------------------------------------------------------------------

const SLEEPER = new Int32Array(new SharedArrayBuffer(4));
const BUSY_TIMEOUT_MS = 10_000;

/** Keel's store waits for another process's write lock the same way: 50 µs growing to 2 ms, up to the busy timeout. */
function busyRetry<T>(fn: () => T): T {
  let deadline = 0;
  let pause = 0.05;
  for (;;) {
    try {
      return fn();
    } catch (err) {
      const e = err as { errcode?: number; message?: string };
      const busy = e?.errcode === 5 || e?.errcode === 6 || /database is locked|SQLITE_BUSY/i.test(e?.message ?? '');
      if (!busy) throw err;
      const now = Date.now();
      if (deadline === 0) deadline = now + BUSY_TIMEOUT_MS;
      else if (now > deadline) throw err;
      Atomics.wait(SLEEPER, 0, 0, pause);
      pause = Math.min(pause * 1.5, 2);
    }
  }
}

async function hopWork(): Promise<(payload: string) => Promise<void> | void> {
  const hop = process.env.DURABLE!;
  const store = process.env.HOP_STORE ?? 'none';
  if (store === 'sqlite') {
    const db = openHopDb(process.env.HOP_SQLITE_PATH!, process.env.HOP_SQLITE_SYNC === 'NORMAL' ? 'NORMAL' : 'FULL');
    const insert = db.prepare(`INSERT INTO ${HOP_TABLE} (hop, payload, at) VALUES (?, ?, ?)`);
    return (payload) => {
      busyRetry(() => db.exec('BEGIN IMMEDIATE'));
      try {
        insert.run(hop, payload, Date.now());
        db.exec('COMMIT');
      } catch (err) {
        db.exec('ROLLBACK');
        throw err;
      }
    };
  }
  if (store === 'mongodb') {
    const { MongoClient } = await import('mongodb');
    const wc = JSON.parse(process.env.HOP_MONGO_WC!) as WriteConcernSettings;
    const client = new MongoClient(process.env.HOP_MONGO_URL!, { writeConcern: wc });
    await client.connect();
    const col = client.db(process.env.HOP_MONGO_DB!).collection(HOP_TABLE);
    return async (payload) => {
      await col.insertOne({ hop, payload, at: new Date() });
    };
  }
  return () => undefined;
}

async function runHop(): Promise<void> {
  const work = await hopWork();
  // as Keel's connections (bus/connection.ts): no Error made per publish for async traces
  const nc = await connect({ servers: process.env.NATS_URL!, noAsyncTraces: true });
  const js = jetstream(nc);
  const c = await js.consumers.get(process.env.STREAM!, process.env.DURABLE!);
  const out = process.env.HOP_OUT!;
  const msgs = await c.consume({ max_messages: 1_000 });
  process.stdout.write('ready\n');
  for await (const m of msgs) {
    await work(m.string());
    if (out.startsWith('done.')) nc.publish(out, m.data);
    else await js.publish(out, m.data);
    m.ack();
  }
}

if (import.meta.main) await runHop();
