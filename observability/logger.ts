import { createRequire } from 'node:module';
import { pino, type Logger, type LoggerOptions, type DestinationStream } from 'pino';
import type { PrettyOptions } from 'pino-pretty';
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
/** KEEL_LOG_FORMAT: `auto` (pretty on a terminal, else JSON), `json`, `pretty`. */
export type LogFormat = 'auto' | 'json' | 'pretty';
export const LOG_FORMATS: readonly LogFormat[] = ['auto', 'json', 'pretty'];

/**
 * `level` defaults to `info`; the engine and agents pass KEEL_LOG_LEVEL from config. `format`
 * defaults to KEEL_LOG_FORMAT (read here, so every process and CLI command agrees), else `auto`:
 * readable lines ({@link prettyStream}) when the destination is a terminal, JSON lines otherwise.
 * Scrubbing applies to the JSON line before it is formatted, so it holds in both formats.
 */
export function createLogger(name: string, opts: { level?: string; destination?: NodeJS.WritableStream; format?: LogFormat } = {}): Logger {
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
  const out = opts.destination ?? process.stdout;
  if (usePretty(opts.format ?? envLogFormat(), out)) return pino(options, prettyStream(out));
  return opts.destination ? pino(options, opts.destination) : pino(options);
}

/**
 * `parent.child(bindings)`, made on first use: a child's bindings are serialized (with the
 * redaction paths) when it is made, which costs more than a task that logs nothing (a workflow
 * step at level `warn`) spends on anything else of its logging. Calls of a level that is not
 * enabled do nothing and make no child.
 */
export function lazyChild(parent: Logger, bindings: Record<string, unknown>): Logger {
  let real: Logger | undefined;
  const make = () => (real ??= parent.child(bindings));
  const noop = () => undefined;
  return new Proxy({} as Logger, {
    get(_t, key) {
      if (!real && typeof key === 'string' && key in parent.levels.values && !parent.isLevelEnabled(key)) return noop;
      const l = make();
      const v: unknown = Reflect.get(l, key, l);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(l) : v;
    },
    set(_t, key, value) {
      return Reflect.set(make(), key, value);
    },
    has(_t, key) {
      return Reflect.has(make(), key);
    },
  });
}

/** KEEL_LOG_FORMAT from the environment (an unknown value: `auto`; config/ reports it). */
export function envLogFormat(env: NodeJS.ProcessEnv = process.env): LogFormat {
  const v = env.KEEL_LOG_FORMAT?.trim();
  return (LOG_FORMATS as readonly string[]).includes(v ?? '') ? (v as LogFormat) : 'auto';
}

/** Whether lines written to `out` in this format are the readable ones. */
export function usePretty(format: LogFormat, out: NodeJS.WritableStream = process.stdout): boolean {
  if (format === 'auto') return (out as { isTTY?: boolean }).isTTY === true;
  return format === 'pretty';
}

// fields every line carries that a person does not need to read (trace_id stays: it finds the trace)
const HIDDEN = new Set(['level', 'time', 'pid', 'hostname', 'name', 'service', 'msg', 'span_id']);

function fieldText(v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  if (v && typeof v === 'object' && 'message' in v && typeof (v as { message: unknown }).message === 'string') {
    const e = v as { message: string; code?: unknown };
    return JSON.stringify(e.code ? `${e.message} (${String(e.code)})` : e.message);
  }
  return JSON.stringify(v) ?? String(v);
}

/**
 * One readable line per log record: `time LEVEL service message key=value …` (colours on a
 * terminal). The stack of an error logged at `error` or above follows, indented.
 */
export function prettyLine(log: Record<string, unknown>): string {
  const fields = Object.entries(log)
    .filter(([k, v]) => !HIDDEN.has(k) && v !== undefined)
    .map(([k, v]) => `${k}=${fieldText(v)}`);
  const service = typeof log.service === 'string' ? log.service : typeof log.name === 'string' ? log.name : '';
  const err = log.err as { stack?: unknown } | undefined;
  const stack = typeof log.level === 'number' && log.level >= 50 && typeof err?.stack === 'string' ? `\n${err.stack.split('\n').slice(1).map((l) => `    ${l.trim()}`).join('\n')}` : '';
  return `${service.padEnd(15)} ${String(log.msg ?? '')}${fields.length ? `  ${fields.join(' ')}` : ''}${stack}`;
}

/** A pino destination that writes {@link prettyLine}s to `out` (pino-pretty, synchronous: no worker thread). */
export function prettyStream(out: NodeJS.WritableStream = process.stdout): DestinationStream {
  // loaded only where lines are pretty (a terminal), not in every agent process
  const pretty = createRequire(import.meta.url)('pino-pretty') as (o: PrettyOptions) => DestinationStream;
  return pretty({
    destination: out === process.stdout ? 1 : out,
    sync: true,
    colorize: (out as { isTTY?: boolean }).isTTY === true,
    translateTime: 'SYS:HH:MM:ss.l',
    hideObject: true,
    ignore: [...HIDDEN].filter((k) => k !== 'level' && k !== 'time' && k !== 'msg').join(','),
    messageFormat: (log) => prettyLine(log),
  });
}
