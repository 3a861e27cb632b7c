import { jetstream, jetstreamManager, type JetStreamClient } from '@nats-io/jetstream';
import type { NatsConnection, Subscription } from '@nats-io/nats-core';
import type { Logger } from 'pino';
import { SpanKind, context, trace } from '@opentelemetry/api';
import { getTracer, injectTraceHeaders, extractTraceContext } from '../observability/index.ts';
import { KeelError, natsMaxBytesFromEnv, natsReplicasFromEnv } from '../config/index.ts';
import { buildHeaders, headersToRecord, openEnvelope, type EnvelopeMeta, type MessageType, type Envelope } from './envelope.ts';
import { InvalidMessageError, RequestTimeoutError, NoRespondersError, BusError, toFailure } from './errors.ts';
import { subjects as subjectSpace, type Subjects } from './subjects.ts';
import { keelTopology, provisionBus, consumerSpecFor, eventConsumerSpec, ensureConsumer, type ProvisionReport } from './provision.ts';
import { runConsumer, type ConsumerHandle, type Handler, type BackoffPolicy } from './consumer.ts';
import { runEventConsumer, subscribeEvents, type EntityEventMessage, type EventConsumerHandle } from './events.ts';

export interface PublishResult {
  id: string;
  seq: number;
  /** the server already had a message with this Nats-Msg-Id: this publish stored nothing */
  duplicate: boolean;
}

export interface TaskConsumerOptions<T> {
  accepts: ReadonlyArray<MessageType<T>>;
  handler: Handler<T>;
  maxDeliver?: number;
  backoff?: Partial<BackoffPolicy>;
  concurrency?: number;
  timeoutMs?: number;
  ackWaitMs?: number;
  maxAckPending?: number;
  maxPayloadBytes?: number;
  prefetch?: number;
  onDeadLetter?: Parameters<typeof runConsumer<T>>[0]['onDeadLetter'];
  onOutcome?: Parameters<typeof runConsumer<T>>[0]['onOutcome'];
}

export interface EventConsumerOptions {
  /** durable consumer name, one per reader (letters, digits, '_', '-'); it keeps its position across restarts */
  durable: string;
  /** whose events: `<p>.evt.<entityType>.*` */
  entityType: string;
  /** resolves: ack; throws: redelivered after `retryDelayMs` */
  handler: (event: EntityEventMessage) => Promise<void>;
  /** deliveries per event, then the server gives up on it (default 10) */
  maxDeliver?: number;
  /** default 30 s */
  ackWaitMs?: number;
  /** delay before a failed event comes back (default 1 s) */
  retryDelayMs?: number;
  /** default 64 */
  prefetch?: number;
  /** called when the handler threw (default: a warning on the bus's logger) */
  onError?: (err: unknown, event: EntityEventMessage) => void;
}

export interface Bus {
  nc: NatsConnection;
  js: JetStreamClient;
  subjects: Subjects;
  /**
   * create/update the streams and buckets Keel needs (idempotent); replicas and the byte budget
   * default to the bus's own (createBus options, else KEEL_NATS_REPLICAS / KEEL_NATS_MAX_BYTES)
   */
  provision(opts?: { replicas?: number; maxBytes?: number; registryTtlMs?: number; leaseTtlMs?: number }): Promise<ProvisionReport[]>;
  /** validate, stamp headers (ids, trace context), publish to JetStream and wait for the ack */
  publish<T>(subject: string, type: MessageType<T>, data: T, meta?: EnvelopeMeta): Promise<PublishResult>;
  /** competing consumer of `<p>.task.<capability>` with retries and dead letters */
  consumeTasks<T>(capability: string, opts: TaskConsumerOptions<T>): Promise<ConsumerHandle>;
  /**
   * durable consumer of an entity type's change events (`<p>.evt.<entityType>.*`), created on
   * first use and starting from then (not the stream's history); explicit acks, in order
   */
  consumeEvents(opts: EventConsumerOptions): Promise<EventConsumerHandle>;
  /** live events of an entity type over core NATS (best-effort: no replay, no redelivery) */
  subscribeEvents(entityType: string, handler: (event: EntityEventMessage) => void | Promise<void>, opts?: { onError?: (err: unknown) => void }): { stop(): void };
  /** request/reply over core NATS with a timeout */
  request<Q, R>(service: string, req: MessageType<Q>, data: Q, res: MessageType<R>, opts?: { timeoutMs?: number }): Promise<R>;
  /** answer requests (queue group: replicas share them) */
  serve<Q, R>(service: string, req: MessageType<Q>, handler: (env: Envelope<Q>) => Promise<R>, opts?: { queue?: string }): { stop(): void };
  close(): Promise<void>;
}

export interface CreateBusOptions {
  prefix?: string;
  logger?: Logger;
  /** replicas of the streams and buckets `provision()` makes (default KEEL_NATS_REPLICAS, else 1) */
  replicas?: number;
  /** bytes all streams together may hold, per replica (default KEEL_NATS_MAX_BYTES, else 1 GiB) */
  maxBytes?: number;
}

