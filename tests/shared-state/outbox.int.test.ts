import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureEventStream, eventStreamName, eventSubject, natsEventPublisher } from '../../bus/index.ts';
import { encodeEvent, eventHeaders, openStore, startOutboxRelay } from '../../shared-state/index.ts';
import { startMongo, startNats, tempDir, uniqueName, waitFor, type MongoHandle, type NatsHandle } from '../helpers/index.ts';
import { ALL_ENTITY_TYPES } from '../helpers/types.ts';

const CRASHER = join(import.meta.dirname, 'fixtures', 'crash-publisher.ts');

let nats: NatsHandle | undefined;
let natsReason = '';
let mongo: MongoHandle | undefined;
let mongoReason = '';
let nc: NatsConnection | undefined;
const dir = tempDir('keel-state-outbox-');
beforeAll(async () => {
  const [n, m] = await Promise.all([startNats(), startMongo()]);
  if (n.ok) {
    nats = n.server;
    nc = await connect({ servers: nats.url });
  } else natsReason = n.reason;
  if (m.ok) mongo = m.server;
  else mongoReason = m.reason;
});
afterAll(async () => {
  await nc?.close();
  await Promise.all([nats?.stop(), mongo?.stop()]);
  dir.remove();
});

/** Every message of the stream: subject and Nats-Msg-Id. */
async function streamMessages(stream: string): Promise<{ subject: string; msgId: string; body: { eventId: string; version: number } }[]> {
  const jsm = await jetstreamManager(nc!);
  const info = await jsm.streams.info(stream);
  const out = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    const m = await jsm.streams.getMessage(stream, { seq });
    if (!m) continue;
    out.push({ subject: m.subject, msgId: m.header.get('Nats-Msg-Id'), body: m.json<{ eventId: string; version: number }>() });
  }
  return out;
}

const targets = [
  { name: 'sqlite', url: () => `sqlite:${join(dir.path, `${uniqueName('outbox')}.db`)}`, db: () => '' },
  { name: 'mongodb', url: () => mongo?.url ?? null, db: () => uniqueName('outbox') },
];

describe('outbox to the bus', () => {
  for (const t of targets) {
    it(`${t.name}: a process killed between commit and publish; after restart each event is on the bus exactly once`, async (ctx) => {
      if (!nc) return ctx.skip(natsReason);
      const url = t.url();
      if (!url) return ctx.skip(mongoReason);
      const db = t.db();
      const prefix = uniqueName('k').toLowerCase();
      const child = spawn(process.execPath, ['--no-warnings', CRASHER], {
        env: { ...process.env, KEEL_STATE: url, STATE_DB: db, NATS_URL: nats!.url, PREFIX: prefix },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const signal = await new Promise<NodeJS.Signals | null>((r) => child.on('exit', (_c, s) => r(s)));
      expect(signal, stderr).toBe('SIGKILL');
      const ids = JSON.parse(stdout.trim().split('\n')[0]!) as string[];
      expect(ids).toHaveLength(4);
      const stream = eventStreamName(prefix);
      // the crash left exactly one event on the bus, and all four still pending in the store
      expect((await streamMessages(stream)).map((m) => m.msgId)).toEqual([ids[0]]);

      const store = await openStore(url, { types: ALL_ENTITY_TYPES, ...(db ? { mongodb: { database: db } } : {}) });
      try {
        expect((await store.pendingEvents()).map((e) => e.eventId)).toEqual(ids);
        const relay = startOutboxRelay(store, natsEventPublisher(nc!), { prefix, intervalMs: 50 });
        await waitFor(async () => (await store.pendingEvents()).length === 0, { what: 'the relay to publish what the crash left' });
        expect(await relay.flush()).toBe(0);
        await relay.stop();
        // a second relay (another process, or a lost mark) publishes everything again: deduped
        const pub = natsEventPublisher(nc!);
        for (const e of (await store.changes({ since: 0 })).events) {
          await pub.publish(eventSubject(prefix, e.entityType, e.entityId), encodeEvent(e), { msgId: e.eventId, headers: eventHeaders(e) });
        }
        const msgs = await streamMessages(stream);
        expect(msgs.map((m) => m.msgId)).toEqual(ids); // once each, in commit order
        expect(msgs.map((m) => m.body.eventId)).toEqual(ids);
        expect(msgs.map((m) => m.subject)).toEqual([`${prefix}.evt.ticket.T-1`, `${prefix}.evt.ticket.T-1`, `${prefix}.evt.ticket.T-1`, `${prefix}.evt.customer.c-1`]);
      } finally {
        await store.close();
      }
    });
  }

  it('a running relay publishes each commit at once, with headers, and ensureEventStream is idempotent', async (ctx) => {
    if (!nc) return ctx.skip(natsReason);
    const prefix = uniqueName('k').toLowerCase();
    expect(await ensureEventStream(nc, prefix)).toBe(eventStreamName(prefix));
    expect(await ensureEventStream(nc, prefix)).toBe(eventStreamName(prefix));
    const store = await openStore(`sqlite:${join(dir.path, `${uniqueName('live')}.db`)}`, { types: ALL_ENTITY_TYPES });
    const relay = startOutboxRelay(store, natsEventPublisher(nc), { prefix, intervalMs: 60_000 });
    try {
      const r = await store.append('task', 'live-1', 0, [{ type: 'created', data: { title: 'ship it' } }], { actor: { kind: 'human', id: 'op' }, correlationId: 'run-7', traceId: 'abc' });
      await waitFor(async () => (await store.pendingEvents()).length === 0, { timeoutMs: 5_000, what: 'immediate publish' });
      const jsm = await jetstreamManager(nc);
      const m = await jsm.streams.getMessage(eventStreamName(prefix), { seq: 1 });
      expect(m!.subject).toBe(`${prefix}.evt.task.live-1`);
      expect(m!.header.get('Nats-Msg-Id')).toBe(r.events[0]!.eventId);
      expect(m!.header.get('Keel-Correlation-Id')).toBe('run-7');
      expect(m!.header.get('Keel-Trace-Id')).toBe('abc');
      expect(m!.json<{ version: number; type: string }>()).toMatchObject({ version: 1, type: 'created', entityType: 'task' });
    } finally {
      await relay.stop();
      await store.close();
    }
  });
});
