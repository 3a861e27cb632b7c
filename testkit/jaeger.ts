import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { findTool } from '../config/index.ts';
import { dockerAvailable, freePort, tempDir, waitFor, type Availability, type ServerHandle } from './common.ts';
import { TestkitError } from './errors.ts';

export interface JaegerHandle extends ServerHandle {
  /** query API base, e.g. http://127.0.0.1:16686 (`url` is the same) */
  queryUrl: string;
  /** OTLP/HTTP traces endpoint, e.g. http://127.0.0.1:4318/v1/traces */
  otlpTracesUrl: string;
}

export interface JaegerSpan {
  traceID: string;
  spanID: string;
  operationName: string;
  references: Array<{ refType: string; traceID: string; spanID: string }>;
  processID: string;
  tags: Array<{ key: string; value: unknown }>;
}
export interface JaegerTrace {
  traceID: string;
  spans: JaegerSpan[];
  processes: Record<string, { serviceName: string; tags: Array<{ key: string; value: unknown }> }>;
}

function config(otlpPort: number, queryPort: number, grpcPort: number, healthPort: number): string {
  return `service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:${healthPort}
  jaeger_query:
    storage:
      traces: mem
    http:
      endpoint: 127.0.0.1:${queryPort}
    grpc:
      endpoint: 127.0.0.1:${grpcPort}
  jaeger_storage:
    backends:
      mem:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:${otlpPort}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: mem
`;
}

/**
 * A trace backend that accepts OTLP and answers trace queries: `JAEGER_URL` (query API) with
 * `JAEGER_OTLP_URL` (OTLP/HTTP base, default the same host on 4318) first, then a container,
 * then the provisioned Jaeger binary on free ports with in-memory storage.
 */
export async function startJaeger(): Promise<Availability<JaegerHandle>> {
  if (process.env.JAEGER_URL) {
    const q = process.env.JAEGER_URL.replace(/\/$/, '');
    const otlpBase = process.env.JAEGER_OTLP_URL ?? q.replace(/:\d+$/, ':4318');
    return { ok: true, server: { url: q, queryUrl: q, otlpTracesUrl: `${otlpBase.replace(/\/$/, '')}/v1/traces`, source: 'env', stop: async () => undefined } };
  }
  if (await dockerAvailable()) {
    const { GenericContainer, Wait } = await import('testcontainers');
    const c = await new GenericContainer('jaegertracing/jaeger:2.13.0').withExposedPorts(16686, 4318).withWaitStrategy(Wait.forListeningPorts()).start();
    const q = `http://${c.getHost()}:${c.getMappedPort(16686)}`;
    return { ok: true, server: { url: q, queryUrl: q, otlpTracesUrl: `http://${c.getHost()}:${c.getMappedPort(4318)}/v1/traces`, source: 'container', stop: async () => void (await c.stop()) } };
  }
  const bin = findTool('jaeger');
  if (!bin) return { ok: false, reason: 'no trace backend: set JAEGER_URL, start a Docker engine, or run `npm run provision` (builds Jaeger; needs Go)' };
  const dir = tempDir('keel-jaeger-');
  const [otlp, query, grpc, health] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const cfgPath = join(dir.path, 'jaeger.yaml');
  writeFileSync(cfgPath, config(otlp, query, grpc, health));
  const child = spawn(bin, ['--config', cfgPath], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 3_000);
      await exited;
      clearTimeout(t);
    }
    dir.remove();
  };
  const queryUrl = `http://127.0.0.1:${query}`;
  try {
    await waitFor(
      async () => {
        if (child.exitCode !== null) throw new TestkitError('TESTKIT_SERVER_EXITED', `jaeger exited: ${stderr}`);
        const r = await fetch(`${queryUrl}/api/services`);
        return r.ok;
      },
      { timeoutMs: 30_000, what: 'Jaeger query API' },
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return { ok: true, server: { url: queryUrl, queryUrl, otlpTracesUrl: `http://127.0.0.1:${otlp}/v1/traces`, source: 'local', stop } };
}

/** Fetches one trace from Jaeger's query API (undefined while it is not there yet). */
export async function getTrace(queryUrl: string, traceId: string): Promise<JaegerTrace | undefined> {
  const r = await fetch(`${queryUrl}/api/traces/${traceId}`);
  if (r.status === 404) return undefined;
  if (!r.ok) throw new TestkitError('TESTKIT_QUERY_FAILED', `jaeger query ${r.status}: ${await r.text()}`);
  const body = (await r.json()) as { data?: JaegerTrace[] };
  return body.data?.[0];
}
