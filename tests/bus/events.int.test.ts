import { describe, expect, it } from 'vitest';
import { jetstreamManager, AckPolicy, DeliverPolicy } from '@nats-io/jetstream';
import { nanos, type NatsConnection } from '@nats-io/nats-core';
import {
  connectBus, createBus, ensureEventStream, eventStreamName, eventSubject, keelTopology, natsEventPublisher, provisionBus, subjects,
  type Bus, type EntityEventMessage,
} from '../../bus/index.ts';
import { natsSuite, uniqueName, waitFor } from '../helpers/index.ts';

const suite = natsSuite('bus-events');
const conns = { push: (nc: NatsConnection) => suite.defer(() => nc.close()) };

async function newBus(provision = true): Promise<Bus> {
  const nc = await connectBus({ servers: suite.nats!.url });
  conns.push(nc);
  const bus = createBus(nc, { prefix: uniqueName('k').toLowerCase() });
  if (provision) await bus.provision();
  return bus;
}

let n = 0;
async function publishEvent(bus: Bus, entityType: string, entityId: string, body: Record<string, unknown>): Promise<string> {
  const eventId = `e-${++n}-${uniqueName('x')}`;
  await natsEventPublisher(bus.nc).publish(eventSubject(bus.subjects.prefix, entityType, entityId), new TextEncoder().encode(JSON.stringify({ eventId, entityType, entityId, ...body })), {
    msgId: eventId,
    headers: { 'Keel-Entity-Type': entityType },
  });
  return eventId;
}

describe('subjects', () => {
  it('names entity-event wildcards and run-finished notices (the latter is a contract)', () => {
    const s = subjects('acme');
    expect(s.evt('ticket', 'T-1')).toBe('acme.evt.ticket.T-1');
    expect(s.evtAll('ticket')).toBe('acme.evt.ticket.*');
    expect(s.runFinished('completed')).toBe('acme.run.finished.completed');
    expect(s.runFinishedAll).toBe('acme.run.finished.*');
    expect(eventSubject('acme', 'ticket', 'T-1')).toBe(s.evt('ticket', 'T-1'));
    expect(eventStreamName('acme')).toBe('ACME_EVT');
    expect(() => s.evtAll('a.b')).toThrow(/entity type/);
  });
});

describe('entity events on a real nats-server', () => {
  it('the event stream is declared once: ensureEventStream and bus.provision() agree (10 min duplicate window)', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const bus = await newBus(false);
    const p = bus.subjects.prefix;
    expect(await ensureEventStream(bus.nc, p)).toBe(bus.subjects.streams.evt);
    expect(await ensureEventStream(bus.nc, p)).toBe(bus.subjects.streams.evt);
    const report = await provisionBus(bus.nc, keelTopology({ prefix: p }));
    expect(report.find((r) => r.resource === `stream ${bus.subjects.streams.evt}`)).toMatchObject({ action: 'unchanged' });
    const info = await (await jetstreamManager(bus.nc)).streams.info(bus.subjects.streams.evt);
    expect(info.config.duplicate_window).toBe(nanos(10 * 60_000));
    expect(info.config.subjects).toEqual([`${p}.evt.>`]);
  });

  it('consumeEvents: an event on <p>.evt.t.1 reaches the handler; a failing handler gets it redelivered; the durable keeps its place', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const bus = await newBus();
    const before = await publishEvent(bus, 't', '0', { type: 'created' }); // before the consumer: not delivered (deliver new)
    const seen: EntityEventMessage[] = [];
    const errors: unknown[] = [];
    let failFirst = true;
    const opts = {
      durable: 'trigger_test',
      entityType: 't',
      retryDelayMs: 100,
      handler: async (e: EntityEventMessage) => {
        seen.push(e);
        if (e.entityId === '2' && failFirst) {
          failFirst = false;
          throw new Error('not yet');
        }
      },
      onError: (err: unknown) => void errors.push(err),
    };
    const c = await bus.consumeEvents(opts);

    const info = await (await jetstreamManager(bus.nc)).consumers.info(bus.subjects.streams.evt, 'trigger_test');
    expect(info.config).toMatchObject({
      filter_subject: `${bus.subjects.prefix}.evt.t.*`, ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.New, max_deliver: 10, ack_wait: nanos(30_000),
    });

    const one = await publishEvent(bus, 't', '1', { type: 'created', n: 1 });
    await publishEvent(bus, 'other', '1', { type: 'created' }); // another entity type: not for this consumer
    await waitFor(() => seen.length >= 1, { what: 'the event to reach the handler' });
    expect(seen[0]).toMatchObject({ subject: `${bus.subjects.prefix}.evt.t.1`, entityType: 't', entityId: '1', deliveryCount: 1 });
    expect(seen[0]!.json()).toMatchObject({ eventId: one, n: 1 });
    expect(seen[0]!.headers['Keel-Entity-Type']).toBe('t');

    const two = await publishEvent(bus, 't', '2', { type: 'updated' });
    await waitFor(() => seen.filter((e) => e.entityId === '2').length >= 2, { timeoutMs: 10_000, what: 'the failed event to come back' });
    const twos = seen.filter((e) => e.entityId === '2');
    expect(twos.map((e) => e.deliveryCount)).toEqual([1, 2]);
    expect(twos.every((e) => e.json<{ eventId: string }>().eventId === two)).toBe(true);
    expect(errors).toHaveLength(1);
    expect(c.stats).toMatchObject({ handled: 2, retried: 1 });
    await c.stop();

    // published while nobody consumed: the same durable picks it up on restart
    const three = await publishEvent(bus, 't', '3', { type: 'created' });
    const again = await bus.consumeEvents(opts);
    await waitFor(() => seen.some((e) => e.entityId === '3'), { what: 'the event published while stopped' });
    await new Promise((r) => setTimeout(r, 200));
    await again.stop();
    const ids = seen.map((e) => e.json<{ eventId: string }>().eventId);
    expect(ids).not.toContain(before);
    expect(ids.filter((id) => id === three)).toHaveLength(1);
    expect(seen.every((e) => e.entityType === 't')).toBe(true);
  });

  it('subscribeEvents: live events of one entity type; a failing handler is reported, not thrown', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const bus = await newBus();
    const seen: EntityEventMessage[] = [];
    const errors: unknown[] = [];
    const sub = bus.subscribeEvents('ticket', async (e) => {
      seen.push(e);
      if (e.entityId === 'bad') throw new Error('boom');
    }, { onError: (err) => void errors.push(err) });
    try {
      await bus.nc.flush();
      await publishEvent(bus, 'ticket', 'T-1', { type: 'reply_sent' });
      await publishEvent(bus, 'customer', 'c-1', { type: 'created' });
      await publishEvent(bus, 'ticket', 'bad', { type: 'reply_sent' });
      await waitFor(() => seen.length >= 2 && errors.length >= 1, { what: 'two ticket events' });
      expect(seen.map((e) => [e.entityType, e.entityId])).toEqual([['ticket', 'T-1'], ['ticket', 'bad']]);
      expect((errors[0] as Error).message).toBe('boom');
    } finally {
      sub.stop();
    }
  });
});
