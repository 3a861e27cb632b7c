import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { context, propagation, trace, isSpanContextValid, TraceFlags, SpanKind, SpanStatusCode, type Context, type Span, type SpanOptions, type Tracer, type TracerProvider } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import type { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import type { SpanProcessor, SpanExporter, ReadableSpan } from '@opentelemetry/sdk-trace-base';
import type { ExportResult } from '@opentelemetry/core';
import { scrub, scrubValue } from './scrub.ts';
import type * as SdkTraceBase from '@opentelemetry/sdk-trace-base';
import type * as SdkTraceNode from '@opentelemetry/sdk-trace-node';
import type * as OtlpHttp from '@opentelemetry/exporter-trace-otlp-http';
import type * as Resources from '@opentelemetry/resources';

/**
 * The OpenTelemetry SDK, loaded only by a process that exports spans (synchronously, through
 * Node's require of the packages' ES module builds, so they share @opentelemetry/api with the
 * rest): a process that exports nothing never loads it.
 */
function sdk<T>(pkg: '@opentelemetry/sdk-trace-node' | '@opentelemetry/sdk-trace-base' | '@opentelemetry/exporter-trace-otlp-http' | '@opentelemetry/resources'): T {
  return createRequire(import.meta.url)(fileURLToPath(import.meta.resolve(pkg))) as T;
}

export { SpanKind, SpanStatusCode, context, trace } from '@opentelemetry/api';
export type { Span, Context, Tracer } from '@opentelemetry/api';

export interface Telemetry {
  serviceName: string;
  /** undefined when nothing is exported (spans are then non-recording; ids still propagate) */
  provider: NodeTracerProvider | undefined;
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
export function initTelemetry(opts: { serviceName: string; exporter?: SpanExporter; /** the OTEL_* variables (config's telemetryEnv); none = export nothing */ env?: Record<string, string | undefined> }): Telemetry {
  if (current) return current;
  const env = opts.env ?? {};
  const serviceName = env.OTEL_SERVICE_NAME ?? opts.serviceName;
  const processors: SpanProcessor[] = [];
  const wantOtlp = env.OTEL_TRACES_EXPORTER !== 'none' && !!(env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
  const base = opts.exporter || wantOtlp ? sdk<typeof SdkTraceBase>('@opentelemetry/sdk-trace-base') : undefined;
  if (opts.exporter) processors.push(new base!.SimpleSpanProcessor(scrubbingExporter(opts.exporter)));
  if (wantOtlp) {
    const url = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? `${env.OTEL_EXPORTER_OTLP_ENDPOINT!.replace(/\/$/, '')}/v1/traces`;
    const { OTLPTraceExporter } = sdk<typeof OtlpHttp>('@opentelemetry/exporter-trace-otlp-http');
    processors.push(new base!.BatchSpanProcessor(scrubbingExporter(new OTLPTraceExporter({ url })), { scheduledDelayMillis: 200 }));
  }
  if (processors.length === 0) {
    // nothing leaves the process: skip the SDK's span bookkeeping, keep context propagation
    // (trace ids still flow through the bus, logs and cost records as non-recording spans)
    const cm = new AsyncLocalStorageContextManager();
    context.setGlobalContextManager(cm.enable());
    propagation.setGlobalPropagator(new W3CTraceContextPropagator());
    trace.setGlobalTracerProvider(idOnlyTracerProvider);
    current = {
      serviceName,
      provider: undefined,
      exporting: false,
      flush: async () => undefined,
      shutdown: async () => {
        trace.disable();
        context.disable();
        propagation.disable();
        current = undefined;
      },
    };
    return current;
  }
  const { NodeTracerProvider } = sdk<typeof SdkTraceNode>('@opentelemetry/sdk-trace-node');
  const { resourceFromAttributes } = sdk<typeof Resources>('@opentelemetry/resources');
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

/**
 * A span as exported, scrubbed (observability/scrub.ts): string attributes (and string arrays),
 * event names and attributes (`exception.message`, `exception.stacktrace`), link attributes and the
 * status message. The span itself is left as it is (a processor's `onEnd` gets a read-only span);
 * the exporter sees a scrubbed copy.
 */
export function scrubSpan(span: ReadableSpan): ReadableSpan {
  const attributes = scrubValue(span.attributes, 2);
  const events = scrubValue(span.events, 5);
  const links = scrubValue(span.links, 5);
  const status = span.status.message ? { ...span.status, message: scrub(span.status.message) } : span.status;
  const name = scrub(span.name);
  if (attributes === span.attributes && events === span.events && links === span.links && status.message === span.status.message && name === span.name) return span;
  const sc = span.spanContext();
  return {
    name,
    kind: span.kind,
    spanContext: () => sc,
    parentSpanContext: span.parentSpanContext,
    startTime: span.startTime,
    endTime: span.endTime,
    status,
    attributes,
    links,
    events,
    duration: span.duration,
    ended: span.ended,
    resource: span.resource,
    instrumentationScope: span.instrumentationScope,
    droppedAttributesCount: span.droppedAttributesCount,
    droppedEventsCount: span.droppedEventsCount,
    droppedLinksCount: span.droppedLinksCount,
  };
}

/** Wraps an exporter so every span it receives is {@link scrubSpan}ned first: secrets and card numbers never leave the process in a trace. */
export function scrubbingExporter(inner: SpanExporter): SpanExporter {
  return {
    export: (spans: ReadableSpan[], done: (r: ExportResult) => void) => inner.export(spans.map(scrubSpan), done),
    shutdown: () => inner.shutdown(),
    ...(inner.forceFlush ? { forceFlush: () => inner.forceFlush!() } : {}),
  };
}

// span and trace ids from a pool of random bytes refilled 4 KiB at a time (one call into the
// CSPRNG per ~500 ids instead of one per id: measurable on a workflow step's path)
let pool = Buffer.alloc(0);
let poolAt = 0;
const hex = (bytes: number): string => {
  if (poolAt + bytes > pool.length) {
    pool = randomBytes(4096);
    poolAt = 0;
  }
  const s = pool.toString('hex', poolAt, poolAt + bytes);
  poolAt += bytes;
  return s;
};
/**
 * A tracer for processes that export nothing: spans record nothing but get real ids (a child
 * keeps its parent's trace id), so trace ids still tie logs, cost records and downstream
 * processes together. Marked sampled, so a downstream process that does export records its part.
 */
const idOnlyTracer: Tracer = {
  startSpan(_name, _opts, ctx = context.active()) {
    const parent = trace.getSpanContext(ctx);
    return trace.wrapSpanContext({ traceId: parent && isSpanContextValid(parent) ? parent.traceId : hex(16), spanId: hex(8), traceFlags: TraceFlags.SAMPLED });
  },
  startActiveSpan(name: string, ...rest: unknown[]) {
    const fn = rest[rest.length - 1] as (s: Span) => unknown;
    const opts = (rest.length > 1 ? rest[0] : undefined) as SpanOptions | undefined;
    const ctx = (rest.length > 2 ? rest[1] : context.active()) as Context;
    const span = idOnlyTracer.startSpan(name, opts, ctx);
    return context.with(trace.setSpan(ctx, span), () => fn(span));
  },
} as Tracer;
const idOnlyTracerProvider: TracerProvider = { getTracer: () => idOnlyTracer };

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
