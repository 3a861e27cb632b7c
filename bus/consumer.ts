import type { JetStreamClient, JsMsg, ConsumerMessages } from '@nats-io/jetstream';
import { headers as natsHeaders } from '@nats-io/nats-core';
import type { Logger } from 'pino';
import { SpanKind, SpanStatusCode, context, trace, type Span } from '@opentelemetry/api';
import { extractTraceContext, getTracer, scrub } from '../observability/index.ts';
import { H, headersToRecord, openEnvelope, type Envelope, type MessageType } from './envelope.ts';
import type { InvalidMessageError} from './errors.ts';
import { BusError, toFailure, type Failure } from './errors.ts';

export interface BackoffPolicy {
  /** delay before the 2nd delivery (default 500 ms) */
  initialMs: number;
  /** cap (default 60 s) */
  maxMs: number;
  /** growth per attempt (default 2) */
  factor: number;
  /** ± fraction of random jitter (default 0.2) */
  jitter: number;
}

/**
 * How long each pull request of a consumer lasts. The server sends idle heartbeats every half of
 * it and the client pulls again after two missed ones, so a pull lost with its consumer's leader
 * (a cluster node died or was cut off) is replaced within about this long (nats.js's default,
 * 30 s, let the work wait that long after a failover).
 */
export const PULL_EXPIRES_MS = 10_000;

export const DEFAULT_BACKOFF: BackoffPolicy = { initialMs: 500, maxMs: 60_000, factor: 2, jitter: 0.2 };

/** Exponential backoff with jitter for the given (1-based) delivery that just failed. */
export function backoffDelay(policy: BackoffPolicy, deliveryCount: number, random: () => number = Math.random): number {
  const base = Math.min(policy.maxMs, policy.initialMs * policy.factor ** Math.max(0, deliveryCount - 1));
  const spread = base * policy.jitter;
  return Math.max(0, Math.round(base - spread + random() * 2 * spread));
}

export interface HandlerContext {
  /** aborted on the task's timeout or when the consumer is stopped without grace */
  signal: AbortSignal;
  /** tells the server the task is still running (the runtime also does this on a timer) */
  working(): void;
  span: Span;
  logger: Logger | undefined;
}

export type Handler<T> = (env: Envelope<T>, ctx: HandlerContext) => Promise<void>;

export interface DeadLetter {
  reason: string;
  error: { code: string; name: string; message: string };
  subject: string;
  stream: string;
  streamSeq: number;
  consumer: string;
  deliveries: number;
  deadAt: string;
  headers: Record<string, string>;
  /** the original body: UTF-8 text when it decodes, otherwise base64 */
  body: string;
  bodyEncoding: 'utf8' | 'base64';
}

export interface ConsumeOptions<T> {
  js: JetStreamClient;
  stream: string;
  durable: string;
  /** message types this consumer accepts (by `Keel-Type`) */
  accepts: ReadonlyArray<MessageType<T>>;
  handler: Handler<T>;
  /** where dead letters go */
  dlqSubject: string;
  /** attempts before a failing message is dead-lettered (default 5; the consumer's server max_deliver is one more) */
  maxDeliver?: number;
  backoff?: Partial<BackoffPolicy>;
  /** handlers running at once in this process (default 1) */
  concurrency?: number;
  /** per-task timeout; the handler's signal aborts and the attempt counts as a retryable failure */
  timeoutMs?: number;
  /** the consumer's ack_wait; the runtime calls working() at a third of it (default 30 s) */
  ackWaitMs?: number;
  /**
   * messages the client buffers ahead of the handlers (default max(2 x concurrency, 16)). Keep it
   * small for slow handlers: a buffered message's ack_wait is already running.
   */
  prefetch?: number;
  /** bodies above this are dead-lettered unread (default 1 MiB) */
  maxPayloadBytes?: number;
  logger?: Logger;
  /**
   * called before a dead letter is acked, with the envelope when the message was valid; if it
   * throws, the message is not acked and comes back (so a workflow always learns of the failure).
   * `headers` are the original message's (they carry e.g. a workflow task's run coordinates even
   * when the body could not be parsed into an envelope); `dlq` is where the letter was stored.
   */
  onDeadLetter?: (d: {
    envelope: Envelope<T> | undefined;
    reason: string;
    error: { code: string; name: string; message: string };
    headers: Record<string, string>;
    dlq: { stream: string; subject: string; seq: number };
  }) => Promise<void>;
  /** called after each outcome (metrics) */
  onOutcome?: (o: { outcome: 'ack' | 'retry' | 'dead_letter'; type: string; reason?: string; durationMs: number }) => void;
}

export interface ConsumerStats {
  handled: number;
  retried: number;
  deadLettered: number;
  deadLetterReasons: Record<string, number>;
  inFlight: number;
}

