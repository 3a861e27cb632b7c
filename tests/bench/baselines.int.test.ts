/**
 * The workflow bench's baselines do the work they claim: the durable hop chain commits one row
 * per hop per run (three hop processes, real nats-server, real SQLite in WAL), the MongoDB hop
 * chain inserts one document per hop per run, and the LangGraph chain checkpoints every run on
 * its own thread with Keel's SQLite checkpointer. Counts are asserted, not timings.
 */
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { MongoClient } from 'mongodb';
import { describe, expect, it } from 'vitest';
import { HOP_TABLE, startHopChain, startLangGraphChain } from '../../bench/baselines.ts';
import { natsSuite, startMongo, uniqueName } from '../helpers/index.ts';

const suite = natsSuite('bench-baselines');

describe('workflow bench baselines', () => {
  it('the raw chain forwards every run through three hop processes', { timeout: 60_000 }, async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const chain = await startHopChain(suite.nats.url, { store: 'none' }, uniqueName('RAW'));
    suite.defer(() => chain.stop());
    const f = await chain.drive(30, 8);
    expect(f.throughput_per_s).toBeGreaterThan(0);
    await chain.stop();
  });

  for (const sync of ['FULL', 'NORMAL'] as const) {
    it(`the durable chain commits one SQLite row per hop per run (${sync}, WAL)`, { timeout: 60_000 }, async (ctx) => {
      if (!suite.nats) return ctx.skip(suite.skip);
      const path = join(suite.dir, `hops-${sync}.db`);
      const chain = await startHopChain(suite.nats.url, { store: 'sqlite', path, sync }, uniqueName('DUR'));
      suite.defer(() => chain.stop());
      await chain.drive(20, 4);
      await chain.drive(5, 1);
      await chain.stop();
      const db = new DatabaseSync(path);
      const perHop = db.prepare(`SELECT hop, COUNT(*) AS n, COUNT(DISTINCT payload) AS runs FROM ${HOP_TABLE} GROUP BY hop ORDER BY hop`).all();
      expect(perHop).toEqual([
        { hop: 'h1', n: 25, runs: 25 },
        { hop: 'h2', n: 25, runs: 25 },
        { hop: 'h3', n: 25, runs: 25 },
      ]);
      expect(db.prepare('PRAGMA journal_mode').get()).toEqual({ journal_mode: 'wal' });
      db.close();
    });
  }

  it('the MongoDB hop chain inserts one document per hop per run', { timeout: 120_000 }, async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const mongo = await startMongo();
    if (!mongo.ok) return ctx.skip(mongo.reason);
    suite.defer(() => mongo.server.stop());
    const database = uniqueName('hops');
    const chain = await startHopChain(suite.nats.url, { store: 'mongodb', url: mongo.server.url, database }, uniqueName('MDUR'));
    suite.defer(() => chain.stop());
    await chain.drive(8, 2);
    await chain.stop();
    const client = await MongoClient.connect(mongo.server.url);
    try {
      const col = client.db(database).collection(HOP_TABLE);
      for (const hop of ['h1', 'h2', 'h3']) expect(await col.countDocuments({ hop })).toBe(8);
    } finally {
      await client.close();
    }
  });

  it('the LangGraph chain checkpoints every run on its own thread (a → b → c)', { timeout: 60_000 }, async () => {
    const path = join(suite.dir, 'lg.db');
    const chain = await startLangGraphChain(path, 'FULL', 'lgtest');
    await chain.drive(12, 4);
    await chain.drive(3, 1);
    await chain.close();
    const db = new DatabaseSync(path);
    const threads = db.prepare('SELECT thread_id, COUNT(*) AS n FROM lg_checkpoints GROUP BY thread_id').all() as Array<{ thread_id: string; n: number }>;
    expect(threads.map((t) => t.thread_id).sort()).toEqual(Array.from({ length: 15 }, (_, i) => `lgtest-${i}`).sort());
    // LangGraph checkpoints the input (step -1) and START (step 0), then one step per node a, b, c
    for (const t of threads) expect(t.n).toBe(5);
    db.close();
  });
});
