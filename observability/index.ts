/**
 * Logs, traces and metrics shared by every Keel process.
 *
 * ```ts
 * import { createLogger } from './observability/index.ts';
 * const log = createLogger('triage');   // lines carry trace_id / span_id of the active span
 * ```
 */
export { createLogger, lazyChild, REDACTED_KEYS, LOG_FORMATS, envLogFormat, usePretty, prettyLine, prettyStream } from './logger.ts';
export { scrub, scrubJsonLine, scrubValue, findCards, replaceCards, luhnValid, secretValues, refreshSecrets, SECRET_MARK, CARD_MARK, MIN_SECRET_LENGTH, SECRET_VARIABLES, OPERATOR_TOKEN_PATTERN } from './scrub.ts';
export type { CardMatch } from './scrub.ts';
export type { Logger, LogFormat } from './logger.ts';
export { initTelemetry, scrubbingExporter, scrubSpan, getTracer, injectTraceHeaders, extractTraceContext, withSpan, SpanKind, SpanStatusCode, context, trace } from './tracing.ts';
export type { Telemetry, Span, Context, Tracer } from './tracing.ts';
export { createMetrics } from './metrics.ts';
export type { Metrics, ProcessFootprint } from './metrics.ts';
export { selfSampler, procSampler, readProcUsage } from './process.ts';
export type { ProcessUsage } from './process.ts';
