/**
 * The MongoDB adapter's change log (shared-state/mongo-store.ts, docs/shared-state.md "MongoDB
 * adapter design"): several store objects (each its own client, as separate processes would be)
 * append at once while a reader follows the log by cursor; the reader sees every event exactly
 * once and in cursor order, no version is taken twice, and compaction does not free a cursor.
 * Also: an append whose completion landed before it lost a version race can be retried with the
 * same claim (the workflow engine does that).
 */
import { describe, expect, it } from 'vitest';
import { isStateError, openStore, type CommittedEvent, type EventMeta, type StateStore } from '../../shared-state/index.ts';
import { mongoSuite, uniqueName } from '../helpers/index.ts';
import { ALL_ENTITY_TYPES } from '../helpers/types.ts';

const meta: EventMeta = { actor: { kind: 'system', id: 'test' } };

const mongo = mongoSuite();

const open = (database: string) => openStore(mongo.server!.url, { types: ALL_ENTITY_TYPES, mongodb: { database } });

describe('MongoDB adapter: the change log under concurrent writers', () => {
  it('a reader following the cursor gets every event once, in order; each version has one winner', { timeout: 240_000 }, async (ctx) => {
    if (!mongo.server) return ctx.skip(mongo.skip);
    const database = uniqueName('log');
    const writers: StateStore[] = await Promise.all([open(database), open(database), open(database)]);
    const reader = await open(database);
    try {
      await writers[0]!.append('task', 'shared', 0, [{ type: 'created', data: { title: 'shared' } }], meta);
      const seen: CommittedEvent[] = [];
      let cursor = 0;
      let writing = true;
      const follow = (async () => {
        for (;;) {
          const page = await reader.changes({ since: cursor, limit: 7 });
          seen.push(...page.events);
          cursor = page.cursor;
          if (!page.hasMore && !writing) {
            const last = await reader.changes({ since: cursor, limit: 1000 });
            seen.push(...last.events);
            return;
          }
          if (!page.hasMore) await new Promise((r) => setTimeout(r, 5));
        }
      })();
      const sharedVersions: number[] = [];
      let conflicts = 0;
      const PER = 12;
      await Promise.all(
        writers.map(async (w, wi) => {
          for (let i = 0; i < PER; i++) {
            // an entity of its own (two events in one append: a multi-cursor document)
            await w.append('task', `own-${wi}-${i}`, 0, [{ type: 'created', data: { title: `w${wi}` } }, { type: 'updated', data: { status: 'done' } }], meta);
            // the shared entity: read, then append at the version read; a conflict re-reads
            for (;;) {
              const cur = (await w.get('task', 'shared'))!;
              try {
                const r = await w.append('task', 'shared', cur.version, [{ type: 'updated', data: { title: `w${wi}-${i}` } }], meta);
                sharedVersions.push(r.entity.version);
                break;
              } catch (err) {
                if (!isStateError(err, 'STATE_VERSION_CONFLICT')) throw err;
                conflicts++;
              }
            }
          }
        }),
      );
      writing = false;
      await follow;

      // no lost update: every successful append took its own version, 2..N+1
      expect([...sharedVersions].sort((a, b) => a - b)).toEqual(Array.from({ length: writers.length * PER }, (_, i) => i + 2));
      const history = await reader.history('task', 'shared');
      expect(history.map((e) => e.version)).toEqual(Array.from({ length: writers.length * PER + 1 }, (_, i) => i + 1));
      expect((await reader.get('task', 'shared'))!.version).toBe(writers.length * PER + 1);

      // the follower saw exactly the log: every event once, in strictly increasing cursor order
      const all = (await reader.changes({ since: 0, limit: 10_000 })).events;
      expect(all).toHaveLength(1 + writers.length * PER * 3);
      expect(seen.map((e) => e.eventId)).toEqual(all.map((e) => e.eventId));
      const cursors = seen.map((e) => e.cursor);
      for (let i = 1; i < cursors.length; i++) expect(cursors[i]).toBeGreaterThan(cursors[i - 1]!);
      expect(await reader.headCursor()).toBe(cursors.at(-1));
      // per entity, cursor order is version order
      const byEntity = new Map<string, number[]>();
      for (const e of all) byEntity.set(e.entityId, [...(byEntity.get(e.entityId) ?? []), e.version]);
      for (const versions of byEntity.values()) expect(versions).toEqual(versions.map((_, i) => i + 1));
      ctx.annotate(`conflicts retried: ${conflicts}`);
    } finally {
      await Promise.all([...writers, reader].map((s) => s.close()));
    }
  });

  it('compaction keeps its cursors taken: later appends and readers stay in order', async (ctx) => {
    if (!mongo.server) return ctx.skip(mongo.skip);
    const s = await open(uniqueName('stubs'));
    try {
      let v = (await s.append('task', 'c1', 0, [{ type: 'created', data: { title: 'c' } }], meta)).entity.version;
      for (let i = 0; i < 3; i++) v = (await s.append('task', 'c1', v, [{ type: 'updated', data: { title: `c${i}` } }], meta)).entity.version;
      await s.append('task', 'c2', 0, [{ type: 'created', data: { title: 'other' } }], meta);
      for (let p = await s.pendingEvents(); p.length; p = await s.pendingEvents()) await s.markPublished(p.map((e) => e.eventId));
      const head = await s.headCursor();
      const r = await s.compactHistory('task', 'c1', { reason: 'test', actor: { kind: 'system', id: 'retention' } });
      expect(r).toMatchObject({ events: 4, version: 5 });
      const after = await s.append('task', 'c3', 0, [{ type: 'created', data: { title: 'new' } }], meta);
      expect(after.events[0]!.cursor).toBeGreaterThan(head + 1);
      // a fresh store object (another process) finds the same head and the same order
      const other = await open((s.info.location.match(/db=(\S+)/) ?? [])[1]!);
      try {
        expect(await other.headCursor()).toBe(after.events[0]!.cursor);
        const log = (await other.changes({ since: 0 })).events;
        expect(log.map((e) => `${e.entityId}@${e.version}`)).toEqual(['c2@1', 'c1@5', 'c3@1']);
        expect(log.map((e) => e.cursor)).toEqual([...log.map((e) => e.cursor)].sort((a, b) => a - b));
        const next = await other.append('task', 'c1', 5, [{ type: 'updated', data: { title: 'again' } }], meta);
        expect(next.events[0]!.cursor).toBe(after.events[0]!.cursor + 1);
      } finally {
        await other.close();
      }
    } finally {
      await s.close();
    }
  });

  it('an append with a completion, retried after a version conflict, completes once with the same claim', async (ctx) => {
    if (!mongo.server) return ctx.skip(mongo.skip);
    const s = await open(uniqueName('complete'));
    try {
      await s.append('task', 'run-1', 0, [{ type: 'created', data: { title: 'run' } }], meta);
      await s.append('task', 'run-1', 1, [{ type: 'updated', data: { title: 'moved on' } }], meta);
      const c = await s.claim('task:step-a:1');
      if (c.status !== 'claimed') throw new Error(`expected a claim, got ${c.status}`);
      const complete = { key: 'task:step-a:1', token: c.token, result: { ok: 1 }, cost: { agent: 'a', capability: 'step', runId: 'run-1', costUsd: 0.5 } };
      // the engine appends at the version it read; another writer moved the run on
      const err = await s.append('task', 'run-1', 1, [{ type: 'updated', data: { status: 'done' } }], meta, { complete }).catch((e: unknown) => e);
      expect(isStateError(err, 'STATE_VERSION_CONFLICT')).toBe(true);
      // it re-reads and retries with the same claim: accepted (before: "already completed by another claim")
      const r = await s.append('task', 'run-1', 2, [{ type: 'updated', data: { status: 'done' } }], meta, { complete });
      expect(r.entity.version).toBe(3);
      expect(await s.getIdempotency('task:step-a:1')).toMatchObject({ status: 'completed', attempt: 1, result: { ok: 1 } });
      expect((await s.costs({ runId: 'run-1', records: 10 })).records).toHaveLength(1);
      // a plain second completion is still refused, and another claim's token always is
      expect(await s.complete('task:step-a:1', c.token, {}).catch((e: { code?: string }) => e.code)).toBe('STATE_IDEMPOTENCY_LEASE_LOST');
      const e2 = await s.append('task', 'run-1', 3, [{ type: 'updated', data: { status: 'done' } }], meta, { complete: { ...complete, token: 'someone-else' } }).catch((e: { code?: string }) => e.code);
      expect(e2).toBe('STATE_IDEMPOTENCY_LEASE_LOST');
      expect((await s.get('task', 'run-1'))!.version).toBe(3);
    } finally {
      await s.close();
    }
  });

  it('reports how it arbitrates: no transactions on FerretDB', async (ctx) => {
    if (!mongo.server) return ctx.skip(mongo.skip);
    const s = await open(uniqueName('info'));
    try {
      const d = s.info.durability as { transactions: string; server: string; atomicConditionalUpdates: boolean };
      if (mongo.server.flavor === 'ferretdb') expect(d).toMatchObject({ transactions: 'none (one document per append)', atomicConditionalUpdates: false });
      else expect(d.server).toMatch(/^mongodb /);
    } finally {
      await s.close();
    }
  });
});
