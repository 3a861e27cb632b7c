import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { headers as natsHeaders, type NatsConnection } from '@nats-io/nats-core';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { context, trace } from '@opentelemetry/api';
import {
  connectBus, createBus, defineMessage, keelTopology, provisionBus, PermanentError, HEADERS, isBusError,
  type Bus, type DeadLetter, type Envelope,
} from '../../bus/index.ts';
import { natsSuite, uniqueName, waitFor } from '../helpers/index.ts';

const Work = defineMessage('test.work', z.object({ n: z.number().int(), note: z.string().optional() }));
const Echo = defineMessage('test.echo', z.object({ text: z.string() }));
const EchoReply = defineMessage('test.echo.reply', z.object({ text: z.string(), by: z.string() }));

const suite = natsSuite('bus');
const conns = { push: (nc: NatsConnection) => suite.defer(() => nc.close()) };

async function newBus(): Promise<Bus> {
  const nc = await connectBus({ servers: suite.nats!.url });
  conns.push(nc);
  const bus = createBus(nc, { prefix: uniqueName('k') });
  await bus.provision();
  return bus;
}

async function readDlq(bus: Bus, capability: string, expected: number): Promise<DeadLetter[]> {
  const jsm = await jetstreamManager(bus.nc);
  await waitFor(async () => (await jsm.streams.info(bus.subjects.streams.dlq)).state.messages >= expected, { timeoutMs: 20_000, what: `${expected} dead letters` });
  const out: DeadLetter[] = [];
  const info = await jsm.streams.info(bus.subjects.streams.dlq);
  for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
    const m = await jsm.streams.getMessage(bus.subjects.streams.dlq, { seq });
    if (m && m.subject === bus.subjects.dlq(capability)) out.push(m.json<DeadLetter>());
  }
  return out;
}