export interface ConsumerHandle {
  stats: ConsumerStats;
  /** stop fetching, let in-flight handlers finish (up to graceMs, then abort them and nak) */
  stop(graceMs?: number): Promise<void>;
  /** resolves when the consume loop ends */
  closed: Promise<void>;
}

const textDecoder = new TextDecoder('utf-8', { fatal: true });
function bodyOf(data: Uint8Array): { body: string; bodyEncoding: 'utf8' | 'base64' } {
  try {
    return { body: textDecoder.decode(data), bodyEncoding: 'utf8' };
  } catch {
    return { body: Buffer.from(data).toString('base64'), bodyEncoding: 'base64' };
  }
}

/**
 * Runs a durable pull consumer: validates each message into an {@link Envelope}, runs the
 * handler in a span that is the child of the publisher's, and decides from the outcome alone:
 * ack on success; `nak(backoff)` on a retryable failure; dead-letter (publish the reason, error,
 * original headers and body to `dlqSubject`, then ack) on a permanent failure, on the last
 * attempt, or at once for a message that is not valid. Nothing is retried forever.
 */
export async function runConsumer<T>(opts: ConsumeOptions<T>): Promise<ConsumerHandle> {
  const accepts = new Map(opts.accepts.map((m) => [m.type, m] as const));
  const maxDeliver = opts.maxDeliver ?? 5;
  const policy = { ...DEFAULT_BACKOFF, ...opts.backoff };
  const concurrency = Math.max(1, opts.concurrency ?? 1);
  const ackWaitMs = opts.ackWaitMs ?? 30_000;
  const maxPayload = opts.maxPayloadBytes ?? 1024 * 1024;
  const log = opts.logger;
  const tracer = getTracer('keel.bus');
  const stats: ConsumerStats = { handled: 0, retried: 0, deadLettered: 0, deadLetterReasons: {}, inFlight: 0 };
  // handlers running now: one timer sends working() for the long ones, and stop() can abort them
  const active = new Set<{ m: JsMsg; ac: AbortController; since: number }>();
  const beatEvery = Math.max(1_000, Math.floor(ackWaitMs / 3));
  const heartbeat = setInterval(() => {
    const now = performance.now();
    for (const t of active) if (now - t.since >= beatEvery) t.m.working();
  }, beatEvery);
  heartbeat.unref();

  const consumer = await opts.js.consumers.get(opts.stream, opts.durable);
  const messages: ConsumerMessages = await consumer.consume({ max_messages: opts.prefetch ?? Math.max(concurrency * 2, 16), expires: PULL_EXPIRES_MS });

  const inFlight = new Set<Promise<void>>();
  let slotFree: (() => void) | undefined;

  const deadLetter = async (m: JsMsg, headers: Record<string, string>, rawReason: string, failure: Pick<Failure, 'code' | 'name' | 'message'>, env?: Envelope<T>) => {
    // reason and error text are diagnostics: scrubbed of secrets and card numbers (the body is the data, kept as is)
    const reason = scrub(rawReason);
    const f = { code: failure.code, name: failure.name, message: scrub(failure.message) };
    const letter: DeadLetter = {
      reason,
      error: { code: f.code, name: f.name, message: f.message },
      subject: m.subject,
      stream: opts.stream,
      streamSeq: m.seq,
      consumer: opts.durable,
      deliveries: m.info.deliveryCount,
      deadAt: new Date().toISOString(),
      headers,
      ...bodyOf(m.data),
    };
    const h = natsHeaders();
    // one dead letter per stream message, even if this publish is retried after a crash
    h.set(H.msgId, `dlq:${opts.stream}:${m.seq}`);
    h.set('Keel-Dlq-Reason', reason);
    const tp = headers[H.traceparent];
    if (tp) h.set(H.traceparent, tp);
    const ack = await opts.js.publish(opts.dlqSubject, JSON.stringify(letter), { headers: h });
    if (opts.onDeadLetter) {
      await opts.onDeadLetter({ envelope: env, reason, error: { code: f.code, name: f.name, message: f.message }, headers, dlq: { stream: ack.stream, subject: opts.dlqSubject, seq: ack.seq } });
    }
    m.ack();
    stats.deadLettered++;
    stats.deadLetterReasons[reason] = (stats.deadLetterReasons[reason] ?? 0) + 1;
    log?.warn({ reason, error: f.message, subject: m.subject, seq: m.seq, deliveries: m.info.deliveryCount, dlq: opts.dlqSubject }, 'message dead-lettered');
  };

  const handleOne = async (m: JsMsg): Promise<void> => {
    const t0 = performance.now();
    const headers = headersToRecord(m.headers);
    const deliveryCount = m.info.deliveryCount;
    let type = headers[H.type] ?? '(none)';
    const parent = extractTraceContext(headers);
    const span = tracer.startSpan(`process ${m.subject}`, {
      kind: SpanKind.CONSUMER,
      attributes: {
        'messaging.system': 'nats',
        'messaging.destination.name': m.subject,
        'messaging.consumer.group.name': opts.durable,
        'messaging.message.id': headers[H.msgId] ?? '',
        'messaging.message.delivery_count': deliveryCount,
        'keel.message.type': type,
      },
    }, parent);
    const outcome = (o: 'ack' | 'retry' | 'dead_letter', reason?: string) =>
      opts.onOutcome?.({ outcome: o, type, durationMs: performance.now() - t0, ...(reason ? { reason } : {}) });
    try {
      let env: Envelope<T>;
      try {
        env = openEnvelope({ subject: m.subject, data: m.data, headers, deliveryCount, streamSeq: m.seq }, accepts, maxPayload);
        type = env.type;
      } catch (err) {
        const e = err as InvalidMessageError;
        span.setStatus({ code: SpanStatusCode.ERROR, message: e.message });
        await deadLetter(m, headers, e.reason ?? 'invalid', toFailure(err));
        outcome('dead_letter', e.reason);
        return;
      }
      if (deliveryCount > maxDeliver) {
        // the previous attempt was the last one and its process died mid-task
        await deadLetter(m, headers, 'max_deliveries', { code: 'MAX_DELIVERIES', name: 'MaxDeliveries', message: `no attempt of ${maxDeliver} completed (the last one did not finish)` }, env);
        outcome('dead_letter', 'max_deliveries');
        return;
      }
      const ac = new AbortController();
      const task = { m, ac, since: performance.now() };
      active.add(task);
      const timer = opts.timeoutMs ? setTimeout(() => ac.abort(new BusError('BUS_HANDLER_TIMEOUT', `timed out after ${opts.timeoutMs} ms`, { retryable: true })), opts.timeoutMs) : undefined;
      try {
        const run = context.with(trace.setSpan(parent, span), () =>
          opts.handler(env, { signal: ac.signal, working: () => m.working(), span, logger: log }),
        );
        // a handler that ignores its signal still loses its slot on timeout
        await (opts.timeoutMs
          ? Promise.race([run, new Promise<never>((_, rej) => ac.signal.addEventListener('abort', () => rej(ac.signal.reason as Error), { once: true }))])
          : run);
        m.ack();
        stats.handled++;
        if (opts.onOutcome) outcome('ack');
      } catch (err) {
        const f = toFailure(err);
        span.recordException(err as Error);
        span.setStatus({ code: SpanStatusCode.ERROR, message: f.message });
        if (f.retryable && deliveryCount < maxDeliver) {
          const delay = f.nextDelayMs ?? backoffDelay(policy, deliveryCount);
          m.nak(delay);
          stats.retried++;
          log?.warn({ err: f.message, code: f.code, subject: m.subject, deliveryCount, retryInMs: delay }, 'task failed; will retry');
          outcome('retry', f.code);
        } else {
          await deadLetter(m, headers, f.retryable ? 'max_deliveries' : 'permanent_error', f, env);
          outcome('dead_letter', f.retryable ? 'max_deliveries' : 'permanent_error');
        }
      } finally {
        active.delete(task);
        if (timer) clearTimeout(timer);
      }
    } catch (err) {
      // the dead-letter publish itself failed: leave the message unacked for redelivery
      log?.error({ err, subject: m.subject }, 'could not settle message; it will be redelivered');
      try {
        m.nak(1_000);
      } catch {
        /* connection gone: the server redelivers after ack_wait */
      }
    } finally {
      span.end();
    }
  };

  const closed = (async () => {
    for await (const m of messages) {
      while (inFlight.size >= concurrency) await new Promise<void>((r) => (slotFree = r));
      stats.inFlight = inFlight.size + 1;
      const p = handleOne(m).finally(() => {
        inFlight.delete(p);
        stats.inFlight = inFlight.size;
        const f = slotFree;
        slotFree = undefined;
        f?.();
      });
      inFlight.add(p);
    }
    await Promise.allSettled([...inFlight]);
  })();

  return {
    stats,
    closed,
    stop: async (graceMs = 10_000) => {
      await messages.close().catch(() => undefined);
      const all = Promise.allSettled([...inFlight]);
      const t = setTimeout(() => {
        for (const a of active) a.ac.abort(new BusError('BUS_CONSUMER_STOPPED', 'consumer stopped', { retryable: true }));
      }, graceMs);
      await all;
      clearTimeout(t);
      clearInterval(heartbeat);
      await closed.catch(() => undefined);
    },
  };
}
