/**
 * `npm run bench -- state [--json] [--quick]`: appends per second and read latency of each state
 * adapter, beside the raw driver doing the same single-document write (and primary-key read) in
 * the same run with the same durability settings.
 *
 * MongoDB: `MONGODB_URL` when set, else the test helper's MongoDB-protocol server (FerretDB).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { MongoClient } from 'mongodb';
import { openSqlite, openStore, type StateStore } from '../shared-state/index.ts';
import { startMongo } from '../testkit/index.ts';
import { compare, figures, type Bench, type BenchContext, type Figures, type ScenarioResult } from './lib.ts';
import { BUILTIN_FEATURES, entityTypesOf } from '../agents/index.ts';

const ALL_ENTITY_TYPES = entityTypesOf(BUILTIN_FEATURES);

const meta = { actor: { kind: 'system', id: 'bench' } } as const;
const payload = (i: number) => ({ title: `benchmark task ${i}`, description: 'x'.repeat(200), tags: ['bench', `n${i % 10}`] });

async function timed(n: number, op: (i: number) => Promise<unknown> | unknown): Promise<{ elapsed: number; lat: number[] }> {
  const lat: number[] = [];
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const s = performance.now();
    await op(i);
    lat.push(performance.now() - s);
  }
  return { elapsed: performance.now() - t0, lat };
}

function fig(r: { elapsed: number; lat: number[] }, n: number, notes?: Record<string, unknown>): Figures {
  return figures(n, r.elapsed, r.lat, notes);
}

/** Appends of one `created` event to new entities, then reads of random ones. */
async function adapterRun(store: StateStore, n: number, reads: number, tag: string): Promise<{ append: Figures; read: Figures }> {
  await store.append('task', `${tag}-warm`, 0, [{ type: 'created', data: payload(0) }], meta);
  const a = await timed(n, (i) => store.append('task', `${tag}-${i}`, 0, [{ type: 'created', data: payload(i) }], meta));
  const r = await timed(reads, () => store.get('task', `${tag}-${Math.floor(Math.random() * n)}`));
  return { append: fig(a, n), read: fig(r, reads) };
}

async function sqliteScenarios(ctx: BenchContext, n: number, reads: number): Promise<ScenarioResult[]> {
  const dir = mkdtempSync(join(tmpdir(), 'keel-bench-state-'));
  try {
    ctx.progress(`sqlite: ${n} appends, ${reads} reads`);
    const store = await openStore(`sqlite:${join(dir, 'keel.db')}`, { types: ALL_ENTITY_TYPES });
    const durability = store.info.durability;
    const mine = await adapterRun(store, n, reads, 'b');
    await store.close();

    ctx.progress('sqlite raw: INSERT / SELECT with the same pragmas');
    const db = openSqlite(join(dir, 'raw.db'));
    db.exec(`PRAGMA synchronous = ${String(durability.synchronous)}; CREATE TABLE docs (id TEXT PRIMARY KEY, data TEXT NOT NULL)`);
    const ins = db.prepare('INSERT INTO docs (id, data) VALUES (?, ?)');
    const sel = db.prepare('SELECT data FROM docs WHERE id = ?');
    const ra = await timed(n, (i) => ins.run(`r-${i}`, JSON.stringify(payload(i))));
    const rr = await timed(reads, () => JSON.parse((sel.get(`r-${Math.floor(Math.random() * n)}`) as { data: string }).data));
    db.close();
    const notes = { durability, appends: n, reads, event: 'one created event per append (events row + projection row, one BEGIN IMMEDIATE transaction)' };
    return [
      compare('sqlite adapter: append (1 event, new entity)', { ...mine.append, notes }, { scenario: 'node:sqlite INSERT one row (autocommit, same pragmas)', ...fig(ra, n) }),
      compare('sqlite adapter: get (current state)', { ...mine.read, notes: { reads } }, { scenario: 'node:sqlite SELECT by primary key', ...fig(rr, reads) }),
    ];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function mongoScenarios(ctx: BenchContext, n: number, reads: number): Promise<ScenarioResult[]> {
  const m = await startMongo();
  if (!m.ok) {
    ctx.progress(`mongodb skipped: ${m.reason}`);
    return [];
  }
  const database = `keel_bench_${Date.now().toString(36)}`;
  const client = new MongoClient(m.server.url, { writeConcern: { w: 'majority', journal: true } });
  try {
    ctx.progress(`mongodb (${m.server.flavor}): ${n} appends, ${reads} reads`);
    const store = await openStore(m.server.url, { types: ALL_ENTITY_TYPES, mongodb: { database } });
    const durability = store.info.durability;
    const mine = await adapterRun(store, n, reads, 'b');
    await store.close();

    ctx.progress('mongodb raw: insertOne / findOne with the same write concern');
    await client.connect();
    const col = client.db(database).collection<{ _id: string; data: unknown }>('raw');
    await col.insertOne({ _id: 'warm', data: payload(0) });
    const ra = await timed(n, (i) => col.insertOne({ _id: `r-${i}`, data: payload(i) }));
    const rr = await timed(reads, () => col.findOne({ _id: `r-${Math.floor(Math.random() * n)}` }));
    await client.db(database).dropDatabase();
    const notes = { durability, server: m.server.flavor, source: m.server.source, appends: n, reads, round_trips: 'new entity: insert log document, then insert marker and projection together (docs/shared-state.md, MongoDB adapter design)' };
    return [
      compare(`mongodb adapter (${m.server.flavor}): append (1 event, new entity)`, { ...mine.append, notes }, { scenario: 'driver insertOne (w: majority, j: true)', ...fig(ra, n) }),
      compare(`mongodb adapter (${m.server.flavor}): get (current state)`, { ...mine.read, notes: { reads } }, { scenario: 'driver findOne by _id', ...fig(rr, reads) }),
    ];
  } finally {
    await client.close().catch(() => undefined);
    await m.server.stop();
  }
}

export const stateBench: Bench = {
  name: 'state',
  description: 'shared-state: appends/s and read p50/p99 per adapter (SQLite, MongoDB) vs the raw driver',
  async run(ctx) {
    const n = ctx.quick ? 200 : 2_000;
    const reads = ctx.quick ? 200 : 2_000;
    const results = [...(await sqliteScenarios(ctx, n, reads)), ...(await mongoScenarios(ctx, ctx.quick ? 100 : 500, ctx.quick ? 100 : 1_000))];
    return { results, machine: { run_id: randomUUID().slice(0, 8) } };
  },
};
