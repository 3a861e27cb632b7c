/**
 * The state store's contract: one suite, run against every adapter (sqlite.test.ts,
 * mongo.int.test.ts). `open()` gives a fresh, empty store per test; `tamperAudit` alters one
 * audit record behind the store's back.
 */
import { ALL_ENTITY_TYPES } from '../helpers/types.ts';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineEntityType, isStateError, type StateStore, type EventMeta, type OpenStoreOptions } from '../../shared-state/index.ts';

export interface ContractTarget {
  name: string;
  /** a fresh store; the reason to skip when the server is unavailable */
  open(opts?: OpenStoreOptions): Promise<StateStore | { skip: string }>;
  /**
   * changes audit record `seq` directly in the database: its `action`, or (with `set`) its
   * details and its `erased` flag (null: removed; absent: left as it is)
   */
  tamperAudit(store: StateStore, seq: number, set?: { details: Record<string, unknown>; erased?: { time: string; reason: string } | null }): Promise<void>;
}

const actor = { kind: 'agent', id: 'tester' } as const;
const meta: EventMeta = { actor, causationId: 'msg-1', correlationId: 'run-1', traceId: '0af7651916cd43dd8448eb211c80319c' };

async function thrown(p: Promise<unknown>): Promise<Error & Record<string, unknown>> {
  try {
    await p;
  } catch (err) {
    return err as Error & Record<string, unknown>;
  }
  throw new Error('expected a rejection');
}

