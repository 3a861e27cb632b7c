import { createServer, type IncomingMessage, type ServerResponse, type Server } from 'node:http';
import type { Meter } from '@opentelemetry/api';
import { selfSampler } from './process.ts';

/** One process's footprint as `/metrics` reports it (`keel_process_*{process, pid}`). */
export interface ProcessFootprint {
  /** what runs there: `keel-engine`, an agent's name, a host's agents, `nats-server` */
  process: string;
  pid: number;
  rssBytes: number;
  /** fraction of one core over the last interval */
  cpu: number;
}

export interface Metrics {
  meter: Meter;
  /** the current Prometheus exposition text, for serving `/metrics` from an existing HTTP API */
  text(): Promise<string>;
  /** `http://host:port/metrics` when this process serves its own endpoint */
  url: string | undefined;
  shutdown(): Promise<void>;
}

/**
 * OpenTelemetry metrics exposed for Prometheus. With `port` the process serves its own
 * `/metrics` on `host:port` (0 picks a free port); without it, mount `handler` yourself.
 */
export async function createMetrics(opts: {
  serviceName: string;
  port?: number;
  host?: string;
  /** other processes to report besides this one (the engine reports its agents and nats-server) */
  processes?: () => Promise<ProcessFootprint[]> | ProcessFootprint[];
}): Promise<Metrics> {
  const host = opts.host ?? '127.0.0.1';
  // the metrics SDK loads only in a process that serves metrics (the engine, or an agent given a metrics port)
  const [{ MeterProvider }, { PrometheusExporter }, { resourceFromAttributes }] = await Promise.all([import('@opentelemetry/sdk-metrics'), import('@opentelemetry/exporter-prometheus'), import('@opentelemetry/resources')]);
  // our own server, not the exporter's: the exporter reads port 0 as "its default 9464", and
  // several agent processes on one machine each need a free port of their own
  const exporter = new PrometheusExporter({ preventServerStart: true });
  let url: string | undefined;
  let server: Server | undefined;
  if (opts.port !== undefined) {
    const srv = createServer((req, res) => {
      if (req.method === 'GET' && (req.url ?? '').split('?')[0] === '/metrics') return exporter.getMetricsRequestHandler(req, res);
      res.statusCode = 404;
      res.end('not found: GET /metrics\n');
    });
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(opts.port, host, () => resolve());
    });
    server = srv;
    const addr = srv.address();
    url = `http://${host.includes(':') ? `[${host}]` : host}:${typeof addr === 'object' && addr ? addr.port : opts.port}/metrics`;
  }
  const provider = new MeterProvider({
    resource: resourceFromAttributes({ 'service.name': opts.serviceName, 'service.namespace': 'keel' }),
    readers: [exporter],
  });
  // every process reports its own footprint: resident memory and CPU (fraction of one core
  // between two scrapes), labelled with what runs there
  const meter = provider.getMeter('keel');
  const self = selfSampler();
  let scrape: Promise<ProcessFootprint[]> | undefined;
  const footprints = () =>
    (scrape ??= (async () => {
      const u = self();
      const mine: ProcessFootprint = { process: opts.serviceName, pid: u.pid, rssBytes: u.rssBytes, cpu: u.cpu };
      const others = (await Promise.resolve(opts.processes?.()).catch(() => undefined)) ?? [];
      return [mine, ...others];
    })().finally(() => setTimeout(() => (scrape = undefined), 0)));
  meter.createObservableGauge('keel_process_resident_memory_bytes', { description: 'resident set size of a Keel process (the engine, an agent or agent host, nats-server)' }).addCallback(async (r) => {
    for (const f of await footprints()) r.observe(f.rssBytes, { process: f.process, pid: String(f.pid) });
  });
  meter.createObservableGauge('keel_process_cpu_ratio', { description: 'CPU used by a Keel process since the previous scrape, as a fraction of one core' }).addCallback(async (r) => {
    for (const f of await footprints()) r.observe(f.cpu, { process: f.process, pid: String(f.pid) });
  });
  return {
    meter,
    text: () =>
      new Promise<string>((resolve) => {
        const sink = { statusCode: 200, setHeader: () => undefined, end: (body?: string) => resolve(body ?? '') };
        exporter.getMetricsRequestHandler({} as IncomingMessage, sink as unknown as ServerResponse);
      }),
    url,
    shutdown: async () => {
      await provider.shutdown().catch(() => undefined);
      // a scraper keeps its connection open: close it too, or close() waits for it
      server?.closeAllConnections();
      await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    },
  };
}