export function createBus(nc: NatsConnection, opts: CreateBusOptions = {}): Bus {
  const js = jetstream(nc);
  const replicas = opts.replicas ?? natsReplicasFromEnv();
  const maxBytes = opts.maxBytes ?? natsMaxBytesFromEnv();
  const s = subjectSpace(opts.prefix ?? 'keel');
  const log = opts.logger;
  const tracer = getTracer('keel.bus');

  const publish: Bus['publish'] = async (subject, type, data, meta = {}) => {
    const parsed = type.schema.safeParse(data);
    if (!parsed.success) {
      throw new InvalidMessageError('schema_mismatch', parsed.error.issues.map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`));
    }
    const span = tracer.startSpan(`publish ${subject}`, { kind: SpanKind.PRODUCER, attributes: { 'messaging.system': 'nats', 'messaging.destination.name': subject, 'keel.message.type': type.type } });
    try {
      const { hdrs, id } = buildHeaders(type.type, meta, injectTraceHeaders(trace.setSpan(context.active(), span)));
      span.setAttribute('messaging.message.id', id);
      const ack = await js.publish(subject, JSON.stringify(parsed.data), { headers: hdrs });
      return { id, seq: ack.seq, duplicate: ack.duplicate };
    } catch (err) {
      span.recordException(err as Error);
      if (err instanceof InvalidMessageError) throw err;
      throw new BusError('BUS_PUBLISH_FAILED', `publish to ${subject} failed: ${(err as Error).message}`, { cause: err, retryable: true });
    } finally {
      span.end();
    }
  };

  return {
    nc,
    js,
    subjects: s,
    provision: async (o = {}) => provisionBus(nc, keelTopology({ prefix: s.prefix, replicas, maxBytes, ...o })),
    publish,
    consumeTasks: async (capability, o) => {
      const spec = consumerSpecFor(capability, { prefix: s.prefix, maxDeliver: o.maxDeliver, ackWaitMs: o.ackWaitMs, maxAckPending: o.maxAckPending });
      await ensureConsumer(await jetstreamManager(nc), spec);
      return runConsumer({
        js,
        stream: spec.stream,
        durable: spec.durable,
        accepts: o.accepts,
        handler: o.handler,
        dlqSubject: s.dlq(capability),
        maxDeliver: o.maxDeliver,
        backoff: o.backoff,
        concurrency: o.concurrency,
        timeoutMs: o.timeoutMs,
        ackWaitMs: spec.ackWaitMs,
        maxPayloadBytes: o.maxPayloadBytes,
        prefetch: o.prefetch,
        onDeadLetter: o.onDeadLetter,
        logger: log,
        onOutcome: o.onOutcome,
      });
    },
    consumeEvents: async (o) => {
      const spec = eventConsumerSpec(o.durable, o.entityType, { prefix: s.prefix, maxDeliver: o.maxDeliver, ackWaitMs: o.ackWaitMs });
      await ensureConsumer(await jetstreamManager(nc), spec);
      return runEventConsumer({ js, stream: spec.stream, durable: spec.durable, handler: o.handler, retryDelayMs: o.retryDelayMs, prefetch: o.prefetch, onError: o.onError, logger: log });
    },
    subscribeEvents: (entityType, handler, o = {}) => subscribeEvents(nc, s.evtAll(entityType), handler, { onError: o.onError, logger: log }),
    request: async (service, req, data, res, o = {}) => {
      const subject = s.rpc(service);
      const parsed = req.schema.safeParse(data);
      if (!parsed.success) throw new InvalidMessageError('schema_mismatch', parsed.error.issues.map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`));
      const { hdrs } = buildHeaders(req.type, {}, injectTraceHeaders());
      const timeoutMs = o.timeoutMs ?? 5_000;
      let reply;
      try {
        reply = await nc.request(subject, JSON.stringify(parsed.data), { timeout: timeoutMs, headers: hdrs });
      } catch (err) {
        const e = err as { name?: string; isNoResponders?: () => boolean };
        if (e.name === 'NoRespondersError' || e.isNoResponders?.()) throw new NoRespondersError(subject, err);
        if (e.name === 'TimeoutError') throw new RequestTimeoutError(subject, timeoutMs, err);
        throw err;
      }
      const body = reply.json<{ ok: boolean; data?: unknown; error?: { code: string; message: string; retryable: boolean } }>();
      if (!body.ok) {
        // the responder's own error, with its code and retryability
        throw new KeelError(body.error?.code ?? 'BUS_REQUEST_FAILED', body.error?.message ?? 'request failed', { retryable: body.error?.retryable ?? false });
      }
      return res.schema.parse(body.data);
    },
    serve: (service, req, handler, o = {}) => {
      const subject = s.rpc(service);
      const accepts = new Map([[req.type, req]]);
      const sub: Subscription = nc.subscribe(subject, {
        queue: o.queue ?? service,
        callback: (err, msg) => {
          if (err) return void log?.error({ err, subject }, 'request subscription failed');
          const headers = headersToRecord(msg.headers);
          void (async () => {
            const span = tracer.startSpan(`serve ${subject}`, { kind: SpanKind.SERVER }, extractTraceContext(headers));
            try {
              const env = openEnvelope({ subject, data: msg.data, headers, deliveryCount: 1 }, accepts, 1024 * 1024);
              const result = await context.with(trace.setSpan(context.active(), span), () => handler(env));
              msg.respond(JSON.stringify({ ok: true, data: result }));
            } catch (e) {
              const f = toFailure(e);
              msg.respond(JSON.stringify({ ok: false, error: { code: f.code, message: f.message, retryable: f.retryable } }));
            } finally {
              span.end();
            }
          })();
        },
      });
      return { stop: () => sub.unsubscribe() };
    },
    close: async () => {
      await nc.drain().catch(() => undefined);
    },
  };
}
