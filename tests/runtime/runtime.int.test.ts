import { describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { z } from 'zod';
import { jetstream } from '@nats-io/jetstream';
import { context, trace } from '@opentelemetry/api';
import { REPO_ROOT } from '../../config/index.ts';
import { connectBus, createBus, defineMessage, listAgents, isBusError, type Bus } from '../../bus/index.ts';
import { IdempotencyLeaseLostError, openStore, type StateStore } from '../../shared-state/index.ts';
import { defineAgent, defineCapability, natsPermissionsFor, runAgent, taskType } from '../../runtime/index.ts';
import { initTelemetry, getTracer } from '../../observability/index.ts';
import { natsSuite, startNats, startJaeger, getTrace, uniqueName, waitFor, freePort } from '../helpers/index.ts';
import { startProvider } from './provider.ts';
import { ALL_ENTITY_TYPES } from '../helpers/types.ts';

const PAYER = join(REPO_ROOT, 'tests', 'runtime', 'fixtures', 'payer.ts');
const Pay = defineMessage(taskType('pay'), z.object({ orderId: z.string(), amount: z.number(), sleepBeforeMs: z.number().optional(), sleepAfterMs: z.number().optional() }));

const suite = natsSuite('agents');
const closers = { push: (fn: () => Promise<unknown>) => suite.defer(fn) };

function agentProcess(spec: string, env: Record<string, string>): ChildProcess {
  const child = spawn(process.execPath, [join(REPO_ROOT, 'cli', 'keel.ts'), 'agent', 'start', spec], {
    env: { ...process.env, KEEL_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  closers.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
    }
  });
  return child;
}

async function setup(): Promise<{ bus: Bus; prefix: string; state: string; store: StateStore }> {
  const prefix = uniqueName('a');
  const nc = await connectBus({ servers: suite.nats!.url });
  closers.push(() => nc.close());
  const bus = createBus(nc, { prefix });
  await bus.provision();
  const state = `sqlite:${join(suite.dir, `${prefix}.db`)}`;
  const store = await openStore(state, { types: ALL_ENTITY_TYPES });
  closers.push(() => store.close());
  return { bus, prefix, state, store };
}

describe('agent runtime', () => {
  for (const when of ['before', 'after'] as const) {
    it(`SIGKILL of an agent mid-task (${when} its side effect): another replica completes it and the effect happened once`, async (ctx) => {
      if (!suite.nats) return ctx.skip(suite.skip);
      const { bus, prefix, state, store } = await setup();
      const provider = await startProvider();
      closers.push(() => provider.close());
      const env = { KEEL_NATS_URL: suite.nats.url, KEEL_SUBJECT_PREFIX: prefix, KEEL_STATE: state, PROVIDER_URL: provider.url };
      const a = agentProcess(PAYER, env);
      await waitFor(async () => (await listAgents(bus.nc, bus.subjects.registryBucket)).length === 1, { timeoutMs: 30_000, what: 'replica a' });
      const input = when === 'before' ? { orderId: 'o-1', amount: 12.5, sleepBeforeMs: 60_000 } : { orderId: 'o-1', amount: 12.5, sleepAfterMs: 60_000 };
      await bus.publish(bus.subjects.task('pay'), Pay, input, { customer: 'cust-9', correlationId: 'run-1' });
      const mark = when === 'before' ? '/started' : '/charged';
      await waitFor(() => provider.calls.some((c) => c.path === mark && c.body.pid === a.pid), { timeoutMs: 20_000, what: `replica a at ${mark}` });
      a.kill('SIGKILL');
      await new Promise((r) => a.once('exit', r));
      const b = agentProcess(PAYER, env);
      await waitFor(() => provider.calls.some((c) => c.path === '/started' && c.body.pid === b.pid), { timeoutMs: 30_000, what: 'redelivery to replica b' });
      await waitFor(() => provider.calls.some((c) => c.path === '/charged' && c.body.pid === b.pid), { timeoutMs: 30_000, what: 'replica b to finish the task' });
      await waitFor(async () => (await store.costs({ agent: 'payer' })).totals.count === 1, { what: 'the completed task\'s cost record' });
      const charges = provider.calls.filter((c) => c.path === '/charge');
      expect(provider.applied.size).toBe(1);
      // after the effect was recorded, the second replica did not even call the provider
      expect(charges.map((c) => c.body.pid)).toEqual([when === 'before' ? b.pid : a.pid]);
      const rec = await store.getIdempotency([...provider.applied.keys()][0]!);
      expect(rec?.status).toBe('completed');
      const report = await store.costs({ agent: 'payer', records: 5 });
      expect(report.records[0]).toMatchObject({ customerId: 'cust-9', runId: 'run-1', capability: 'pay' });
      b.kill('SIGKILL');
    }, 90_000);
  }

  it('a LangGraph agent killed between two nodes resumes at the second node, not from the start', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const { bus, prefix, state, store } = await setup();
    const provider = await startProvider();
    closers.push(() => provider.close());
    const GRAPH = join(REPO_ROOT, 'tests', 'runtime', 'fixtures', 'graph-agent.ts');
    const env = { KEEL_NATS_URL: suite.nats.url, KEEL_SUBJECT_PREFIX: prefix, KEEL_STATE: state, PROVIDER_URL: provider.url };
    const a = agentProcess(GRAPH, env);
    await waitFor(async () => (await listAgents(bus.nc, bus.subjects.registryBucket)).length === 1, { timeoutMs: 30_000, what: 'the writer agent' });
    const Write = defineMessage(taskType('content.write'), z.object({ topic: z.string() }));
    await bus.publish(bus.subjects.task('content.write'), Write, { topic: 'pricing' }, { idempotencyKey: 'write-1' });
    await waitFor(() => provider.calls.some((c) => c.body.node === 'polish' && c.body.pid === a.pid), { timeoutMs: 20_000, what: 'the first process inside the second node' });
    a.kill('SIGKILL');
    await new Promise((r) => a.once('exit', r));
    const b = agentProcess(GRAPH, { ...env, RESUMED: '1' });
    await waitFor(async () => (await store.getIdempotency('task:content.write:write-1'))?.status === 'completed', { timeoutMs: 30_000, what: 'the resumed task to complete' });
    const nodes = provider.calls.filter((c) => c.path === '/node').map((c) => `${String(c.body.node)}@${c.body.pid === a.pid ? 'a' : 'b'}`);
    expect(nodes).toEqual(['write@a', 'polish@a', 'polish@b']); // the first node did not run again
    expect((await store.getIdempotency('task:content.write:write-1'))!.result).toEqual({ final: 'notes on pricing, polished' });
    b.kill('SIGKILL');
  }, 90_000);

  it('nats-server refuses an agent that publishes outside its manifest', async (ctx) => {
    const prefix = 'keel';
    const agent = defineAgent({
      name: 'narrow',
      version: '1',
      capabilities: [defineCapability({ name: 'narrow.work', version: '1', input: z.object({}), output: z.object({}), permissions: { enqueue: ['summarize'] }, handler: async () => ({}) })],
    });
    const srv = await startNats({ users: [{ user: 'admin', password: 'pw' }, { user: 'agent-narrow', password: 'secret', ...natsPermissionsFor(agent, prefix) }] });
    if (!srv.ok) return ctx.skip(srv.reason);
    closers.push(() => srv.server.stop());
    const admin = createBus(await connectBus({ servers: srv.server.url, user: 'admin', pass: 'pw' }), { prefix });
    closers.push(() => admin.nc.close());
    await admin.provision();
    const store = await openStore(`sqlite:${join(suite.dir, 'narrow.db')}`, { types: ALL_ENTITY_TYPES });
    closers.push(() => store.close());
    // the runtime itself runs fine with the generated permissions
    const running = await runAgent(agent, { natsUrl: srv.server.url, natsUser: 'agent-narrow', natsPassword: 'secret', state: store, prefix });
    closers.push(() => running.stop(1_000));
    const Work = defineMessage(taskType('narrow.work'), z.object({}));
    await admin.publish(admin.subjects.task('narrow.work'), Work, {});
    await waitFor(() => running.consumers['narrow.work']!.stats.handled === 1, { what: 'the allowed task' });

    const nc = await connectBus({ servers: srv.server.url, user: 'agent-narrow', pass: 'secret' });
    closers.push(() => nc.close());
    const errors: string[] = [];
    void (async () => {
      for await (const s of nc.status()) if (s.type === 'error') errors.push(String((s as { error?: Error }).error?.message));
    })();
    const js = jetstream(nc, { timeout: 1_000 });
    await js.publish(admin.subjects.task('summarize'), '{}'); // declared: allowed
    const refused = await js.publish(admin.subjects.task('billing'), '{}').catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(Error);
    await waitFor(() => errors.some((m) => /Permissions Violation for Publish to "keel\.task\.billing"/i.test(m)), { what: 'the server\'s permission violation' });
    const stored = await (await import('@nats-io/jetstream')).jetstreamManager(admin.nc).then((m) => m.streams.info(admin.subjects.streams.tasks, { subjects_filter: '>' }));
    expect(Object.keys(stored.state.subjects ?? {})).not.toContain('keel.task.billing');
    // and a connection with a wrong password is refused outright
    const bad = await connectBus({ servers: srv.server.url, user: 'agent-narrow', pass: 'wrong', connectTimeoutMs: 2_000, maxReconnectAttempts: 0 }).catch((e: unknown) => e);
    expect(isBusError(bad, 'BUS_AUTH_REFUSED')).toBe(true);
  });

  it('refuses in the runtime what the manifest does not declare (entity types, enqueue), and dead-letters it', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const { bus, prefix, store } = await setup();
    const attempts: string[] = [];
    const agent = defineAgent({
      name: 'nosy',
      version: '1',
      capabilities: [
        defineCapability({
          name: 'nosy',
          version: '1',
          input: z.object({ what: z.enum(['read', 'enqueue']) }),
          output: z.object({}),
          permissions: { entityTypes: ['ticket'] },
          async handler(c) {
            attempts.push(c.input.what);
            if (c.input.what === 'read') await c.state.get('customer', 'c1');
            else await c.enqueue('billing', {});
            return {};
          },
        }),
      ],
    });
    const running = await runAgent(agent, { natsUrl: suite.nats.url, state: store, prefix });
    closers.push(() => running.stop(1_000));
    const M = defineMessage(taskType('nosy'), z.object({ what: z.string() }));
    await bus.publish(bus.subjects.task('nosy'), M, { what: 'read' });
    await bus.publish(bus.subjects.task('nosy'), M, { what: 'enqueue' });
    await waitFor(() => running.consumers.nosy!.stats.deadLettered === 2, { what: 'two dead letters' });
    expect(attempts.sort()).toEqual(['enqueue', 'read']); // once each: permission errors are not retried
    expect(running.consumers.nosy!.stats.deadLetterReasons).toEqual({ permanent_error: 2 });
  });

  it('runs a task once per idempotency key even when it is published again under a new message id', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const { bus, prefix, store } = await setup();
    let runs = 0;
    const agent = defineAgent({
      name: 'once',
      version: '1',
      capabilities: [defineCapability({ name: 'once', version: '1', input: z.object({ n: z.number() }), output: z.object({ n: z.number() }), handler: async (c) => (runs++, { n: c.input.n * 2 }) })],
    });
    const running = await runAgent(agent, { natsUrl: suite.nats.url, state: store, prefix });
    closers.push(() => running.stop(1_000));
    const M = defineMessage(taskType('once'), z.object({ n: z.number() }));
    await bus.publish(bus.subjects.task('once'), M, { n: 21 }, { id: 'm1', idempotencyKey: 'order-7' });
    await bus.publish(bus.subjects.task('once'), M, { n: 21 }, { id: 'm2', idempotencyKey: 'order-7' });
    await waitFor(() => running.consumers.once!.stats.handled === 2, { what: 'both messages settled' });
    expect(runs).toBe(1);
    expect((await store.getIdempotency('task:once:order-7'))?.result).toEqual({ n: 42 });
    const cost = await store.costs({ agent: 'once', records: 10 });
    expect(cost.totals.count).toBe(1);
    expect(cost.records[0]).toMatchObject({ capability: 'once', costUsd: 0 });
    expect(cost.records[0]!.computeMs).toBeGreaterThanOrEqual(0);
  });

  it('a completion that finds the task already completed by another delivery (its lease was lost) is acked, not dead-lettered', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const { bus, prefix, store } = await setup();
    // the store of a slow process: by the time it completes, another delivery has completed the
    // task (a real complete with this token records it; the store then answers "lease lost")
    let lost = 0;
    const slow = new Proxy(store, {
      get(target, prop, receiver) {
        if (prop === 'complete')
          return async (key: string, token: string, result: unknown, o: unknown) => {
            await target.complete(key, token, result, o as Parameters<StateStore['complete']>[3]);
            lost++;
            throw new IdempotencyLeaseLostError(key, 'already completed by another claim');
          };
        const v = Reflect.get(target, prop, receiver) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    const agent = defineAgent({
      name: 'leaselost',
      version: '1',
      capabilities: [defineCapability({ name: 'leaselost', version: '1', input: z.object({ n: z.number() }), output: z.object({ n: z.number() }), handler: async (c) => ({ n: c.input.n + 1 }) })],
    });
    const running = await runAgent(agent, { natsUrl: suite.nats.url, state: slow, prefix });
    closers.push(() => running.stop(1_000));
    const M = defineMessage(taskType('leaselost'), z.object({ n: z.number() }));
    await bus.publish(bus.subjects.task('leaselost'), M, { n: 1 }, { id: 'l1', idempotencyKey: 'lease-1' });
    await waitFor(() => running.consumers.leaselost!.stats.handled + running.consumers.leaselost!.stats.deadLettered >= 1, { what: 'the message settled' });
    expect(lost).toBe(1);
    expect(running.consumers.leaselost!.stats).toMatchObject({ handled: 1, deadLettered: 0 });
    expect((await store.getIdempotency('task:leaselost:lease-1'))?.status).toBe('completed');
  });

  it('an agent announces its circuit breakers on the bus: a connector that keeps failing shows as open in its registry entry', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const { bus, prefix, store } = await setup();
    let calls = 0;
    const agent = defineAgent({
      name: 'breaky',
      version: '1',
      capabilities: [
        defineCapability({
          name: 'breaky',
          version: '1',
          input: z.object({ n: z.number() }),
          output: z.object({ n: z.number() }),
          handler: async (c) => c.connector('crm', async () => {
            calls++;
            throw new Error('crm answered 503');
          }),
        }),
      ],
    });
    const running = await runAgent(agent, { natsUrl: suite.nats.url, state: store, prefix, heartbeatMs: 200 });
    closers.push(() => running.stop(1_000));
    const M = defineMessage(taskType('breaky'), z.object({ n: z.number() }));
    for (let i = 0; i < 6; i++) await bus.publish(bus.subjects.task('breaky'), M, { n: i }, { id: `b${i}` });
    let entry: Awaited<ReturnType<typeof listAgents>>[number] | undefined;
    await waitFor(async () => {
      entry = (await listAgents(bus.nc, bus.subjects.registryBucket)).find((a) => a.agent === 'breaky');
      return entry?.breakers?.[0]?.state === 'open';
    }, { timeoutMs: 30_000, what: 'the crm breaker open in the registry' });
    // five consecutive failures open it (the default threshold; tasks already inside the call when it opened add theirs)
    const [b] = entry!.breakers!;
    expect(b).toEqual({ name: 'crm', state: 'open', failures: calls, openedAt: expect.any(String) });
    expect(calls).toBeGreaterThanOrEqual(5);
    // while it is open, the redelivered tasks fail fast: the connector is not called again
    const atOpen = calls;
    await new Promise((r) => setTimeout(r, 2_500));
    expect(calls).toBe(atOpen);
  }, 60_000);

  it('a task handled in an agent process is the child of the span that published it (Jaeger), and the agent serves /metrics', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const jaeger = await startJaeger();
    if (!jaeger.ok) return ctx.skip(jaeger.reason);
    closers.push(() => jaeger.server.stop());
    const { bus, prefix, state } = await setup();
    const provider = await startProvider();
    closers.push(() => provider.close());
    const metricsPort = await freePort();
    const a = agentProcess(PAYER, { KEEL_NATS_URL: suite.nats.url, KEEL_SUBJECT_PREFIX: prefix, KEEL_STATE: state, PROVIDER_URL: provider.url, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: jaeger.server.otlpTracesUrl, KEEL_METRICS_PORT: String(metricsPort) });
    await waitFor(async () => (await listAgents(bus.nc, bus.subjects.registryBucket)).length === 1, { timeoutMs: 30_000, what: 'payer' });
    const tel = initTelemetry({ serviceName: 'operator-cli', env: { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: jaeger.server.otlpTracesUrl } });
    const root = getTracer('test').startSpan('operator.pay');
    await context.with(trace.setSpan(context.active(), root), () => bus.publish(bus.subjects.task('pay'), Pay, { orderId: 'o-t', amount: 1 }, { customer: 'cust-t' }));
    root.end();
    await tel.flush();
    await waitFor(() => provider.calls.some((c) => c.path === '/charged'), { what: 'the traced task' });
    await waitFor(async () => /keel_tasks_total\{[^}]*outcome="ack"[^}]*\} 1/.test(await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text()), { what: 'task metrics' });
    a.kill('SIGTERM');
    await new Promise((r) => a.once('exit', r));
    let t: Awaited<ReturnType<typeof getTrace>>;
    await waitFor(async () => {
      t = await getTrace(jaeger.server.queryUrl, root.spanContext().traceId);
      return (t?.spans.length ?? 0) >= 3;
    }, { timeoutMs: 15_000, what: 'trace in Jaeger' });
    const svc = (s: { processID: string }) => t!.processes[s.processID]!.serviceName;
    const publish = t!.spans.find((s) => s.operationName.startsWith('publish '))!;
    const task = t!.spans.find((s) => s.operationName.startsWith('process '))!;
    expect(svc(publish)).toBe('operator-cli');
    expect(svc(task)).toBe('payer');
    expect(task.references[0]).toMatchObject({ refType: 'CHILD_OF', spanID: publish.spanID });
    expect(task.tags).toEqual(expect.arrayContaining([expect.objectContaining({ key: 'keel.customer', value: 'cust-t' })]));
    await tel.shutdown();
  });
});
