import { context, trace, SpanKind, SpanStatusCode, type Context, type Span, type Tracer } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { BatchSpanProcessor, SimpleSpanProcessor, type SpanProcessor, type SpanExporter } from '@opentelemetry/sdk-trace-base';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';

export { SpanKind, SpanStatusCode, context, trace } from '@opentelemetry/api';
export type { Span, Context, Tracer } from '@opentelemetry/api';

export interface Telemetry {
  serviceName: string;
  provider: NodeTracerProvider;
  /** whether spans leave the process (an OTLP exporter is configured) */
  exporting: boolean;
  flush(): Promise<void>;
  shutdown(): Promise<void>;
}

let current: Telemetry | undefined;

/**
 * Sets up tracing for this process, once: `service.name` = the agent's name, W3C trace context
 * propagation, AsyncLocalStorage context. Spans are exported over OTLP/HTTP when the standard
 * variables ask for it (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
 * unless `OTEL_TRACES_EXPORTER=none`); `OTEL_SERVICE_NAME` overrides the name.
 */
export function initTelemetry(opts: { serviceName: string; exporter?: SpanExporter; env?: Record<string, string | undefined> }): Telemetry {
  if (current) return current;
  const env = opts.env ?? process.env;
  const serviceName = env.OTEL_SERVICE_NAME ?? opts.serviceName;
  const processors: SpanProcessor[] = [];
  const wantOtlp = env.OTEL_TRACES_EXPORTER !== 'none' && !!(env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
  if (opts.exporter) processors.push(new SimpleSpanProcessor(opts.exporter));
  if (wantOtlp) {
    const url = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? `${env.OTEL_EXPORTER_OTLP_ENDPOINT!.replace(/\/$/, '')}/v1/traces`;
    processors.push(new BatchSpanProcessor(new OTLPTraceExporter({ url }), { scheduledDelayMillis: 200 }));
  }
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ 'service.name': serviceName, 'service.namespace': 'keel', 'process.pid': process.pid }),
    spanProcessors: processors,
  });
  provider.register({ propagator: new W3CTraceContextPropagator() });
  current = {
    serviceName,
    provider,
    exporting: processors.length > 0,
    flush: () => provider.forceFlush(),
    shutdown: async () => {
      await provider.shutdown();
      current = undefined;
    },
  };
  return current;
}

export function getTracer(name = 'keel'): Tracer {
  return trace.getTracer(name);
}

// The bus propagates W3C trace context itself, so it works even in a process that never
// called initTelemetry (then the ids pass through unchanged).
const w3c = new W3CTraceContextPropagator();
const setter = { set: (c: Record<string, string>, k: string, v: string) => void (c[k] = v) };
const getter = {
  get: (c: Record<string, string | undefined>, k: string) => c[k],
  keys: (c: Record<string, string | undefined>) => Object.keys(c),
};

/** `traceparent` / `tracestate` of a context (the active one by default). */
export function injectTraceHeaders(ctx: Context = context.active()): Record<string, string> {
  const carrier: Record<string, string> = {};
  w3c.inject(ctx, carrier, setter);
  return carrier;
}

/** A context whose parent is the span described by `traceparent` / `tracestate`. */
export function extractTraceContext(headers: Record<string, string | undefined>, base: Context = context.active()): Context {
  return w3c.extract(base, headers, getter);
}

/** Runs `fn` in a new active span; records an exception and error status when it throws. */
export async function withSpan<T>(tracer: Tracer, name: string, opts: { kind?: SpanKind; attributes?: Record<string, string | number | boolean>; parent?: Context }, fn: (span: Span) => Promise<T>): Promise<T> {
  const parent = opts.parent ?? context.active();
  const span = tracer.startSpan(name, { kind: opts.kind ?? SpanKind.INTERNAL, attributes: opts.attributes }, parent);
  try {
    return await context.with(trace.setSpan(parent, span), () => fn(span));
  } catch (err) {
    span.recordException(err as Error);
    span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
    throw err;
  } finally {
    span.end();
  }
}
