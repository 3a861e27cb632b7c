/**
 * Retention on every adapter (retention.test.ts: SQLite, retention.int.test.ts: FerretDB):
 * `compactHistory`, `pruneIdempotency` and a `runRetention` pass, and what must keep working
 * after them (reads, appends, rebuilds, erasure, the audit chain).
 */
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { COMPACTED_EVENT, ERASED_EVENT, defineEntityType, isStateError, runRetention, type EventMeta, type StateStore, type OpenStoreOptions } from '../../shared-state/index.ts';
import { ALL_ENTITY_TYPES } from '../helpers/types.ts';

/** A run-like type: `status` says whether it is finished. */
export const jobType = defineEntityType({
  name: 'retention_job',
  schemaVersion: 1,
  schema: z.object({ status: z.enum(['running', 'done']), step: z.number(), owner: z.string().optional() }).loose(),
  searchFields: ['status', 'owner'],
  events: { stepped: z.object({ n: z.number() }) },
  reduce: (s, e) => (e.type === 'stepped' ? { ...s, step: (e.data as { n: number }).n } : s),
});
export const RETENTION_TYPES = [...ALL_ENTITY_TYPES, jobType];

export interface RetentionTarget {
  name: string;
  open(opts?: OpenStoreOptions): Promise<StateStore | { skip: string }>;
}

const meta: EventMeta = { actor: { kind: 'agent', id: 'tester' }, correlationId: 'run-1' };
const retention = { kind: 'system', id: 'retention-test' } as const;

async function publishAll(s: StateStore): Promise<number> {
  let n = 0;
  for (let p = await s.pendingEvents(1000); p.length; p = await s.pendingEvents(1000)) {
    await s.markPublished(p.map((e) => e.eventId));
    n += p.length;
  }
  return n;
}

/** A job with `steps` stepped events, finished or not; its events published. */
async function job(s: StateStore, id: string, steps: number, status: 'running' | 'done', owner?: string): Promise<number> {
  let v = (await s.append('retention_job', id, 0, [{ type: 'created', data: { status: 'running', step: 0, ...(owner ? { owner } : {}) } }], meta)).entity.version;
  for (let i = 1; i <= steps; i++) v = (await s.append('retention_job', id, v, [{ type: 'stepped', data: { n: i } }], meta)).entity.version;
  if (status === 'done') v = (await s.append('retention_job', id, v, [{ type: 'updated', data: { status: 'done' } }], meta)).entity.version;
  return v;
}

