import { pino, type Logger, type LoggerOptions } from 'pino';
import { trace, isSpanContextValid } from '@opentelemetry/api';
import { scrubJsonLine } from './scrub.ts';

export type { Logger } from 'pino';

/**
 * Keys whose values are never logged, at the top level and up to three levels down (`err.config.password`,
 * `req.headers.authorization`): their values become `[REDACTED]`.
 */
export const REDACTED_KEYS = ['password', 'pass', 'passwd', 'token', 'accessToken', 'refreshToken', 'authorization', 'apiKey', 'api_key', 'secret', 'secrets', 'cookie', 'set-cookie', 'credentials', 'privateKey'] as const;

const redactPaths = REDACTED_KEYS.flatMap((k) => {
  const key = /^[A-Za-z_$][\w$]*$/.test(k) ? k : `["${k}"]`;
  const dot = key.startsWith('[') ? '' : '.';
  return [key, `*${dot}${key}`, `*.*${dot}${key}`, `*.*.*${dot}${key}`];
});

/**
 * A pino logger whose every line carries the active span's `trace_id` and `span_id`, so a log
 * line can be found from a trace and the other way round.
 *
 * No secret reaches the output: the values of {@link REDACTED_KEYS} are `[REDACTED]`, and every
 * line is scrubbed as written (observability/scrub.ts `scrubJsonLine`: this process's `KEEL_SECRET_*`
 * values and operator tokens → `[SECRET]`, payment card numbers → `[CARD]`), wherever they hide
 * (message, error message and stack, nested fields, numbers: `"[SECRET]"` quoted), and every line
 * stays valid JSON.
 */
/** `level` defaults to `info`; the engine and agents pass KEEL_LOG_LEVEL from config. */
export function createLogger(name: string, opts: { level?: string; destination?: NodeJS.WritableStream } = {}): Logger {
  const options: LoggerOptions = {
    name,
    level: opts.level ?? 'info',
    base: { pid: process.pid, service: name },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: redactPaths, censor: '[REDACTED]' },
    // the serialized line, just before it is written: one pass covers msg, fields and errors; JSON-aware,
    // so a secret or card in a number position becomes the quoted mark and the line stays valid JSON
    hooks: { streamWrite: scrubJsonLine },
    mixin() {
      const ctx = trace.getActiveSpan()?.spanContext();
      return ctx && isSpanContextValid(ctx) ? { trace_id: ctx.traceId, span_id: ctx.spanId } : {};
    },
  };
  return opts.destination ? pino(options, opts.destination) : pino(options);
}