export function stateStoreContract(t: ContractTarget): void {
  describe(`state store contract: ${t.name}`, () => {
    const withStore = (name: string, fn: (s: StateStore) => Promise<void>, opts?: OpenStoreOptions) =>
      it(name, async (ctx) => {
        const s = await t.open(opts);
        if ('skip' in s) return ctx.skip(s.skip);
        try {
          await fn(s);
        } finally {
          await s.close();
        }
      });

    withStore('appends, reads current state, state at a past version and the full history with metadata', async (s) => {
      const r1 = await s.append('customer', 'c1', 0, [{ type: 'created', data: { name: 'Ada', email: 'ada@example.com' } }], meta);
      expect(r1.entity.version).toBe(1);
      expect(r1.entity.state).toEqual({ name: 'Ada', email: 'ada@example.com', status: 'lead', tags: [] });
      const r2 = await s.append('customer', 'c1', 1, [{ type: 'updated', data: { status: 'active', tags: ['vip'] } }, { type: 'updated', data: { email: null } }], { actor: { kind: 'human', id: 'op' } });
      expect(r2.events.map((e) => e.version)).toEqual([2, 3]);
      expect(r2.events[1]!.cursor).toBeGreaterThan(r2.events[0]!.cursor);
      const cur = await s.get('customer', 'c1');
      expect(cur).toMatchObject({ entityType: 'customer', entityId: 'c1', version: 3, deleted: false, schemaVersion: 1, state: { name: 'Ada', status: 'active', tags: ['vip'] } });
      expect(cur!.state).not.toHaveProperty('email');
      expect((await s.getAt('customer', 'c1', 1))!.state).toEqual(r1.entity.state);
      expect((await s.getAt('customer', 'c1', 2))!.state).toMatchObject({ email: 'ada@example.com', status: 'active' });
      expect(await s.getAt('customer', 'c1', 4)).toBeNull();
      expect(await s.get('customer', 'nobody')).toBeNull();
      const h = await s.history('customer', 'c1');
      expect(h.map((e) => [e.version, e.type])).toEqual([
        [1, 'created'],
        [2, 'updated'],
        [3, 'updated'],
      ]);
      expect(h[0]!.meta).toEqual(meta);
      expect(h[2]!.meta).toEqual({ actor: { kind: 'human', id: 'op' } });
      expect(new Date(h[0]!.time).getTime()).toBeGreaterThan(Date.now() - 60_000);
      expect(new Set(h.map((e) => e.eventId)).size).toBe(3);
      expect(await s.typesOf('c1')).toEqual(['customer']);
    });

    withStore('a wrong expected version is a typed conflict naming both versions, and writes nothing', async (s) => {
      await s.append('task', 't1', 0, [{ type: 'created', data: { title: 'write post' } }], meta);
      const err = await thrown(s.append('task', 't1', 0, [{ type: 'updated', data: { status: 'done' } }], meta));
      expect(isStateError(err, 'STATE_VERSION_CONFLICT')).toBe(true);
      expect(err).toMatchObject({ name: 'VersionConflictError', entityType: 'task', entityId: 't1', expectedVersion: 0, actualVersion: 1, retryable: true });
      expect(err.message).toMatch(/expected version 0 but it is at version 1/);
      const err2 = await thrown(s.append('task', 't1', 5, [{ type: 'updated', data: { status: 'done' } }], meta));
      expect(err2).toMatchObject({ code: 'STATE_VERSION_CONFLICT', expectedVersion: 5, actualVersion: 1 });
      expect((await s.get('task', 't1'))!.version).toBe(1);
    });

    withStore('an append planned from the caller\'s read (basis) writes what a plain append writes; a stale basis is a conflict', async (s) => {
      await s.append('ticket', 'tb1', 0, [{ type: 'created', data: { subject: 'help' } }], meta);
      await s.append('ticket', 'tb2', 0, [{ type: 'created', data: { subject: 'help' } }], meta);
      const read1 = (await s.get('ticket', 'tb1'))!;
      const withBasis = await s.append('ticket', 'tb1', 1, [{ type: 'updated', data: { summary: 'from the basis' } }], meta, { basis: read1 });
      const plain = await s.append('ticket', 'tb2', 1, [{ type: 'updated', data: { summary: 'from the basis' } }], meta);
      const { entityId: _a, createdAt: _c1, updatedAt: _u1, ...a } = withBasis.entity;
      const { entityId: _b, createdAt: _c2, updatedAt: _u2, ...b } = plain.entity;
      expect(a).toEqual(b);
      expect((await s.get('ticket', 'tb1'))!.state).toEqual(withBasis.entity.state);
      expect((await s.get('ticket', 'tb1'))!.state).toMatchObject({ subject: 'help', summary: 'from the basis' });
      // the basis read at version 1 is stale now: the expected version decides, as always
      expect(await thrown(s.append('ticket', 'tb1', 1, [{ type: 'updated', data: { summary: 'late' } }], meta, { basis: read1 }))).toMatchObject({ code: 'STATE_VERSION_CONFLICT', actualVersion: 2 });
      // a basis of another version or entity is not used: the state comes from the store
      const read2 = (await s.get('ticket', 'tb2'))!;
      await s.append('ticket', 'tb1', 2, [{ type: 'updated', data: { priority: 'high' } }], meta, { basis: read2 });
      await s.append('ticket', 'tb1', 3, [{ type: 'updated', data: { status: 'pending' } }], meta, { basis: read1 });
      expect((await s.get('ticket', 'tb1'))!).toMatchObject({ version: 4, state: { subject: 'help', summary: 'from the basis', priority: 'high', status: 'pending' } });
      expect(await s.history('ticket', 'tb1')).toHaveLength(4);
      // the basis is what the append is planned from (no second read): which is why it must be unmodified
      const read3 = (await s.get('ticket', 'tb2'))!;
      await s.append('ticket', 'tb2', 2, [{ type: 'updated', data: { priority: 'low' } }], meta, { basis: { ...read3, state: { ...read3.state, subject: 'changed by the caller' } } });
      expect((await s.get('ticket', 'tb2'))!.state).toMatchObject({ subject: 'changed by the caller', priority: 'low' });
    });

    withStore('concurrent appends at the same version: exactly one wins, every loser gets a conflict', async (s) => {
      await s.append('ticket', 'tk1', 0, [{ type: 'created', data: { subject: 'help' } }], meta);
      const results = await Promise.allSettled(
        Array.from({ length: 8 }, (_, i) => s.append('ticket', 'tk1', 1, [{ type: 'updated', data: { summary: `writer ${i}` } }], meta)),
      );
      const ok = results.filter((r) => r.status === 'fulfilled');
      const conflicts = results.filter((r) => r.status === 'rejected' && isStateError(r.reason, 'STATE_VERSION_CONFLICT'));
      expect(ok).toHaveLength(1);
      expect(conflicts).toHaveLength(7);
      expect((await s.get('ticket', 'tk1'))!.version).toBe(2);
      expect(await s.history('ticket', 'tk1')).toHaveLength(2);
    });

    withStore('data failing the schema is refused naming the fields, and nothing of the append is written', async (s) => {
      const head = await s.headCursor();
      const err = await thrown(
        s.append('customer', 'c2', 0, [{ type: 'created', data: { name: 'Bob' } }, { type: 'updated', data: { email: 'not-an-email', status: 'gone' } }], meta),
      );
      expect(err).toMatchObject({ name: 'SchemaValidationError', code: 'STATE_SCHEMA_INVALID', entityType: 'customer', entityId: 'c2', retryable: false });
      expect((err.fields as string[]).sort()).toEqual(['email', 'status']);
      expect(await s.get('customer', 'c2')).toBeNull();
      expect(await s.history('customer', 'c2')).toEqual([]);
      expect((await s.changes({ since: head })).events).toEqual([]);
      expect(await s.pendingEvents()).toEqual([]);
      // unknown fields are refused too (strict schemas), with the field named
      const e2 = await thrown(s.append('customer', 'c2', 0, [{ type: 'created', data: { name: 'Bob', shoeSize: 44 } }], meta));
      expect(e2.code).toBe('STATE_SCHEMA_INVALID');
      expect(e2.message).toMatch(/shoeSize/);
      // bad metadata
      const e3 = await thrown(s.append('customer', 'c2', 0, [{ type: 'created', data: { name: 'Bob' } }], { actor: { kind: 'robot', id: '' } } as unknown as EventMeta));
      expect(e3.code).toBe('STATE_SCHEMA_INVALID');
      expect(e3.fields).toEqual(expect.arrayContaining(['meta.actor.kind', 'meta.actor.id']));
    });

    withStore('unknown types, bad ids, misplaced events and oversized documents get clear typed errors', async (s) => {
      const e1 = await thrown(s.append('spaceship', 'x', 0, [{ type: 'created', data: {} }], meta));
      expect(e1).toMatchObject({ code: 'STATE_UNKNOWN_ENTITY_TYPE', entityType: 'spaceship' });
      expect(e1.message).toMatch(/customer/);
      expect((await thrown(s.get('spaceship', 'x'))).code).toBe('STATE_UNKNOWN_ENTITY_TYPE');
      expect(await thrown(s.append('task', 'a.b', 0, [{ type: 'created', data: { title: 'x' } }], meta))).toMatchObject({ code: 'STATE_INVALID_ID', value: 'a.b' });
      expect((await thrown(s.append('task', 'a b', 0, [{ type: 'created', data: { title: 'x' } }], meta))).code).toBe('STATE_INVALID_ID');
      expect((await thrown(s.append('task', 't9', 0, [{ type: 'updated', data: { title: 'x' } }], meta))).code).toBe('STATE_INVALID_EVENT');
      expect((await thrown(s.append('task', 't9', 0, [], meta))).code).toBe('STATE_INVALID_EVENT');
      expect(await thrown(s.append('task', 't9', 0, [{ type: 'exploded' }], meta))).toMatchObject({ code: 'STATE_UNKNOWN_EVENT_TYPE', eventType: 'exploded' });
      await s.append('task', 't9', 0, [{ type: 'created', data: { title: 'x' } }], meta);
      expect((await thrown(s.append('task', 't9', 1, [{ type: 'created', data: { title: 'y' } }], meta))).code).toBe('STATE_INVALID_EVENT');
      const e5 = await thrown(s.append('content_asset', 'big1', 0, [{ type: 'created', data: { productId: 'p1', kind: 'landing_page', slot: 'page', title: 'huge', versions: [{ version: 1, title: 'huge', body: 'y'.repeat(400_000), by: 'agent:writer', at: '2030-01-01T00:00:00Z' }] } }], meta));
      expect(e5).toMatchObject({ code: 'STATE_DOCUMENT_TOO_LARGE', entityId: 'big1', limit: 200_000 });
      expect(e5.bytes).toBeGreaterThan(400_000);
      expect(await s.get('content_asset', 'big1')).toBeNull();
    }, { maxDocumentBytes: 200_000 });

    withStore('custom events with their own schema and reducer; delete and restore', async (s) => {
      await s.append('conversation', 'cv1', 0, [{ type: 'created', data: { channel: 'email', subject: 'Order 1234', participants: ['ada@example.com'] } }], meta);
      const at = new Date().toISOString();
      await s.append('conversation', 'cv1', 1, [{ type: 'message_added', data: { from: 'ada@example.com', direction: 'in', text: 'Where is my parcel?', at } }], meta);
      const bad = await thrown(s.append('conversation', 'cv1', 2, [{ type: 'message_added', data: { from: 'ada', direction: 'sideways', at } }], meta));
      expect(bad.code).toBe('STATE_SCHEMA_INVALID');
      expect((bad.fields as string[]).sort()).toEqual(['direction', 'text']);
      const cv = await s.get<{ messages: { text: string }[] }>('conversation', 'cv1');
      expect(cv!.state.messages.map((m) => m.text)).toEqual(['Where is my parcel?']);
      await s.append('conversation', 'cv1', 2, [{ type: 'deleted', data: { reason: 'spam' } }], meta);
      expect(await s.get('conversation', 'cv1')).toMatchObject({ version: 3, deleted: true });
      expect((await thrown(s.append('conversation', 'cv1', 3, [{ type: 'updated', data: { subject: 'x' } }], meta))).code).toBe('STATE_INVALID_EVENT');
      expect((await s.query('conversation')).items).toEqual([]);
      expect((await s.query('conversation', { includeDeleted: true })).items).toHaveLength(1);
      await s.append('conversation', 'cv1', 3, [{ type: 'restored' }], meta);
      expect((await s.query('conversation')).items).toHaveLength(1);
    });

    withStore('a new entity type is a declaration', async (s) => {
      await s.append('invoice', 'inv1', 0, [{ type: 'created', data: { customerId: 'c1', amount: 120 } }], meta);
      const r = await s.append('invoice', 'inv1', 1, [{ type: 'paid', data: { at: new Date().toISOString() } }], meta);
      expect(r.entity.state).toEqual({ customerId: 'c1', amount: 120, paid: true });
      expect((await s.search('c1', { types: ['invoice'] })).map((e) => e.entityId)).toEqual(['inv1']);
    }, {
      types: [
        ...ALL_ENTITY_TYPES,
        defineEntityType({
          name: 'invoice',
          schemaVersion: 2,
          schema: z.strictObject({ customerId: z.string(), amount: z.number().positive(), paid: z.boolean().default(false) }),
          searchFields: ['customerId'],
          events: { paid: z.strictObject({ at: z.iso.datetime() }) },
          reduce: (state, e) => (e.type === 'paid' ? { ...state, paid: true } : state),
        }),
      ],
    });

    withStore('the change log reads globally or by type from a cursor, in pages', async (s) => {
      const start = await s.headCursor();
      await s.append('task', 'a', 0, [{ type: 'created', data: { title: 'a' } }], meta);
      await s.append('ticket', 'b', 0, [{ type: 'created', data: { subject: 'b' } }], meta);
      await s.append('task', 'a', 1, [{ type: 'updated', data: { status: 'done' } }, { type: 'updated', data: { priority: 'high' } }], meta);
      const all = await s.changes({ since: start });
      expect(all.events.map((e) => `${e.entityType}/${e.entityId}@${e.version}`)).toEqual(['task/a@1', 'ticket/b@1', 'task/a@2', 'task/a@3']);
      expect(all.cursor).toBe(all.events.at(-1)!.cursor);
      expect(all.hasMore).toBe(false);
      const cursors = all.events.map((e) => e.cursor);
      expect([...cursors].sort((x, y) => x - y)).toEqual(cursors);
      expect(await s.headCursor()).toBe(all.cursor);
      const tasks = await s.changes({ since: start, types: ['task'] });
      expect(tasks.events.map((e) => e.version)).toEqual([1, 2, 3]);
      const p1 = await s.changes({ since: start, limit: 3 });
      expect(p1.events).toHaveLength(3);
      expect(p1.hasMore).toBe(true);
      const p2 = await s.changes({ since: p1.cursor, limit: 3 });
      expect(p2.events.map((e) => e.version)).toEqual([3]);
      expect(p2.hasMore).toBe(false);
      const none = await s.changes({ since: all.cursor });
      expect(none).toEqual({ events: [], cursor: all.cursor, hasMore: false });
      expect((await thrown(s.changes({ types: ['nope'] }))).code).toBe('STATE_UNKNOWN_ENTITY_TYPE');
    });

    withStore('query views filter, sort and page; text search finds entities by their search fields', async (s) => {
      const tasks = [
        { id: 'q1', title: 'Draft launch email', status: 'todo', priority: 'high', tags: ['launch'] },
        { id: 'q2', title: 'Research competitors', status: 'in_progress', priority: 'normal', tags: ['research'] },
        { id: 'q3', title: 'Launch landing page', status: 'todo', priority: 'urgent', tags: ['launch', 'web'] },
        { id: 'q4', title: 'Pay invoices', status: 'done', priority: 'low', tags: [] },
        { id: 'q5', title: 'Email the launch list', status: 'todo', priority: 'low', tags: ['launch'] },
      ];
      for (const { id, ...data } of tasks) await s.append('task', id, 0, [{ type: 'created', data }], meta);
      await s.append('customer', 'cx', 0, [{ type: 'created', data: { name: 'Launch Corp', company: 'Rocket' } }], meta);

      const todo = await s.query('task', { filter: { status: 'todo' }, sort: { title: 'asc' } });
      expect(todo.items.map((e) => e.entityId)).toEqual(['q1', 'q5', 'q3']);
      expect(todo.total).toBe(3);
      const page1 = await s.query('task', { sort: { id: 'desc' }, limit: 2 });
      expect(page1.items.map((e) => e.entityId)).toEqual(['q5', 'q4']);
      expect(page1.nextOffset).toBe(2);
      const page3 = await s.query('task', { sort: { id: 'desc' }, limit: 2, offset: 4 });
      expect(page3.items.map((e) => e.entityId)).toEqual(['q1']);
      expect(page3.nextOffset).toBeNull();
      expect((await s.query('task', { filter: { priority: { $in: ['high', 'urgent'] } } })).items.map((e) => e.entityId)).toEqual(['q1', 'q3']);
      expect((await s.query('task', { filter: { tags: { $contains: 'web' } } })).items.map((e) => e.entityId)).toEqual(['q3']);
      expect((await s.query('task', { filter: { status: { $ne: 'todo' } } })).items.map((e) => e.entityId)).toEqual(['q2', 'q4']);
      expect((await s.query('task', { filter: { title: { $gte: 'P' } } })).items.map((e) => e.entityId)).toEqual(['q2', 'q4']);
      expect((await s.query('task', { filter: { assignee: { $exists: false }, version: 1 } })).total).toBe(5);
      expect((await thrown(s.query('task', { filter: { "x') OR 1=1 --": 1 } }))).code).toBe('STATE_INVALID_QUERY');
      expect((await thrown(s.query('task', { filter: { status: { $where: 'x' } as never } }))).code).toBe('STATE_INVALID_QUERY');

      expect((await s.search('launch')).map((e) => e.entityId).sort()).toEqual(['cx', 'q1', 'q3', 'q5']);
      expect((await s.search('LAUNCH email', { types: ['task'] })).map((e) => e.entityId).sort()).toEqual(['q1', 'q5']);
      expect((await s.search('rocket')).map((e) => e.entityId)).toEqual(['cx']);
      expect(await s.search('nothing-matches-this')).toEqual([]);
      expect((await s.search('launch', { limit: 2 })).length).toBe(2);
    });

    withStore('projections rebuild from the events to the same state', async (s) => {
      await s.append('product', 'p1', 0, [{ type: 'created', data: { name: 'Niche kit', pitch: 'A kit', audience: 'makers', tags: ['diy'] } }], meta);
      await s.append('product', 'p1', 1, [{ type: 'updated', data: { lifecycle: 'researching', price: { amount: 29, currency: 'EUR' } } }], meta);
      await s.append('product', 'p2', 0, [{ type: 'created', data: { name: 'Other', pitch: 'Other', audience: 'anyone' } }, { type: 'deleted' }], meta);
      await s.append('calendar_item', 'cal1', 0, [{ type: 'created', data: { title: 'Launch call', startsAt: '2030-01-01T10:00:00Z' } }], meta);
      const before = [await s.get('product', 'p1'), await s.get('product', 'p2'), await s.get('calendar_item', 'cal1')];
      expect(await s.rebuildProjections()).toBe(3);
      const after = [await s.get('product', 'p1'), await s.get('product', 'p2'), await s.get('calendar_item', 'cal1')];
      expect(after).toEqual(before);
      expect((await s.query('product', { filter: { 'price.amount': { $gt: 10 } } })).items.map((e) => e.entityId)).toEqual(['p1']);
      expect((await s.search('launch call')).map((e) => e.entityId)).toEqual(['cal1']);
    });

    withStore('outbox: committed events are pending until marked published, in cursor order', async (s) => {
      const seen: string[] = [];
      const off = s.onCommit((evs) => seen.push(...evs.map((e) => e.eventId)));
      const r1 = await s.append('task', 'o1', 0, [{ type: 'created', data: { title: 'o' } }, { type: 'updated', data: { status: 'done' } }], meta);
      const r2 = await s.append('task', 'o2', 0, [{ type: 'created', data: { title: 'p' } }], meta);
      off();
      const ids = [...r1.events, ...r2.events].map((e) => e.eventId);
      expect(seen).toEqual(ids);
      const pending = await s.pendingEvents();
      expect(pending.map((e) => e.eventId)).toEqual(ids);
      await s.markPublished(r1.events.map((e) => e.eventId));
      expect((await s.pendingEvents()).map((e) => e.eventId)).toEqual(r2.events.map((e) => e.eventId));
      await s.markPublished(r2.events.map((e) => e.eventId));
      expect(await s.pendingEvents()).toEqual([]);
    });

    withStore('idempotency: a side effect is recorded once; a crashed claim is retried after its lease', async (s) => {
      const k = 'send-email:ticket/T-1:v3';
      const c1 = await s.claim(k, { leaseMs: 60_000 });
      expect(c1).toMatchObject({ status: 'claimed', attempt: 1 });
      expect(await s.claim(k)).toMatchObject({ status: 'running', attempt: 1 });
      if (c1.status !== 'claimed') throw new Error('unreachable');
      await s.complete(k, c1.token, { messageId: 'm-1' });
      expect(await s.claim(k)).toMatchObject({ status: 'completed', result: { messageId: 'm-1' } });
      expect((await thrown(s.complete(k, c1.token, {}))).code).toBe('STATE_IDEMPOTENCY_LEASE_LOST');
      expect(await s.getIdempotency(k)).toMatchObject({ status: 'completed', attempt: 1, result: { messageId: 'm-1' } });

      // a claimer that crashed: its lease expires and the next claim takes over
      const k2 = 'charge-card:run-9';
      const a = await s.claim(k2, { leaseMs: 50 });
      await new Promise((r) => setTimeout(r, 80));
      const b = await s.claim(k2, { leaseMs: 60_000 });
      expect(b).toMatchObject({ status: 'claimed', attempt: 2 });
      if (a.status !== 'claimed' || b.status !== 'claimed') throw new Error('unreachable');
      expect((await thrown(s.complete(k2, a.token))).code).toBe('STATE_IDEMPOTENCY_LEASE_LOST');
      await s.complete(k2, b.token, 'ok');
      // many concurrent claimers: exactly one owns it
      const k3 = 'race';
      const claims = await Promise.all(Array.from({ length: 6 }, () => s.claim(k3)));
      expect(claims.filter((c) => c.status === 'claimed')).toHaveLength(1);
      const mine = claims.find((c) => c.status === 'claimed')!;
      if (mine.status !== 'claimed') throw new Error('unreachable');
      await s.release(k3, mine.token);
      expect(await s.getIdempotency(k3)).toBeNull();
      expect((await s.claim(k3)).status).toBe('claimed');
    });

    withStore('idempotency: an unclaimed completion (a workflow step) is recorded once, with its cost, and wins over a running claim', async (s) => {
      const meta = { actor: { kind: 'agent' as const, id: 'a' } };
      const cost = { agent: 'a', capability: 'step', runId: 'run-u', costUsd: 0.25 };
      // absent key: recorded completed with the attempt given, one cost record
      await s.complete('task:u:1', 'tok-1', { n: 1 }, { unclaimed: true, attempt: 2, cost });
      expect(await s.getIdempotency('task:u:1')).toMatchObject({ status: 'completed', attempt: 2, result: { n: 1 } });
      // a second delivery's completion: refused, and its cost is not recorded
      expect((await thrown(s.complete('task:u:1', 'tok-2', { n: 2 }, { unclaimed: true, attempt: 3, cost }))).code).toBe('STATE_IDEMPOTENCY_LEASE_LOST');
      expect(await s.getIdempotency('task:u:1')).toMatchObject({ status: 'completed', attempt: 2, result: { n: 1 } });
      expect((await s.costs({ runId: 'run-u' })).totals.count).toBe(1);
      // a key claimed by an instance still running: the unclaimed completion records it; the claimer then finds it done
      const c = await s.claim('task:u:2', { leaseMs: 60_000 });
      if (c.status !== 'claimed') throw new Error('not claimed');
      await s.complete('task:u:2', 'tok-3', 'mine', { unclaimed: true });
      expect((await thrown(s.complete('task:u:2', c.token, 'theirs'))).code).toBe('STATE_IDEMPOTENCY_LEASE_LOST');
      expect(await s.getIdempotency('task:u:2')).toMatchObject({ status: 'completed', result: 'mine' });
      expect(await s.claim('task:u:2')).toMatchObject({ status: 'completed', result: 'mine' });
      // with an append: two deliveries of one step race; the append that wins records the completion, the other changes nothing
      await s.append('task', 'run-u', 0, [{ type: 'created', data: { title: 'step' } }], meta);
      const step = (token: string) => s.append('task', 'run-u', 1, [{ type: 'updated', data: { status: 'done' } }], meta, { complete: { key: 'task:u:3', token, result: token, cost, unclaimed: true, attempt: 1 } });
      const [x, y] = await Promise.allSettled([step('d-1'), step('d-2')]);
      expect([x.status, y.status].sort()).toEqual(['fulfilled', 'rejected']);
      const winner = x.status === 'fulfilled' ? 'd-1' : 'd-2';
      expect(await s.getIdempotency('task:u:3')).toMatchObject({ status: 'completed', result: winner });
      expect((await s.get('task', 'run-u'))?.version).toBe(2);
      expect((await s.costs({ runId: 'run-u' })).totals.count).toBe(2);
    });

    withStore('cost ledger: records attributed and summed by dimension and time', async (s) => {
      const base = { capability: 'triage', runId: 'run-1', customerId: 'cust-1', entityType: 'ticket', entityId: 'T-1' };
      await s.recordCost({ ...base, agent: 'triage', model: 'small', tokensIn: 1000, tokensOut: 200, tokensCached: 100, costUsd: 0.0012, computeMs: 350 });
      await s.recordCost({ ...base, agent: 'writer', model: 'large', tokensIn: 3000, tokensOut: 900, costUsd: 0.045, computeMs: 2100, details: { tier: 2 } });
      await s.recordCost({ agent: 'triage', runId: 'run-2', customerId: 'cust-2', costUsd: 0.001, time: '2020-01-01T00:00:00Z' });
      const all = await s.costs({ by: ['agent'], records: 10 });
      expect(all.totals).toMatchObject({ count: 3, tokensIn: 4000, tokensOut: 1100, tokensCached: 100, computeMs: 2450 });
      expect(all.totals.costUsd).toBeCloseTo(0.0472, 9);
      expect(all.groups.map((g) => [g.key.agent, g.totals.count])).toEqual([
        ['writer', 1],
        ['triage', 2],
      ]);
      expect(all.records).toHaveLength(3);
      expect(all.records[2]!.time).toBe('2020-01-01T00:00:00.000Z');
      const run1 = await s.costs({ runId: 'run-1', by: ['model', 'customerId'] });
      expect(run1.totals.count).toBe(2);
      expect(run1.groups).toHaveLength(2);
      expect(run1.records).toEqual([]);
      expect((await s.costs({ since: '2021-01-01T00:00:00Z' })).totals.count).toBe(2);
      expect((await s.costs({ until: '2021-01-01T00:00:00Z' })).totals.count).toBe(1);
      expect((await thrown(s.recordCost({ costUsd: -1 })))?.code).toBe('STATE_INVALID_QUERY');
    });

    withStore('approvals: only one decision wins; past the deadline it expires', async (s) => {
      const deadline = new Date(Date.now() + 60_000).toISOString();
      const a = await s.createApproval({ action: 'email.send', subject: 'ticket/T-1', payload: { to: 'ada@example.com' }, requestedBy: actor, deadline, correlationId: 'run-1' });
      expect(a).toMatchObject({ state: 'pending', payload: { to: 'ada@example.com' }, decidedBy: null });
      const results = await Promise.allSettled([
        s.decideApproval(a.id, { decision: 'approved', by: { kind: 'human', id: 'op' } }),
        s.decideApproval(a.id, { decision: 'rejected', by: { kind: 'human', id: 'op2' }, reason: 'no' }),
        s.decideApproval(a.id, { decision: 'approved', by: { kind: 'human', id: 'op3' } }),
      ]);
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      for (const r of results) if (r.status === 'rejected') expect(isStateError(r.reason, 'STATE_APPROVAL_NOT_PENDING')).toBe(true);
      const decided = (await s.getApproval(a.id))!;
      expect(['approved', 'rejected']).toContain(decided.state);
      expect(decided.decidedBy).not.toBeNull();

      const b = await s.createApproval({ id: 'ap-short', action: 'refund', subject: 'customer/c1', requestedBy: actor, deadline: new Date(Date.now() + 40).toISOString() });
      await new Promise((r) => setTimeout(r, 80));
      expect(await thrown(s.decideApproval(b.id, { decision: 'approved', by: { kind: 'human', id: 'op' } }))).toMatchObject({ code: 'STATE_APPROVAL_EXPIRED', approvalId: 'ap-short' });
      expect((await s.getApproval('ap-short'))!.state).toBe('expired');
      expect((await s.listApprovals({ state: 'expired' })).map((x) => x.id)).toEqual(['ap-short']);
      expect(await s.listApprovals()).toHaveLength(2);
      expect((await thrown(s.decideApproval('missing', { decision: 'approved', by: actor }))).code).toBe('STATE_NOT_FOUND');
      expect((await thrown(s.createApproval({ id: 'ap-short', action: 'x', subject: 'y', requestedBy: actor, deadline }))).code).toBe('STATE_INVALID_QUERY');
    });

    withStore('approvals keep the decision\'s facts (edited text, reason); a superseded one can no longer be decided', async (s) => {
      const deadline = new Date(Date.now() + 60_000).toISOString();
      const a = await s.createApproval({ id: 'ap-edit', action: 'reply.send', subject: 'ticket/T-2', payload: { text: 'draft' }, requestedBy: actor, deadline });
      expect(a.text).toBeNull();
      await s.decideApproval('ap-edit', { decision: 'approved', by: { kind: 'human', id: 'ada' }, text: 'edited' });
      expect(await s.getApproval('ap-edit')).toMatchObject({ state: 'approved', decidedBy: { kind: 'human', id: 'ada' }, text: 'edited', reason: null, decidedAt: expect.any(String) });
      await s.createApproval({ id: 'ap-old', action: 'reply.send', subject: 'ticket/T-2', requestedBy: actor, deadline });
      await s.decideApproval('ap-old', { decision: 'superseded', by: { kind: 'system', id: 'run:r2' }, reason: 'new message on the ticket' });
      expect(await s.getApproval('ap-old')).toMatchObject({ state: 'superseded', reason: 'new message on the ticket', text: null });
      expect((await s.listApprovals({ state: 'superseded' })).map((x) => x.id)).toEqual(['ap-old']);
      expect(await thrown(s.decideApproval('ap-old', { decision: 'approved', by: actor }))).toMatchObject({ code: 'STATE_APPROVAL_NOT_PENDING' });
    });

    it('audit log: a hash chain that exports in order and detects tampering', async (ctx) => {
      const s = await t.open();
      if ('skip' in s) return ctx.skip(s.skip);
      try {
        expect(await s.verifyAudit()).toEqual({ ok: true, records: 0, head: null });
        const recs = [];
        for (let i = 1; i <= 5; i++) recs.push(await s.appendAudit({ actor, action: 'email.sent', subject: `ticket/T-${i}`, details: { n: i, to: ['a@b.c'] } }));
        // concurrent appends still form one chain
        await Promise.all(Array.from({ length: 5 }, (_, i) => s.appendAudit({ actor: { kind: 'system', id: 'sched' }, action: 'tick', subject: `s${i}` })));
        expect(recs.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5]);
        expect(recs[1]!.prevHash).toBe(recs[0]!.hash);
        const exp = await s.exportAudit();
        expect(exp.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        expect(exp[0]).toEqual(recs[0]);
        expect((await s.exportAudit({ sinceSeq: 8 })).map((r) => r.seq)).toEqual([9, 10]);
        const ok = await s.verifyAudit();
        expect(ok).toMatchObject({ ok: true, records: 10, head: exp[9]!.hash });
        await t.tamperAudit(s, 3);
        expect(await s.verifyAudit()).toMatchObject({ ok: false, brokenAt: 3 });
      } finally {
        await s.close();
      }
    });

    withStore('erasure: redactEntity rewrites the stored events and the state, then appends an erased event', async (s) => {
      const who = { kind: 'human', id: 'dpo' } as const;
      await s.append('customer', 'c-e1', 0, [{ type: 'created', data: { name: 'Ada Lovelace', email: 'ada@example.com', tags: ['handle:ada'] } }], meta);
      await s.append('customer', 'c-e1', 1, [{ type: 'updated', data: { notes: 'Ada Lovelace called', status: 'active' } }], meta);
      await s.append('customer', 'c-e2', 0, [{ type: 'created', data: { name: 'Adam Ada Lovelaceson', email: 'adam@example.com' } }], meta);
      const at = new Date().toISOString();
      await s.append('ticket', 't-e1', 0, [{ type: 'created', data: { subject: 'Refund for Ada', customerId: 'c-e1', customerEmail: 'ada@example.com', messages: [] } }], meta);
      await s.append('ticket', 't-e1', 1, [{ type: 'message_added', data: { id: 'm1', direction: 'in', channel: 'email', from: 'ada@example.com', text: 'Hi, Ada Lovelace here', at } }], meta);

      const c = await s.redactEntity('customer', 'c-e1', { fields: 'all', reason: 'gdpr request 7', actor: who, delete: true });
      expect(c).toEqual({ entityType: 'customer', entityId: 'c-e1', events: 2, version: 3 });
      const cur = await s.get('customer', 'c-e1');
      expect(cur).toMatchObject({ version: 3, deleted: true, state: { name: '[erased]', email: '[erased]', notes: '[erased]', tags: ['[erased]'] } });
      const h = await s.history('customer', 'c-e1');
      expect(h.map((e) => e.type)).toEqual(['created', 'updated', 'erased']);
      expect(h[2]).toMatchObject({ data: { reason: 'gdpr request 7', fields: 'all', events: 2, deleted: true }, meta: { actor: who } });
      expect(JSON.stringify(h)).not.toMatch(/ada@example\.com|Lovelace/);
      expect((await s.getAt('customer', 'c-e1', 1))!.state).toMatchObject({ name: '[erased]' });
      expect(await s.search('lovelace', { types: ['customer'], includeDeleted: true })).toEqual([expect.objectContaining({ entityId: 'c-e2' })]);

      const t = await s.redactEntity('ticket', 't-e1', { fields: ['customerEmail', 'subject', 'from', 'text'], reason: 'gdpr request 7', actor: who });
      expect(t).toMatchObject({ events: 2, version: 3 });
      const tk = await s.get<{ subject: string; customerId: string; messages: Array<Record<string, unknown>> }>('ticket', 't-e1');
      expect(tk).toMatchObject({ deleted: false, state: { subject: '[erased]', customerId: 'c-e1', customerEmail: '[erased]' } });
      expect(tk!.state.messages[0]).toEqual({ id: 'm1', direction: 'in', channel: 'email', from: '[erased]', text: '[erased]', at });
      expect(JSON.stringify(await s.history('ticket', 't-e1'))).not.toMatch(/ada@example\.com|Lovelace|Refund/);
      // the erased events go out through the outbox like any other
      expect((await s.pendingEvents()).filter((e) => e.type === 'erased').map((e) => e.entityId).sort()).toEqual(['c-e1', 't-e1']);
      expect((await s.get('customer', 'c-e2'))!.state).toMatchObject({ name: 'Adam Ada Lovelaceson' });
      expect(await s.redactEntity('customer', 'nobody', { fields: 'all', reason: 'x', actor: who })).toMatchObject({ events: 0, version: 0 });
      expect((await thrown(s.redactEntity('customer', 'c-e2', { reason: 'x', actor: who }))).code).toBe('STATE_INVALID_QUERY');
    });

    withStore('erasure: redactRecords scrubs values from audit details (v2 stays verifiable), approvals, idempotency results, costs and other entities', async (s) => {
      const who = { kind: 'human', id: 'dpo' } as const;
      const q = await s.appendAudit({ actor: { kind: 'system', id: 'smtp' }, action: 'message.quarantined', subject: 'quarantine/q1', details: { from: 'ada@example.com', reason: 'spam' } });
      expect(q).toMatchObject({ v: 2, detailsDigest: expect.stringMatching(/^[0-9a-f]{64}$/), detailsLeaves: [expect.stringMatching(/^[0-9a-f]{64}$/), expect.stringMatching(/^[0-9a-f]{64}$/)] });
      expect(Object.keys(q.detailsSalts!).sort()).toEqual(['["from"]', '["reason"]']);
      await s.appendAudit({ actor, action: 'email.sent', subject: 'ticket/t9', details: { recipients: 1 } });
      const deadline = new Date(Date.now() + 60_000).toISOString();
      await s.createApproval({ id: 'ap-ada', action: 'reply.send', subject: 'ticket/t9', payload: { to: 'ada@example.com', text: 'Dear Ada Lovelace, ...', tier: 1 }, requestedBy: actor, deadline });
      await s.createApproval({ id: 'ap-other', action: 'reply.send', subject: 'ticket/t8', payload: { to: 'bob@example.com' }, requestedBy: actor, deadline });
      const cl = await s.claim('effect:send:1');
      if (cl.status !== 'claimed') throw new Error('not claimed');
      await s.complete('effect:send:1', cl.token, { to: 'ADA@example.com', messageId: '<m1@keel>' });
      await s.recordCost({ customerId: 'c-e1', agent: 'triage', costUsd: 0.5, tokensIn: 10, details: { tier: 1, subject: 'Refund please' } });
      await s.recordCost({ customerId: 'c-other', agent: 'triage', costUsd: 0.25, details: { note: 'wrote about ada@example.com' } });
      await s.append('conversation', 'cv1', 0, [{ type: 'created', data: { channel: 'chat', participants: ['ada@example.com', 'support'] } }], meta);
      // a run's recorded model call and its approval hold the customer's words without naming her
      const mc = await s.claim('effect:ticket.suggest-reply:run-ada.suggest.0:model-1');
      if (mc.status !== 'claimed') throw new Error('not claimed');
      await s.complete('effect:ticket.suggest-reply:run-ada.suggest.0:model-1', mc.token, { text: 'Sorry about the broken kettle', costUsd: 0.01, prompt: { messages: [{ role: 'user', content: 'my kettle broke' }] } });
      await s.createApproval({ id: 'ap-run', action: 'reply.send', subject: 'ticket/t9', payload: { text: 'Sorry about the kettle', tier: 0 }, requestedBy: actor, deadline, correlationId: 'run-ada' });
      const oc = await s.claim('effect:ticket.suggest-reply:run-other.suggest.0:model-1');
      if (oc.status !== 'claimed') throw new Error('not claimed');
      await s.complete('effect:ticket.suggest-reply:run-other.suggest.0:model-1', oc.token, { text: 'keep me' });

      const counts = await s.redactRecords({ values: ['ada@example.com', 'Ada Lovelace'], customerId: 'c-e1', keysContaining: [':run-ada.'], correlationIds: ['run-ada'], reason: 'gdpr request 7', actor: who });
      expect(counts).toEqual({ entities: 1, events: 1, audit: 1, auditUnerasable: 0, approvals: 2, idempotency: 2, costs: 2 });
      expect((await s.getIdempotency('effect:ticket.suggest-reply:run-ada.suggest.0:model-1'))!.result).toEqual({ text: '[erased]', costUsd: 0.01, prompt: { messages: [{ role: '[erased]', content: '[erased]' }] } });
      expect((await s.getIdempotency('effect:ticket.suggest-reply:run-other.suggest.0:model-1'))!.result).toEqual({ text: 'keep me' });
      expect((await s.getApproval('ap-run'))!.payload).toEqual({ text: '[erased]', tier: 0 });
      const audit = await s.exportAudit();
      expect(audit[0]).toMatchObject({ seq: 1, details: { from: '[erased]', reason: 'spam' }, erased: { reason: 'gdpr request 7' }, detailsDigest: q.detailsDigest, hash: q.hash });
      // the erased leaf's salt is gone (its digest can no longer confirm a guess), the other leaf's stays
      expect(Object.keys(audit[0]!.detailsSalts!)).toEqual(['["reason"]']);
      expect(audit[0]!.detailsLeaves).toEqual(q.detailsLeaves);
      expect(audit[1]).toMatchObject({ details: { recipients: 1 } });
      expect(audit[1]!.erased).toBeUndefined();
      // every genuine erasure is followed by its customer.erased record
      expect(await s.verifyAudit()).toMatchObject({ ok: false, brokenAt: 1, reason: expect.stringContaining('customer.erased') });
      await s.appendAudit({ actor: who, action: 'customer.erased', subject: 'customer/c-e1', details: { reason: 'gdpr request 7' } });
      expect(await s.verifyAudit()).toMatchObject({ ok: true, records: 3, erased: 1 });
      expect((await s.getApproval('ap-ada'))!.payload).toEqual({ to: '[erased]', text: '[erased]', tier: 1 });
      expect((await s.getApproval('ap-other'))!.payload).toEqual({ to: 'bob@example.com' });
      expect((await s.getIdempotency('effect:send:1'))!.result).toEqual({ to: '[erased]', messageId: '<m1@keel>' });
      const costs = await s.costs({ records: 10 });
      expect(costs.totals.costUsd).toBe(0.75);
      expect(costs.records.find((r) => r.customerId === 'c-e1')!.details).toEqual({ tier: 1, subject: '[erased]' });
      expect(costs.records.find((r) => r.customerId === 'c-other')!.details).toEqual({ note: '[erased]' });
      expect((await s.get('conversation', 'cv1'))!.state).toMatchObject({ participants: ['[erased]', 'support'] });
      expect(JSON.stringify(await s.history('conversation', 'cv1'))).not.toContain('ada@example.com');
      expect((await thrown(s.redactRecords({ values: ['ab'], reason: 'x', actor: who }))).code).toBe('STATE_INVALID_QUERY');
      // compaction after an erasure is safe to call on every adapter
      expect(await s.compact()).toBeTypeOf('object');
      expect((await s.verifyAudit()).ok).toBe(true);
    });

    it('audit log: erased leaves still verify; a changed leaf, or details rewritten under a forged erased flag, do not', async (ctx) => {
      const s = await t.open();
      if ('skip' in s) return ctx.skip(s.skip);
      try {
        const who = { kind: 'human', id: 'dpo' } as const;
        const details = { from: 'ada@example.com', reason: 'spam', recipients: 2, to: ['ada@example.com', 'ops@example.com'], byAddress: { 'ada@example.com': { n: 1, note: 'x' } }, empty: {} };
        await s.appendAudit({ actor, action: 'message.quarantined', subject: 'quarantine/q1', details });
        await s.appendAudit({ actor, action: 'email.sent', subject: 'ticket/t9', details: { recipients: 1, note: 'kept' } });
        expect(await s.verifyAudit()).toMatchObject({ ok: true, records: 2 });
        // someone with write access to the database: rewrites a record's details and marks it erased
        await t.tamperAudit(s, 2, { details: { recipients: 0, note: '[erased]' }, erased: { time: new Date().toISOString(), reason: 'cover-up' } });
        expect(await s.verifyAudit()).toMatchObject({ ok: false, brokenAt: 2, reason: expect.stringContaining('["recipients"]') });
        // a forged erased flag alone: no customer.erased record follows it
        await t.tamperAudit(s, 2, { details: { recipients: 1, note: 'kept' } });
        expect(await s.verifyAudit()).toMatchObject({ ok: false, brokenAt: 2, reason: expect.stringContaining('customer.erased') });
        // dropping a leaf is a change too
        await t.tamperAudit(s, 2, { details: { recipients: 1 }, erased: null });
        expect(await s.verifyAudit()).toMatchObject({ ok: false, brokenAt: 2 });
        await t.tamperAudit(s, 2, { details: { recipients: 1, note: 'kept' } });
        expect(await s.verifyAudit()).toMatchObject({ ok: true, records: 2 });

        // a genuine erasure: the values and the keys naming the customer
        const counts = await s.redactRecords({ values: ['ada@example.com'], reason: 'gdpr request 8', actor: who });
        expect(counts).toMatchObject({ audit: 1, auditUnerasable: 0 });
        const rec = (await s.exportAudit())[0]!;
        expect(rec.details).toEqual({ from: '[erased]', reason: 'spam', recipients: 2, to: ['[erased]', 'ops@example.com'], byAddress: { '[erased]': { n: '[erased]', note: '[erased]' } }, empty: {} });
        expect(JSON.stringify(rec)).not.toContain('ada@example.com');
        expect(rec.erased).toMatchObject({ reason: 'gdpr request 8' });
        // erased leaves verify; a customer.erased record must follow the erasure
        expect(await s.verifyAudit()).toMatchObject({ ok: false, brokenAt: 1 });
        await s.appendAudit({ actor: who, action: 'customer.erased', subject: 'customer/c-ada', details: {} });
        expect(await s.verifyAudit()).toMatchObject({ ok: true, records: 3, erased: 1 });
        // a leaf that was not erased is still proven
        await t.tamperAudit(s, 1, { details: { ...rec.details, reason: 'ham' } });
        expect(await s.verifyAudit()).toMatchObject({ ok: false, brokenAt: 1, reason: expect.stringContaining('["reason"]') });
        await t.tamperAudit(s, 1, { details: { ...rec.details, to: ['[erased]', 'eve@example.com'] } });
        expect(await s.verifyAudit()).toMatchObject({ ok: false, brokenAt: 1 });
        // an added erased leaf does not fit the number of digests
        await t.tamperAudit(s, 1, { details: { ...rec.details, reason: '[erased]', extra: '[erased]' } });
        expect(await s.verifyAudit()).toMatchObject({ ok: false, brokenAt: 1 });
        await t.tamperAudit(s, 1, { details: rec.details });
        expect(await s.verifyAudit()).toMatchObject({ ok: true, records: 3, erased: 1 });
      } finally {
        await s.close();
      }
    });

    withStore('erasure: non-ASCII capitals, keys naming the customer and values JSON escapes are found', async (s) => {
      const who = { kind: 'human', id: 'dpo' } as const;
      await s.append('customer', 'c-el', 0, [{ type: 'created', data: { name: 'Élodie Durand', email: 'elodie@example.com' } }], meta);
      await s.append('customer', 'c-q', 0, [{ type: 'created', data: { name: 'Ann "Nan" O\\Neil', email: 'ann@example.com' } }], meta);
      await s.appendAudit({ actor, action: 'message.quarantined', subject: 'quarantine/q2', details: { from: 'ÉLODIE DURAND', reason: 'spam' } });
      const deadline = new Date(Date.now() + 60_000).toISOString();
      await s.createApproval({ id: 'ap-el', action: 'reply.send', subject: 'ticket/t1', payload: { text: 'Bonjour Élodie Durand', byName: { 'Élodie Durand': 'vip', other: 'keep' } }, requestedBy: actor, deadline });
      await s.recordCost({ customerId: 'c-x', agent: 'triage', costUsd: 0.1, details: { note: 'Ann "Nan" O\\Neil wrote' } });
      // a record written with an "[erased]" value (copied from erased data) is proven like any other
      await s.appendAudit({ actor, action: 'email.sent', subject: 'ticket/t1', details: { to: '[erased]', recipients: 1 } });
      expect(await s.verifyAudit()).toEqual({ ok: true, records: 2, head: expect.any(String) });

      const counts = await s.redactRecords({ values: ['Élodie Durand', 'Ann "Nan" O\\Neil'], reason: 'gdpr request 9', actor: who });
      expect(counts).toMatchObject({ entities: 2, audit: 1, approvals: 1, costs: 1 });
      expect((await s.get('customer', 'c-el'))!.state).toMatchObject({ name: '[erased]', email: 'elodie@example.com' });
      expect((await s.get('customer', 'c-q'))!.state).toMatchObject({ name: '[erased]', email: 'ann@example.com' });
      expect(JSON.stringify(await s.history('customer', 'c-el'))).not.toMatch(/lodie Durand/);
      expect((await s.exportAudit())[0]!.details).toEqual({ from: '[erased]', reason: 'spam' });
      expect((await s.getApproval('ap-el'))!.payload).toEqual({ text: '[erased]', byName: { '[erased]': '[erased]', other: 'keep' } });
      expect((await s.costs({ records: 10 })).records[0]!.details).toEqual({ note: '[erased]' });
      await s.appendAudit({ actor: who, action: 'customer.erased', subject: 'customer/c-el', details: {} });
      expect(await s.verifyAudit()).toMatchObject({ ok: true, erased: 1 });
    });

    withStore('reports its kind and durability settings', async (s) => {
      expect(['sqlite', 'mongodb']).toContain(s.info.kind);
      expect(Object.keys(s.info.durability).length).toBeGreaterThan(0);
      expect(s.info.maxDocumentBytes).toBe(1024 * 1024);
    });
  });
}