export function retentionContract(t: RetentionTarget): void {
  describe(`retention: ${t.name}`, () => {
    const withStore = (name: string, fn: (s: StateStore) => Promise<void>) =>
      it(name, async (ctx) => {
        const s = await t.open({ types: RETENTION_TYPES });
        if ('skip' in s) return ctx.skip(s.skip);
        try {
          await fn(s);
        } finally {
          await s.close();
        }
      });

    withStore('compactHistory replaces the events by one `compacted` event; state, times, reads, appends and rebuilds stay right', async (s) => {
      const v = await job(s, 'j1', 5, 'done');
      await publishAll(s);
      const before = (await s.get('retention_job', 'j1'))!;
      const head = await s.headCursor();
      const r = await s.compactHistory('retention_job', 'j1', { expectedVersion: v, reason: 'test', actor: retention });
      expect(r).toEqual({ entityType: 'retention_job', entityId: 'j1', events: v, version: v + 1 });
      const h = await s.history('retention_job', 'j1');
      expect(h.map((e) => [e.version, e.type])).toEqual([[v + 1, COMPACTED_EVENT]]);
      expect(h[0]!.data).toMatchObject({ through: v, events: v, reason: 'test', state: before.state });
      expect(h[0]!.cursor).toBeGreaterThan(head);
      expect(h[0]!.meta.actor).toEqual(retention);
      const after = (await s.get('retention_job', 'j1'))!;
      expect(after).toEqual({ ...before, version: v + 1 });
      // nothing to announce: the outbox does not see it
      expect((await s.pendingEvents(100)).map((e) => e.entityId)).not.toContain('j1');
      expect(await s.getAt('retention_job', 'j1', v)).toBeNull();
      expect((await s.getAt('retention_job', 'j1', v + 1))?.state).toEqual(before.state);
      // the change log after the old head holds the compacted event
      expect((await s.changes({ since: head, types: ['retention_job'] })).events.map((e) => e.type)).toEqual([COMPACTED_EVENT]);
      // appends go on from it; the state folds from the compacted one
      await expect(s.append('retention_job', 'j1', v, [{ type: 'stepped', data: { n: 9 } }], meta)).rejects.toMatchObject({ code: 'STATE_VERSION_CONFLICT' });
      const next = await s.append('retention_job', 'j1', v + 1, [{ type: 'stepped', data: { n: 9 } }], meta);
      expect(next.entity).toMatchObject({ version: v + 2, state: { status: 'done', step: 9 }, createdAt: before.createdAt });
      // rebuilt from the log: the same state and creation time
      await s.rebuildProjections();
      expect(await s.get('retention_job', 'j1')).toMatchObject({ version: v + 2, state: { status: 'done', step: 9 }, createdAt: before.createdAt });
      expect((await s.query('retention_job', { filter: { status: 'done' } })).items.map((e) => e.entityId)).toEqual(['j1']);
    });

    withStore('compactHistory skips what the outbox has not published, what is compacted already, and a moved entity', async (s) => {
      const v = await job(s, 'j2', 2, 'done');
      expect(await s.compactHistory('retention_job', 'j2', { reason: 'test', actor: retention })).toMatchObject({ events: 0, version: v, skipped: 'unpublished' });
      expect((await s.history('retention_job', 'j2')).length).toBe(v);
      await publishAll(s);
      const err = await s.compactHistory('retention_job', 'j2', { expectedVersion: v - 1, reason: 'test', actor: retention }).catch((e: unknown) => e);
      expect(isStateError(err) && err.code).toBe('STATE_VERSION_CONFLICT');
      expect((await s.compactHistory('retention_job', 'j2', { expectedVersion: v, reason: 'test', actor: retention })).events).toBe(v);
      expect(await s.compactHistory('retention_job', 'j2', { reason: 'again', actor: retention })).toMatchObject({ events: 0, version: v + 1, skipped: 'compacted' });
      expect(await s.compactHistory('retention_job', 'nope', { reason: 'test', actor: retention })).toMatchObject({ events: 0, version: 0, skipped: 'missing' });
    });

    withStore('erasure reaches a compacted history (fields and values), and the audit chain still verifies', async (s) => {
      await s.append('customer', 'c9', 0, [{ type: 'created', data: { name: 'Grace Hopper', email: 'grace@example.com' } }], meta);
      const v = await job(s, 'j3', 1, 'done', 'grace@example.com');
      await s.appendAudit({ actor: meta.actor, action: 'job.done', subject: 'retention_job/j3', details: { owner: 'grace@example.com' } });
      await publishAll(s);
      await s.compactHistory('retention_job', 'j3', { expectedVersion: v, reason: 'test', actor: retention });
      await s.compactHistory('customer', 'c9', { reason: 'test', actor: retention });
      const counts = await s.redactRecords({ values: ['grace@example.com'], reason: 'erasure test', actor: retention });
      expect(counts.entities).toBe(2);
      expect(counts.audit).toBe(1);
      const red = await s.redactEntity('customer', 'c9', { fields: ['name', 'email'], reason: 'erasure test', actor: retention });
      expect(red.version).toBe(3);
      for (const [type, id] of [['retention_job', 'j3'], ['customer', 'c9']] as const) {
        const text = JSON.stringify([await s.get(type, id), await s.history(type, id)]);
        expect(text).not.toContain('grace@example.com');
      }
      expect(JSON.stringify(await s.history('customer', 'c9'))).not.toContain('Grace Hopper');
      expect((await s.history('customer', 'c9')).map((e) => e.type)).toEqual([COMPACTED_EVENT, ERASED_EVENT]);
      // an erasure is closed by its own audit record (counts only)
      await s.appendAudit({ actor: retention, action: 'customer.erased', subject: 'customer/c9', details: { counts } });
      expect(await s.verifyAudit()).toMatchObject({ ok: true, records: 2, erased: 1 });
    });

    withStore('pruneIdempotency deletes completed records and abandoned claims older than the cut-off, nothing newer', async (s) => {
      for (const k of ['task:a:1', 'task:a:2', 'effect:a:1:send']) {
        const c = await s.claim(k);
        if (c.status !== 'claimed') throw new Error('expected a claim');
        await s.complete(k, c.token, { ok: k });
      }
      const abandoned = await s.claim('task:b:1', { leaseMs: 1 });
      const live = await s.claim('task:c:1', { leaseMs: 600_000 });
      expect([abandoned.status, live.status]).toEqual(['claimed', 'claimed']);
      await new Promise((r) => setTimeout(r, 20));
      expect(await s.pruneIdempotency(new Date(Date.now() - 3_600_000))).toEqual({ completed: 0, abandoned: 0 });
      expect(await s.pruneIdempotency(new Date(Date.now() + 1_000), { limit: 2 })).toEqual({ completed: 2, abandoned: 0 });
      expect(await s.pruneIdempotency(new Date(Date.now() + 1_000))).toEqual({ completed: 1, abandoned: 1 });
      for (const k of ['task:a:1', 'task:a:2', 'effect:a:1:send', 'task:b:1']) expect(await s.getIdempotency(k)).toBeNull();
      expect((await s.getIdempotency('task:c:1'))?.status).toBe('running');
      // a pruned key can be claimed afresh
      expect((await s.claim('task:a:1')).status).toBe('claimed');
    });

    withStore('a runRetention pass compacts only the finished, old enough, published entities and moves its watermark', async (s) => {
      const done = await job(s, 'old-done', 3, 'done');
      await job(s, 'old-running', 3, 'running');
      await publishAll(s);
      await job(s, 'old-unpublished', 2, 'done');
      const c = await s.claim('task:x:1');
      if (c.status === 'claimed') await s.complete('task:x:1', c.token, null);
      const policy = { histories: [{ entityType: 'retention_job', filter: { status: 'done' }, olderThanMs: 60_000 }], idempotencyOlderThanMs: 60_000 };
      // nothing is a minute old yet
      const none = await runRetention(s, policy);
      expect(none.histories[0]).toMatchObject({ candidates: 0, compacted: 0 });
      expect(none.idempotency).toEqual({ completed: 0, abandoned: 0 });
      // two minutes later
      const later = new Date(Date.now() + 120_000);
      const r = await runRetention(s, policy, { now: later, actor: retention });
      expect(r.histories[0]).toMatchObject({ entityType: 'retention_job', candidates: 2, compacted: 1, events: done, skipped: { unpublished: 1, conflict: 0, compacted: 0 } });
      expect(r.idempotency).toEqual({ completed: 1, abandoned: 0 });
      expect((await s.history('retention_job', 'old-done')).map((e) => e.type)).toEqual([COMPACTED_EVENT]);
      expect((await s.history('retention_job', 'old-running')).length).toBe(4);
      expect((await s.history('retention_job', 'old-unpublished')).length).toBe(4);
      // the watermark stays at the unpublished one: the next pass looks at it (and the compacted one, skipped) again
      const unpublishedAt = (await s.get('retention_job', 'old-unpublished'))!.updatedAt;
      expect(r.watermarks.retention_job! <= unpublishedAt).toBe(true);
      await publishAll(s);
      const r2 = await runRetention(s, policy, { now: later, actor: retention, watermarks: r.watermarks });
      expect(r2.histories[0]).toMatchObject({ compacted: 1, skipped: { unpublished: 0 } });
      expect((await s.history('retention_job', 'old-unpublished')).map((e) => e.type)).toEqual([COMPACTED_EVENT]);
      // and from the new watermark on, nothing is looked at again
      const r3 = await runRetention(s, policy, { now: later, actor: retention, watermarks: r2.watermarks });
      expect(r3.histories[0]).toMatchObject({ candidates: 0, compacted: 0 });
      expect(r2.watermarks.retention_job).toBe(new Date(later.getTime() - 60_000).toISOString());
    });
  });
}
