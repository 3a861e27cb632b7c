/**
 * The MongoDB adapter stores field names MongoDB updates and FerretDB refuse (`$coalesce`,
 * `reply.email`: a workflow definition and its policies inside run state) and gives them back
 * unchanged, in the entity and in its events. Before, no inbound run could be stored on FerretDB.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineEntityType, openStore, type EventMeta, type StateStore } from '../../shared-state/index.ts';
import { fromStored, toStored } from '../../shared-state/mongo-store.ts';
import { startMongo, uniqueName, type MongoHandle } from '../helpers/index.ts';

const doc = {
  definition: { steps: { send: { input: { text: { $coalesce: ['$.steps.approve.output.text', { $literal: '' }] } } } } },
  policies: { 'reply.email': 'auto', 'a.b.c': 'approve' },
  tricky: { '\uFF04odd': 1, '100%': 2, 'plain': [{ $concat: ['x', 'y'] }] },
};

describe('field names MongoDB cannot store as they are', () => {
  it('round-trip through the stored form (pure)', () => {
    const stored = toStored(doc);
    const keys = JSON.stringify(stored).match(/"[^"]*":/g)!.map((k) => k.slice(1, -2));
    expect(keys.filter((k) => k.startsWith('$') || k.includes('.'))).toEqual([]);
    expect(fromStored(stored)).toEqual(doc);
    expect(toStored({ a: 1, b: { c: [1, 'x'] } })).toEqual({ a: 1, b: { c: [1, 'x'] } });
  });

  let server: MongoHandle | undefined;
  let reason = '';
  let store: StateStore | undefined;
  beforeAll(async () => {
    const m = await startMongo();
    if (!m.ok) {
      reason = m.reason;
      return;
    }
    server = m.server;
    const type = defineEntityType({ name: 'runlike', schemaVersion: 1, schema: z.record(z.string(), z.unknown()), searchFields: [] });
    store = await openStore(server.url, { types: [type], mongodb: { database: uniqueName('keys') } });
  });
  afterAll(async () => {
    await store?.close();
    await server?.stop();
  });

  it('an entity and its events keep `$`-prefixed and dotted names on the server', async (ctx) => {
    if (!store) return ctx.skip(reason);
    const meta: EventMeta = { actor: { kind: 'system', id: 'test' } };
    const since = await store.headCursor();
    await store.append('runlike', 'r1', 0, [{ type: 'created', data: doc }], meta);
    await store.append('runlike', 'r1', 1, [{ type: 'updated', data: { policies: { 'reply.chat': 'audit' } } }], meta);
    const e = await store.get<typeof doc>('runlike', 'r1');
    expect(e?.state.definition).toEqual(doc.definition);
    expect(e?.state.tricky).toEqual(doc.tricky);
    expect(e?.state.policies).toMatchObject({ 'reply.email': 'auto', 'reply.chat': 'audit' });
    const events = (await store.changes({ since })).events;
    expect(events[0]!.data).toEqual(doc);
    expect((await store.query('runlike', {})).items[0]!.state).toEqual(e!.state);
  });
});
