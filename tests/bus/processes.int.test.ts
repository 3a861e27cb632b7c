import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { z } from 'zod';
import type { NatsConnection } from '@nats-io/nats-core';
import { connectBus, createBus, defineMessage, listAgents, watchAgents, type Bus, type RegistryEvent } from '../../bus/index.ts';
import { natsSuite, startJaeger, getTrace, uniqueName, waitFor, type JaegerHandle } from '../helpers/index.ts';
import { context, trace } from '@opentelemetry/api';
import { initTelemetry, getTracer } from '../../observability/index.ts';
import { collectEvents, spawnWorker, killAndWait, type WorkerEvent } from './helpers.ts';

const Work = defineMessage('test.work', z.object({ n: z.number(), sleepMs: z.number().default(0) }));

const suite = natsSuite('bus');
const conns = { push: (nc: NatsConnection) => suite.defer(() => nc.close()) };

async function newBus(opts: { registryTtlMs?: number } = {}): Promise<Bus> {
  const nc = await connectBus({ servers: suite.nats!.url });
  conns.push(nc);
  const bus = createBus(nc, { prefix: uniqueName('p') });
  await bus.provision(opts);
  return bus;
}

const waitEvent = (events: WorkerEvent[], pred: (e: WorkerEvent) => boolean, what: string, timeoutMs = 20_000) =>
  waitFor(() => events.some(pred), { timeoutMs, what }).then(() => events.find(pred)!);

