import type { IncomingMessage, ServerResponse, Server } from 'node:http';
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { resourceFromAttributes } from '@opentelemetry/resources';
import type { Meter } from '@opentelemetry/api';

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
export async function createMetrics(opts: { serviceName: string; port?: number; host?: string }): Promise<Metrics> {
  const host = opts.host ?? '127.0.0.1';
  const exporter = new PrometheusExporter({ host, port: opts.port ?? 0, preventServerStart: opts.port === undefined });
  let url: string | undefined;
  if (opts.port !== undefined) {
    await exporter.startServer();
    const server = (exporter as unknown as { _server?: Server })._server;
    const addr = server?.address();
    url = `http://${host}:${typeof addr === 'object' && addr ? addr.port : opts.port}/metrics`;
  }
  const provider = new MeterProvider({
    resource: resourceFromAttributes({ 'service.name': opts.serviceName, 'service.namespace': 'keel' }),
    readers: [exporter],
  });
  return {
    meter: provider.getMeter('keel'),
    text: () =>
      new Promise<string>((resolve) => {
        const sink = { statusCode: 200, setHeader: () => undefined, end: (body?: string) => resolve(body ?? '') };
        exporter.getMetricsRequestHandler({} as IncomingMessage, sink as unknown as ServerResponse);
      }),
    url,
    shutdown: async () => {
      await provider.shutdown().catch(() => undefined);
      await exporter.stopServer().catch(() => undefined);
    },
  };
}
