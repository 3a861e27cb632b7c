import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jetstream, jetstreamManager, AckPolicy } from '@nats-io/jetstream';
import { MongoClient } from 'mongodb';
import { BasicTracerProvider, BatchSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { connectBus } from '../../bus/index.ts';
import { createServer, type AddressInfo } from 'node:net';
import { execFileSync } from 'node:child_process';
import { dirname, sep } from 'node:path';
import { freePort, startNats, startNatsCluster, startMongo, startJaeger, startQdrant, getTrace, reportSkip, uniqueName, waitFor } from '../helpers/index.ts';

describe('real servers the tests stand on', () => {
  it('JetStream: a message published to a stream is consumed and acked through a durable consumer', async (ctx) => {
    const nats = await startNats();
    if (!nats.ok) return ctx.skip(nats.reason);
    const nc = await connectBus({ servers: nats.server.url });
    try {
      const jsm = await jetstreamManager(nc);
      const stream = uniqueName('S');
      await jsm.streams.add({ name: stream, subjects: [`${stream}.>`] });
      await jsm.consumers.add(stream, { durable_name: 'c', ack_policy: AckPolicy.Explicit });
      const js = jetstream(nc);
      const ack = await js.publish(`${stream}.x`, JSON.stringify({ hello: 'world' }));
      expect(ack.seq).toBe(1);
      const c = await js.consumers.get(stream, 'c');
      const m = await c.next({ expires: 5_000 });
      expect(m?.json()).toEqual({ hello: 'world' });
      await m!.ackAck();
      const info = await c.info();
      expect(info.num_ack_pending).toBe(0);
      expect(info.delivered.stream_seq).toBe(1);
    } finally {
      await nc.close();
      await nats.server.stop();
    }
  });

  it('a cluster port taken before the node binds it: the helper stops what it started and retries on new ports', async (ctx) => {
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const port = (taken.address() as AddressInfo).port;
    try {
      const cluster = await startNatsCluster(3, { clusterPorts: [port, await freePort(), await freePort()] });
      if (!cluster.ok) return ctx.skip(cluster.reason);
      try {
        expect(cluster.server.nodes).toHaveLength(3);
        // the retry picked other route ports: none of the running nodes has the taken one
        const routePorts = cluster.server.nodes.map((n) => n.options.cluster!.port);
        expect(routePorts).not.toContain(port);
        expect(new Set(routePorts).size).toBe(3);
        // and the first attempt's nodes are gone: exactly the three running ones use the cluster's dir
        const root = dirname(cluster.server.nodes[0]!.options.storeDir);
        const ps = execFileSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' });
        const pids = ps.split('\n').filter((l) => l.includes('nats-server') && l.includes(root + sep)).map((l) => Number(l.trim().split(/\s+/)[0]));
        expect(pids.sort()).toEqual(cluster.server.nodes.map((n) => n.pid!).sort());
      } finally {
        await cluster.server.stop();
      }
    } finally {
      taken.close();
    }
  });

  it('a 3-node cluster on loopback serves an R3 stream', async (ctx) => {
    const cluster = await startNatsCluster(3);
    if (!cluster.ok) return ctx.skip(cluster.reason);
    const nc = await connectBus({ servers: cluster.server.urls });
    try {
      let jsm!: Awaited<ReturnType<typeof jetstreamManager>>;
      await waitFor(async () => {
        try {
          jsm = await jetstreamManager(nc);
          await jsm.streams.add({ name: 'R3', subjects: ['r3.>'], num_replicas: 3 });
          return true;
        } catch {
          return false; // no meta leader yet
        }
      }, { timeoutMs: 30_000, what: 'JetStream meta leader' });
      const js = jetstream(nc);
      await js.publish('r3.a', 'one');
      const info = await jsm.streams.info('R3');
      expect(info.config.num_replicas).toBe(3);
      expect(info.cluster?.replicas?.length).toBe(2);
      expect(info.state.messages).toBe(1);
    } finally {
      await nc.close();
      await cluster.server.stop();
    }
  });

  it('MongoDB protocol: the official driver writes and reads documents', async (ctx) => {
    const mongo = await startMongo();
    if (!mongo.ok) return ctx.skip(mongo.reason);
    const client = new MongoClient(mongo.server.url);
    try {
      const coll = client.db(uniqueName('db')).collection('things');
      await coll.createIndex({ key: 1 }, { unique: true });
      await coll.insertMany([{ key: 'a', n: 1 }, { key: 'b', n: 2 }]);
      await expect(coll.insertOne({ key: 'a', n: 3 })).rejects.toMatchObject({ code: 11000 });
      const docs = await coll.find({}, { projection: { _id: 0 } }).sort({ key: 1 }).toArray();
      expect(docs).toEqual([{ key: 'a', n: 1 }, { key: 'b', n: 2 }]);
    } finally {
      await client.close();
      await mongo.server.stop();
    }
  });

  it('Jaeger: a span exported over OTLP is found through the query API', async (ctx) => {
    const jaeger = await startJaeger();
    if (!jaeger.ok) return ctx.skip(jaeger.reason);
    const provider = new BasicTracerProvider({
      resource: resourceFromAttributes({ 'service.name': 'keel-foundation-test' }),
      spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url: jaeger.server.otlpTracesUrl }))],
    });
    try {
      const tracer = provider.getTracer('test');
      const span = tracer.startSpan('foundation.check');
      span.setAttribute('keel.test', true);
      span.end();
      const traceId = span.spanContext().traceId;
      await provider.forceFlush();
      let found: Awaited<ReturnType<typeof getTrace>>;
      await waitFor(async () => !!(found = await getTrace(jaeger.server.queryUrl, traceId)), { timeoutMs: 15_000, what: 'trace in Jaeger' });
      expect(found!.spans[0]!.operationName).toBe('foundation.check');
      expect(found!.processes[found!.spans[0]!.processID]!.serviceName).toBe('keel-foundation-test');
    } finally {
      await provider.shutdown();
      await jaeger.server.stop();
    }
  });

  describe('Qdrant', () => {
    let avail: Awaited<ReturnType<typeof startQdrant>>;
    beforeAll(async () => {
      avail = await startQdrant();
      if (!avail.ok) reportSkip('Qdrant tests', avail.reason);
    });
    afterAll(async () => {
      if (avail.ok) await avail.server.stop();
    });
    it('answers its readiness probe', async (ctx) => {
      if (!avail.ok) return ctx.skip(avail.reason);
      const r = await fetch(`${avail.server.url}/readyz`);
      expect(r.ok).toBe(true);
    });
  });
});
