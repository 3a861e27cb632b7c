/**
 * Group commit in the SQLite adapter: the writes asked for in one turn of the event loop share
 * one transaction (one lock, one fsync), each in its own savepoint, so one write's failure is its
 * own; a write's promise settles only once its transaction committed (another connection sees it).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { z } from 'zod';
import { defineEntityType, openStore, type StateStore } from '../../shared-state/index.ts';
import { tempDir } from '../../testkit/common.ts';
import { byteLength, eventBytes } from '../../shared-state/core.ts';

const note = defineEntityType({ name: 'note', schemaVersion: 1, schema: z.strictObject({ text: z.string().max(100) }), searchFields: ['text'] });
const meta = { actor: { kind: 'system' as const, id: 'test' } };
const counters = (s: StateStore) => (s as unknown as { groupCommit: { transactions: number; operations: number } }).groupCommit;

describe('SQLite group commit', () => {
  let dir: ReturnType<typeof tempDir>;
  let store: StateStore;
  beforeEach(async () => {
    dir = tempDir('keel-group-');
    store = await openStore(`sqlite:${join(dir.path, 'keel.db')}`, { types: [note] });
  });
  afterEach(async () => {
    await store.close();
    dir.remove();
  });

  it('writes of one turn share a transaction; a conflict, an invalid write and a lost race fail alone', async () => {
    await store.append('note', 'taken', 0, [{ type: 'created', data: { text: 'first' } }], meta);
    const before = { ...counters(store) };
    const writes = [
      ...Array.from({ length: 40 }, (_, i) => store.append('note', `n${i}`, 0, [{ type: 'created', data: { text: `note ${i}` } }], meta)),
      store.append('note', 'taken', 0, [{ type: 'created', data: { text: 'second' } }], meta), // wrong expected version
      store.append('note', 'bad', 0, [{ type: 'created', data: { text: 'x'.repeat(500) } }], meta), // fails the schema
      store.append('note', 'race', 0, [{ type: 'created', data: { text: 'winner' } }], meta),
      store.append('note', 'race', 0, [{ type: 'created', data: { text: 'loser' } }], meta), // same entity, same expected version, same batch
      store.claim('task-1'),
    ];
    const out = await Promise.allSettled(writes);
    const after = counters(store);
    expect(after.operations - before.operations).toBe(45);
    expect(after.transactions - before.transactions).toBeLessThan(5);
    expect(out.slice(0, 40).every((r) => r.status === 'fulfilled')).toBe(true);
    expect(out[40]).toMatchObject({ status: 'rejected', reason: { code: 'STATE_VERSION_CONFLICT' } });
    expect(out[41]).toMatchObject({ status: 'rejected' });
    expect(out[42]!.status).toBe('fulfilled');
    expect(out[43]).toMatchObject({ status: 'rejected', reason: { code: 'STATE_VERSION_CONFLICT' } });
    expect(out[44]).toMatchObject({ status: 'fulfilled', value: { status: 'claimed' } });
    // what failed left nothing; what succeeded is all there, in the change log once each
    expect(await store.get('note', 'bad')).toBeNull();
    expect((await store.get<{ text: string }>('note', 'taken'))!.state.text).toBe('first');
    expect((await store.get<{ text: string }>('note', 'race'))!).toMatchObject({ version: 1, state: { text: 'winner' } });
    const log = await store.changes({ since: 0, limit: 1000 });
    expect(log.events.map((e) => e.entityId).filter((id) => id.startsWith('n'))).toHaveLength(40);
    expect(new Set(log.events.map((e) => e.cursor)).size).toBe(log.events.length);
  });

  it('a write resolves only once committed: another connection to the file sees it', async () => {
    const other = await openStore(`sqlite:${join(dir.path, 'keel.db')}`, { types: [note] });
    try {
      const writes = Array.from({ length: 10 }, (_, i) => store.append('note', `v${i}`, 0, [{ type: 'created', data: { text: `v ${i}` } }], meta));
      for (const [i, w] of writes.entries()) {
        await w;
        expect(await other.get('note', `v${i}`)).not.toBeNull();
      }
    } finally {
      await other.close();
    }
  });

  it('while another connection contends for the write lock, writes of nearby turns join one transaction; without contention they do not wait', async () => {
    const other = new DatabaseSync(join(dir.path, 'keel.db'));
    const turn = () => new Promise<void>((r) => setImmediate(r));
    const twoTurns = async (a: string, b: string) => {
      const before = { ...counters(store) };
      const first = store.append('note', a, 0, [{ type: 'created', data: { text: a } }], meta);
      await turn();
      await Promise.all([first, store.append('note', b, 0, [{ type: 'created', data: { text: b } }], meta)]);
      return counters(store).transactions - before.transactions;
    };
    try {
      expect(await twoTurns('quiet1', 'quiet2')).toBe(2);
      other.exec('BEGIN IMMEDIATE');
      const blocked = store.append('note', 'blocked', 0, [{ type: 'created', data: { text: 'blocked' } }], meta);
      await new Promise((r) => setTimeout(r, 30));
      other.exec('COMMIT');
      await blocked;
      expect(await twoTurns('busy1', 'busy2')).toBe(1);
      await new Promise((r) => setTimeout(r, 250)); // the contention is over
      expect(await twoTurns('quiet3', 'quiet4')).toBe(2);
    } finally {
      other.close();
    }
  });

  it('writes after close are refused with STATE_UNAVAILABLE', async () => {
    const s2 = await openStore(`sqlite:${join(dir.path, 'other.db')}`, { types: [note] });
    const pending = s2.append('note', 'late', 0, [{ type: 'created', data: { text: 'late' } }], meta);
    await s2.close();
    await expect(pending).rejects.toMatchObject({ code: 'STATE_UNAVAILABLE' });
  });
});

describe('event size from its parts', () => {
  it('eventBytes (data and meta serialized once) equals the size of the whole event', () => {
    const datas: unknown[] = [null, { text: 'héllo ✓ 日本' }, { nested: { list: [1, 'two', { three: true }], empty: {} } }, 'plain', 42];
    const metas = [{ actor: { kind: 'system', id: 'test' } }, { actor: { kind: 'agent', id: 'ünïcode' }, correlationId: 'c-1', traceId: 'a'.repeat(32) }];
    for (const data of datas) {
      for (const meta of metas) {
        const ev = { eventId: 'e-1', entityType: 'note', entityId: 'n-1', version: 3, type: 'updated', data, schemaVersion: 1, meta: meta as never, time: new Date(0).toISOString() };
        expect(eventBytes(ev, JSON.stringify(data), JSON.stringify(meta))).toBe(byteLength(ev));
      }
    }
  });
});