describe('bus on a real nats-server', () => {
  it('provisions streams and buckets idempotently; applies a changed definition; refuses an impossible one', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const bus = await newBus(); // provisioned once already
    const again = await bus.provision();
    expect(again.every((r) => r.action === 'unchanged')).toBe(true);
    expect(again.map((r) => r.resource)).toEqual(expect.arrayContaining([`stream ${bus.subjects.streams.tasks}`, `kv ${bus.subjects.registryBucket}`]));

    const topo = keelTopology({ prefix: bus.subjects.prefix });
    topo.streams[1]!.maxAgeMs = 7 * 86_400_000;
    const changed = await provisionBus(bus.nc, topo);
    expect(changed.find((r) => r.resource === `stream ${bus.subjects.streams.evt}`)).toMatchObject({ action: 'updated' });

    topo.streams[0]!.retention = 'limits';
    const err = await provisionBus(bus.nc, topo).catch((e: unknown) => e);
    expect(isBusError(err, 'BUS_PROVISION_CONFLICT')).toBe(true);
    expect((err as Error).message).toMatch(/retention/);
  });

  it('delivers a message published twice with the same Nats-Msg-Id once', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const bus = await newBus();
    const subject = bus.subjects.task('dedupe');
    const a = await bus.publish(subject, Work, { n: 1 }, { id: 'order-42' });
    const b = await bus.publish(subject, Work, { n: 1 }, { id: 'order-42' });
    const c = await bus.publish(subject, Work, { n: 2 });
    expect(a.duplicate).toBe(false);
    expect(b.duplicate).toBe(true);
    expect(b.seq).toBe(a.seq);
    const seen: Envelope<{ n: number }>[] = [];
    const consumer = await bus.consumeTasks('dedupe', { accepts: [Work], handler: async (e) => void seen.push(e) });
    await waitFor(() => seen.length >= 2, { what: 'two deliveries' });
    await new Promise((r) => setTimeout(r, 300));
    await consumer.stop();
    expect(seen.map((e) => e.id).sort()).toEqual([c.id, 'order-42'].sort());
  });

  it('retries a failing handler with backoff, then dead-letters it with the reason after the last attempt', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const bus = await newBus();
    const attempts: number[] = [];
    const consumer = await bus.consumeTasks('poison', {
      accepts: [Work],
      maxDeliver: 3,
      backoff: { initialMs: 50, maxMs: 200 },
      handler: async (e) => {
        attempts.push(e.deliveryCount);
        throw new Error(`cannot handle n=${e.data.n}`);
      },
    });
    const pub = await bus.publish(bus.subjects.task('poison'), Work, { n: 7 }, { correlationId: 'run-1' });
    const [letter] = await readDlq(bus, 'poison', 1);
    await consumer.stop();
    expect(attempts).toEqual([1, 2, 3]);
    expect(letter).toMatchObject({ reason: 'max_deliveries', deliveries: 3, error: { message: 'cannot handle n=7' } });
    expect(letter!.headers[HEADERS.msgId]).toBe(pub.id);
    expect(letter!.headers[HEADERS.correlationId]).toBe('run-1');
    expect(JSON.parse(letter!.body)).toEqual({ n: 7 });
    expect(consumer.stats).toMatchObject({ retried: 2, deadLettered: 1 });
  });

  it('dead-letters a permanent error at once, without retries', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const bus = await newBus();
    let calls = 0;
    const consumer = await bus.consumeTasks('perm', {
      accepts: [Work],
      handler: async () => {
        calls++;
        throw new PermanentError('customer does not exist', { code: 'NO_CUSTOMER' });
      },
    });
    await bus.publish(bus.subjects.task('perm'), Work, { n: 1 });
    const [letter] = await readDlq(bus, 'perm', 1);
    await consumer.stop();
    expect(calls).toBe(1);
    expect(letter).toMatchObject({ reason: 'permanent_error', error: { code: 'NO_CUSTOMER' } });
  });

  it('sends bad input to the dead-letter stream with its reason and carries on', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const bus = await newBus();
    const js = jetstream(bus.nc);
    const subject = bus.subjects.task('hostile');
    const handled: number[] = [];
    const consumer = await bus.consumeTasks('hostile', { accepts: [Work], maxPayloadBytes: 1024, handler: async (e) => void handled.push(e.data.n) });
    const raw = async (body: string | Uint8Array, hdr: Record<string, string>) => {
      const h = natsHeaders();
      for (const [k, v] of Object.entries(hdr)) h.set(k, v);
      await js.publish(subject, body, { headers: h });
    };
    const ok = { [HEADERS.msgId]: '', [HEADERS.type]: 'test.work' };
    await raw('{"n": 1,', { ...ok, [HEADERS.msgId]: 'bad-json' });
    await raw(JSON.stringify({ n: 'one' }), { ...ok, [HEADERS.msgId]: 'bad-schema' });
    await raw(JSON.stringify({ n: 1 }), { [HEADERS.msgId]: 'bad-type', [HEADERS.type]: 'test.unknown' });
    await raw(JSON.stringify({ n: 1, note: 'x'.repeat(4096) }), { ...ok, [HEADERS.msgId]: 'too-big' });
    await raw(JSON.stringify({ n: 1 }), { 'X-Other': 'no keel headers' });
    await raw(new Uint8Array([0xff, 0xfe, 0x00]), { ...ok, [HEADERS.msgId]: 'not-utf8' });
    await bus.publish(subject, Work, { n: 99 });
    const letters = await readDlq(bus, 'hostile', 6);
    await waitFor(() => handled.includes(99), { what: 'the good message' });
    await consumer.stop();
    const byId = Object.fromEntries(letters.map((l) => [l.headers[HEADERS.msgId] ?? '(none)', l]));
    expect(byId['bad-json']!.reason).toBe('malformed_json');
    expect(byId['bad-schema']!.reason).toBe('schema_mismatch');
    expect(byId['bad-schema']!.error.message).toMatch(/^schema_mismatch: n:/);
    expect(byId['bad-type']!.reason).toBe('unknown_type');
    expect(byId['too-big']!.reason).toBe('payload_too_large');
    expect(byId['(none)']!.reason).toBe('missing_headers');
    expect(byId['(none)']!.headers['X-Other']).toBe('no keel headers');
    expect(byId['not-utf8']).toMatchObject({ reason: 'malformed_json', bodyEncoding: 'base64', body: Buffer.from([0xff, 0xfe, 0x00]).toString('base64') });
    expect(consumer.stats.deadLetterReasons).toEqual({ malformed_json: 2, schema_mismatch: 1, unknown_type: 1, payload_too_large: 1, missing_headers: 1 });
    expect(handled).toEqual([99]);
  });

  it('refuses to publish a body that fails its schema', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const bus = await newBus();
    const err = await bus.publish(bus.subjects.task('x'), Work, { n: 1.5 } as never).catch((e: unknown) => e);
    expect(isBusError(err, 'BUS_INVALID_MESSAGE')).toBe(true);
    expect((err as Error).message).toMatch(/n:/);
  });

  it('bounds in-flight work with the concurrency limit and splits work between two replicas', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const bus = await newBus();
    const busB = createBus(await connectBus({ servers: suite.nats.url }), { prefix: bus.subjects.prefix });
    conns.push(busB.nc);
    const by: Record<string, number> = { a: 0, b: 0 };
    let active = 0;
    let peak = 0;
    const mk = (name: string, b: Bus) =>
      b.consumeTasks('split', {
        accepts: [Work],
        concurrency: 2,
        handler: async () => {
          active++;
          peak = Math.max(peak, active);
          await new Promise((r) => setTimeout(r, 5));
          by[name]!++;
          active--;
        },
      });
    const [ca, cb] = await Promise.all([mk('a', bus), mk('b', busB)]);
    for (let i = 0; i < 200; i++) await bus.publish(bus.subjects.task('split'), Work, { n: i });
    await waitFor(() => by.a! + by.b! === 200, { timeoutMs: 30_000, what: '200 handled' });
    await Promise.all([ca.stop(), cb.stop()]);
    expect(by.a! + by.b!).toBe(200);
    expect(by.a).toBeGreaterThan(20);
    expect(by.b).toBeGreaterThan(20);
    expect(peak).toBeLessThanOrEqual(4);
  });

  it('continues the publisher\'s trace in the consumer', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const exporter = new InMemorySpanExporter();
    const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
    const cm = new AsyncLocalStorageContextManager().enable();
    context.setGlobalContextManager(cm);
    trace.setGlobalTracerProvider(provider);
    try {
      const bus = await newBus();
      let seen: { traceId: string; parent?: string } | undefined;
      const consumer = await bus.consumeTasks('traced', {
        accepts: [Work],
        handler: async () => {
          const span = trace.getActiveSpan() as unknown as { spanContext(): { traceId: string }; parentSpanContext?: { spanId: string } };
          seen = { traceId: span.spanContext().traceId, parent: span.parentSpanContext?.spanId };
        },
      });
      const root = provider.getTracer('test').startSpan('operator.request');
      await context.with(trace.setSpan(context.active(), root), () => bus.publish(bus.subjects.task('traced'), Work, { n: 1 }));
      root.end();
      await waitFor(() => !!seen, { what: 'the handler' });
      await consumer.stop();
      const spans = exporter.getFinishedSpans();
      const publish = spans.find((s) => s.name.startsWith('publish '))!;
      const process_ = spans.find((s) => s.name.startsWith('process '))!;
      expect(seen!.traceId).toBe(root.spanContext().traceId);
      expect(publish.parentSpanContext?.spanId).toBe(root.spanContext().spanId);
      expect(process_.parentSpanContext?.spanId).toBe(publish.spanContext().spanId);
      expect(seen!.parent).toBe(publish.spanContext().spanId);
    } finally {
      trace.disable();
      context.disable();
      await provider.shutdown();
    }
  });

  it('answers requests, and times out or reports no responders clearly', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const bus = await newBus();
    const none = await bus.request('echo', Echo, { text: 'hi' }, EchoReply, { timeoutMs: 500 }).catch((e: unknown) => e);
    expect(isBusError(none, 'BUS_NO_RESPONDERS')).toBe(true);
    const svc = bus.serve('echo', Echo, async (e) => {
      if (e.data.text === 'slow') await new Promise((r) => setTimeout(r, 1_000));
      if (e.data.text === 'fail') throw new PermanentError('nope', { code: 'NOPE' });
      return { text: e.data.text.toUpperCase(), by: 'svc' };
    });
    expect(await bus.request('echo', Echo, { text: 'hi' }, EchoReply)).toEqual({ text: 'HI', by: 'svc' });
    const slow = await bus.request('echo', Echo, { text: 'slow' }, EchoReply, { timeoutMs: 200 }).catch((e: unknown) => e);
    expect(isBusError(slow, 'BUS_REQUEST_TIMEOUT')).toBe(true);
    expect((slow as Error).message).toMatch(/200 ms/);
    const failed = await bus.request('echo', Echo, { text: 'fail' }, EchoReply).catch((e: unknown) => e);
    expect(failed).toMatchObject({ code: 'NOPE', message: 'nope', retryable: false });
    svc.stop();
  });

  it('says clearly when the server cannot be reached', async () => {
    const err = await connectBus({ servers: 'nats://127.0.0.1:1', connectTimeoutMs: 500 }).catch((e: unknown) => e);
    expect(isBusError(err, 'BUS_UNAVAILABLE')).toBe(true);
    expect((err as Error).message).toMatch(/cannot reach NATS at nats:\/\/127\.0\.0\.1:1/);
  });
});