describe('bus across OS processes', () => {
  it('a handler process killed mid-message: the message is redelivered to and handled by another replica', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const bus = await newBus();
    const ev = collectEvents(bus.nc, bus.subjects.prefix);
    const env = { NATS_URL: suite.nats.url, PREFIX: bus.subjects.prefix, CAPABILITY: 'crashy', ACK_WAIT_MS: '2000' };
    const a = spawnWorker({ ...env, WORKER: 'a' });
    await waitEvent(ev.events, (e) => e.worker === 'a' && e.event === 'ready', 'worker a ready');
    const pub = await bus.publish(bus.subjects.task('crashy'), Work, { n: 1, sleepMs: 60_000 });
    await waitEvent(ev.events, (e) => e.worker === 'a' && e.event === 'start' && e.id === pub.id, 'worker a to start the task');
    await killAndWait(a, 'SIGKILL');
    // b was not running when a took the message: only redelivery can bring it there
    const b = spawnWorker({ ...env, WORKER: 'b' });
    try {
      const started = await waitEvent(ev.events, (e) => e.worker === 'b' && e.event === 'start' && e.id === pub.id, 'redelivery to worker b', 30_000);
      expect(started.delivery).toBe(2);
      // shorten the rest: b's sleep would take a minute, so only check that it took the message
      expect(ev.events.filter((e) => e.event === 'done' && e.id === pub.id)).toHaveLength(0);
    } finally {
      await killAndWait(b, 'SIGKILL');
      ev.stop();
    }
  });

  it('two replica processes split the work', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const bus = await newBus();
    const ev = collectEvents(bus.nc, bus.subjects.prefix);
    const env = { NATS_URL: suite.nats.url, PREFIX: bus.subjects.prefix, CAPABILITY: 'shared' };
    const workers = [spawnWorker({ ...env, WORKER: 'r1' }), spawnWorker({ ...env, WORKER: 'r2' })];
    try {
      await waitFor(() => ev.events.filter((e) => e.event === 'ready').length === 2, { what: 'two replicas ready' });
      for (let i = 0; i < 100; i++) await bus.publish(bus.subjects.task('shared'), Work, { n: i, sleepMs: 10 });
      await waitFor(() => ev.events.filter((e) => e.event === 'done').length === 100, { timeoutMs: 30_000, what: '100 done' });
      const done = ev.events.filter((e) => e.event === 'done');
      expect(new Set(done.map((e) => e.n)).size).toBe(100);
      const r1 = done.filter((e) => e.worker === 'r1').length;
      expect(r1).toBeGreaterThan(10);
      expect(100 - r1).toBeGreaterThan(10);
    } finally {
      await Promise.all(workers.map((w) => killAndWait(w, 'SIGTERM')));
      ev.stop();
    }
  });

  it('a killed instance\'s capability entry is gone within its TTL; a stopped one at once; `keel agents` lists the live ones', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const ttlMs = 2_000;
    const bus = await newBus({ registryTtlMs: ttlMs });
    const ev = collectEvents(bus.nc, bus.subjects.prefix);
    const watch = await watchAgents(bus.nc, bus.subjects.registryBucket);
    const seen: RegistryEvent[] = [];
    void (async () => {
      for await (const e of watch) seen.push(e);
    })();
    const env = { NATS_URL: suite.nats.url, PREFIX: bus.subjects.prefix, CAPABILITY: 'announce', REGISTRY: '1' };
    const k = spawnWorker({ ...env, WORKER: 'killed' });
    const s = spawnWorker({ ...env, WORKER: 'stopped' });
    try {
      await waitFor(async () => (await listAgents(bus.nc, bus.subjects.registryBucket)).length === 2, { what: 'two announcements' });
      const cli = spawnSync(process.execPath, ['cli/keel.ts', 'agents', '--json'], { env: { ...process.env, KEEL_NATS_URL: suite.nats.url, KEEL_SUBJECT_PREFIX: bus.subjects.prefix }, encoding: 'utf8' });
      expect(cli.status).toBe(0);
      const listed = JSON.parse(cli.stdout) as { agents: Array<{ instanceId: string; capabilities: Array<{ name: string }> }> };
      expect(listed.agents.map((a) => a.instanceId).sort()).toEqual(['killed', 'stopped']);
      expect(listed.agents[0]!.capabilities[0]!.name).toBe('announce');

      await killAndWait(s, 'SIGTERM');
      await waitFor(() => seen.some((e) => e.op === 'gone' && e.instanceId === 'stopped'), { timeoutMs: 3_000, what: 'stopped instance withdrawn' });

      const t0 = Date.now();
      await killAndWait(k, 'SIGKILL');
      await waitFor(async () => (await listAgents(bus.nc, bus.subjects.registryBucket)).length === 0, { timeoutMs: ttlMs * 3, what: 'killed instance to expire' });
      const gone = Date.now() - t0;
      expect(gone).toBeLessThanOrEqual(ttlMs + 1_500);
      await waitFor(() => seen.some((e) => e.op === 'gone' && e.instanceId === 'killed'), { timeoutMs: 5_000, what: 'watchers told of the expiry' });
    } finally {
      watch.stop();
      await killAndWait(k);
      await killAndWait(s);
      ev.stop();
    }
  });

  describe('with a trace backend', () => {
    let jaeger: JaegerHandle | undefined;
    let jaegerSkip = '';
    beforeAll(async () => {
      const j = await startJaeger();
      if (j.ok) jaeger = j.server;
      else jaegerSkip = j.reason;
    });
    afterAll(async () => jaeger?.stop());

    it('a trace started before publish continues in the consumer process (seen in Jaeger)', async (ctx) => {
      if (!suite.nats) return ctx.skip(suite.skip);
      if (!jaeger) return ctx.skip(jaegerSkip);
      const bus = await newBus();
      const ev = collectEvents(bus.nc, bus.subjects.prefix);
      const w = spawnWorker({ NATS_URL: suite.nats.url, PREFIX: bus.subjects.prefix, CAPABILITY: 'traced', WORKER: 'tw', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: jaeger.otlpTracesUrl });
      try {
        await waitEvent(ev.events, (e) => e.worker === 'tw' && e.event === 'ready', 'traced worker ready');
        // this test process is the publisher: its spans go to Jaeger as service bus-test-publisher
        const tel = initTelemetry({ serviceName: 'bus-test-publisher', env: { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: jaeger.otlpTracesUrl } });
        const root = getTracer('test').startSpan('operator.request');
        const traceId = root.spanContext().traceId;
        const pub = await context.with(trace.setSpan(context.active(), root), () => bus.publish(bus.subjects.task('traced'), Work, { n: 1, sleepMs: 0 }));
        root.end();
        await tel.flush();
        const started = await waitEvent(ev.events, (e) => e.event === 'start' && e.id === pub.id, 'the traced task');
        expect(started.traceId).toBe(traceId);
        await killAndWait(w, 'SIGTERM'); // flushes its spans
        let found: Awaited<ReturnType<typeof getTrace>>;
        await waitFor(async () => {
          found = await getTrace(jaeger!.queryUrl, traceId);
          return (found?.spans.length ?? 0) >= 3;
        }, { timeoutMs: 15_000, what: 'the whole trace in Jaeger' });
        const service = (s: { processID: string }) => found!.processes[s.processID]!.serviceName;
        const byName = (n: string) => found!.spans.find((s) => s.operationName === n)!;
        const rootSpan = byName('operator.request');
        const publish = byName(`publish ${bus.subjects.task('traced')}`);
        const processSpan = byName(`process ${bus.subjects.task('traced')}`);
        expect(service(rootSpan)).toBe('bus-test-publisher');
        expect(service(publish)).toBe('bus-test-publisher');
        expect(service(processSpan)).toBe('bus-test-tw');
        expect(publish.references[0]).toMatchObject({ refType: 'CHILD_OF', spanID: rootSpan.spanID });
        expect(processSpan.references[0]).toMatchObject({ refType: 'CHILD_OF', traceID: traceId, spanID: publish.spanID });
        await tel.shutdown();
      } finally {
        await killAndWait(w);
        ev.stop();
      }
    });
  });
});
