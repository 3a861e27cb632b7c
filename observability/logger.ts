import { pino, type Logger, type LoggerOptions } from 'pino';
import { trace, isSpanContextValid } from '@opentelemetry/api';

export type { Logger } from 'pino';

/**
 * A pino logger whose every line carries the active span's `trace_id` and `span_id`, so a log
 * line can be found from a trace and the other way round.
 */
/** `level` defaults to `info`; the engine and agents pass KEEL_LOG_LEVEL from config. */
export function createLogger(name: string, opts: { level?: string; destination?: NodeJS.WritableStream } = {}): Logger {
  const options: LoggerOptions = {
    name,
    level: opts.level ?? 'info',
    base: { pid: process.pid, service: name },
    timestamp: pino.stdTimeFunctions.isoTime,
    mixin() {
      const ctx = trace.getActiveSpan()?.spanContext();
      return ctx && isSpanContextValid(ctx) ? { trace_id: ctx.traceId, span_id: ctx.spanId } : {};
    },
  };
  return opts.destination ? pino(options, opts.destination) : pino(options);
}
