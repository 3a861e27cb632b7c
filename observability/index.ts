/**
 * Logs, traces and metrics shared by every Keel process.
 *
 * ```ts
 * import { createLogger } from './observability/index.ts';
 * const log = createLogger('triage');   // lines carry trace_id / span_id of the active span
 * ```
 */
export { createLogger } from './logger.ts';
export type { Logger } from './logger.ts';
export { initTelemetry, getTracer, injectTraceHeaders, extractTraceContext, withSpan, SpanKind, SpanStatusCode, context, trace } from './tracing.ts';
export type { Telemetry, Span, Context, Tracer } from './tracing.ts';
export { createMetrics } from './metrics.ts';
export type { Metrics, ProcessFootprint } from './metrics.ts';
export { selfSampler, procSampler, readProcUsage } from './process.ts';
export type { ProcessUsage } from './process.ts';
