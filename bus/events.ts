/**
 * Entity change events on the bus: `<p>.evt.<entityType>.<entityId>` on the `<P>_EVT` stream.
 * The state's outbox relay (shared-state/outbox.ts) publishes them through an
 * {@link EventPublisher}; workflows and features read them with {@link runEventConsumer}
 * (durable, acked) or {@link subscribeEvents} (live, best-effort).
 */
import { jetstream, jetstreamManager, type JetStreamClient, type ConsumerMessages } from '@nats-io/jetstream';
import { headers, type Msg, type MsgHdrs, type NatsConnection } from '@nats-io/nats-core';
import type { Logger } from 'pino';
import { natsMaxBytesFromEnv, natsReplicasFromEnv } from '../config/index.ts';
import { headersToRecord } from './envelope.ts';
import { subjects } from './subjects.ts';
import { ensureStream, eventStreamSpec } from './provision.ts';
import { PULL_EXPIRES_MS } from './consumer.ts';

export interface EventPublisher {
  /** resolves once the event is durably accepted (JetStream ack); rejects otherwise */
  publish(subject: string, payload: Uint8Array, opts: { msgId: string; headers: Record<string, string> }): Promise<void>;
}

/** `<prefix>.evt.<entityType>.<entityId>` */
export function eventSubject(prefix: string, entityType: string, entityId: string): string {
  return subjects(prefix).evt(entityType, entityId);
}

/** `KEEL_EVT` for prefix `keel`. */
export function eventStreamName(prefix = 'keel'): string {
  return subjects(prefix).streams.evt;
}

/**
 * Provisions the event stream from the same declaration as `keelTopology` / `bus.provision()`
 * (`<P>_EVT` on `<prefix>.evt.>`, 1 h duplicate window): creates it, or brings an existing one
 * to that definition. Returns the stream's name.
 */
export async function ensureEventStream(nc: NatsConnection, prefix = 'keel', opts: { replicas?: number; maxBytes?: number } = {}): Promise<string> {
  // the same defaults as createBus's provision(), so the two never undo each other's settings
  const spec = eventStreamSpec({ prefix, replicas: natsReplicasFromEnv(), maxBytes: natsMaxBytesFromEnv(), ...opts });
  await ensureStream(await jetstreamManager(nc), spec);
  return spec.name;
}

/** Publishes with JetStream and waits for the ack (the server dedupes on `Nats-Msg-Id`). */
export function natsEventPublisher(nc: NatsConnection): EventPublisher {
  const js = jetstream(nc);
  return {
    async publish(subject, payload, opts) {
      const h = headers();
      for (const [k, v] of Object.entries(opts.headers)) h.set(k, v);
      await js.publish(subject, payload, { msgID: opts.msgId, headers: h });
    },
  };
}

/** One entity event as received (the body is the committed event as the outbox published it). */
export interface EntityEventMessage {
  subject: string;
  entityType: string;
  entityId: string;
  headers: Record<string, string>;
  data: Uint8Array;
  /** the body parsed as JSON (throws on a malformed body) */
  json<T = unknown>(): T;
  /** 1 on the first delivery; always 1 on a live subscription */
  deliveryCount: number;
  /** the stream sequence (durable consumers only) */
  streamSeq: number | undefined;
}

function eventMessage(m: { subject: string; data: Uint8Array; headers?: MsgHdrs; json<T>(): T }, deliveryCount: number, streamSeq: number | undefined): EntityEventMessage {
  const parts = m.subject.split('.');
  return {
    subject: m.subject,
    entityType: parts[parts.length - 2] ?? '',
    entityId: parts[parts.length - 1] ?? '',
    headers: headersToRecord(m.headers),
    data: m.data,
    json: <T>() => m.json<T>(),
    deliveryCount,
    streamSeq,
  };
}

export interface EventConsumerHandle {
  stats: { handled: number; retried: number };
  /** stop fetching and wait for the message being handled */
  stop(): Promise<void>;
  /** resolves when the consume loop ends */
  closed: Promise<void>;
}

export interface RunEventConsumerOptions {
  js: JetStreamClient;
  stream: string;
  durable: string;
  /** resolves: ack; throws: nak, redelivered after `retryDelayMs` (until the consumer's max_deliver) */
  handler: (event: EntityEventMessage) => Promise<void>;
  /** default 1000 ms */
  retryDelayMs?: number;
  /** messages buffered ahead of the handler (default 64) */
  prefetch?: number;
  /** called when the handler threw (default: a warning on `logger`) */
  onError?: (err: unknown, event: EntityEventMessage) => void;
  logger?: Logger;
}

/**
 * Runs an existing durable consumer of the event stream, one event at a time (so an entity's
 * events are handled in order): ack when the handler resolves, `nak(retryDelayMs)` when it throws.
 */
export async function runEventConsumer(o: RunEventConsumerOptions): Promise<EventConsumerHandle> {
  const consumer = await o.js.consumers.get(o.stream, o.durable);
  const msgs: ConsumerMessages = await consumer.consume({ max_messages: o.prefetch ?? 64, expires: PULL_EXPIRES_MS });
  const stats = { handled: 0, retried: 0 };
  const onError = o.onError ?? ((err: unknown, e: EntityEventMessage) => o.logger?.warn({ err, subject: e.subject, consumer: o.durable, deliveryCount: e.deliveryCount }, 'event handler failed; will retry'));
  const closed = (async () => {
    for await (const m of msgs) {
      const e = eventMessage(m, m.info.deliveryCount, m.seq);
      try {
        await o.handler(e);
        m.ack();
        stats.handled++;
      } catch (err) {
        onError(err, e);
        stats.retried++;
        m.nak(o.retryDelayMs ?? 1_000);
      }
    }
  })();
  return {
    stats,
    closed,
    stop: async () => {
      await msgs.close().catch(() => undefined);
      await closed.catch(() => undefined);
    },
  };
}

/**
 * Live events of every entity of a type (`<p>.evt.<entityType>.*`) over core NATS: no replay, no
 * redelivery; what arrives while nobody listens is not seen here (use a durable consumer for that).
 */
export function subscribeEvents(nc: NatsConnection, subject: string, handler: (event: EntityEventMessage) => void | Promise<void>, opts: { onError?: (err: unknown) => void; logger?: Logger } = {}): { stop(): void } {
  const onError = opts.onError ?? ((err: unknown) => opts.logger?.warn({ err, subject }, 'event subscriber failed'));
  const sub = nc.subscribe(subject, {
    callback: (err, m: Msg) => {
      if (err) return void onError(err);
      try {
        void Promise.resolve(handler(eventMessage(m, 1, undefined))).catch(onError);
      } catch (e) {
        onError(e);
      }
    },
  });
  return { stop: () => sub.unsubscribe() };
}
