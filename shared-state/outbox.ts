/**
 * The outbox: every committed event goes to `<prefix>.evt.<type>.<id>` with `Nats-Msg-Id` set to
 * the event id. Events are marked published only after the server acknowledged them, so a crash
 * between commit and publish (or between publish and mark) leaves them pending and the next relay
 * publishes them again; JetStream's duplicate window drops the second copy. Every committed event
 * therefore reaches the stream once in effect, provided a relay runs within the stream's
 * duplicate window (10 min) of a publish whose mark was lost; beyond it the stream holds a second
 * copy, which consumers absorb: a trigger derives its run id from the event id.
 *
 * The NATS side (the publisher, the subject, the stream) is the bus's: `natsEventPublisher`,
 * `eventSubject` and `ensureEventStream` in bus/events.ts.
 */
import { subjects, type EventPublisher } from '../bus/index.ts';
import type { CommittedEvent, StateStore } from './types.ts';

export type { EventPublisher };

/** The JSON body of a published event: the committed event as stored. */
export function encodeEvent(e: CommittedEvent): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(e));
}

export function eventHeaders(e: CommittedEvent): Record<string, string> {
  const h: Record<string, string> = {
    'Keel-Event-Type': e.type,
    'Keel-Entity-Type': e.entityType,
    'Keel-Entity-Id': e.entityId,
    'Keel-Version': String(e.version),
    'Keel-Cursor': String(e.cursor),
    'Keel-Actor': `${e.meta.actor.kind}:${e.meta.actor.id}`,
  };
  if (e.meta.correlationId) h['Keel-Correlation-Id'] = e.meta.correlationId;
  if (e.meta.causationId) h['Keel-Causation-Id'] = e.meta.causationId;
  if (e.meta.traceId) h['Keel-Trace-Id'] = e.meta.traceId;
  if (e.meta.idempotencyKey) h['Keel-Idempotency-Key'] = e.meta.idempotencyKey;
  return h;
}

export interface OutboxRelayOptions {
  /** how often to look for events other processes (or a crash) left unpublished; default 1000 ms */
  intervalMs?: number;
  /** subject prefix; default `keel` */
  prefix?: string;
  /** events per pass; default 500 */
  batchSize?: number;
  /** called when a publish or store call fails (the relay retries on the next tick) */
  onError?: (err: unknown) => void;
  /** publish at once after each commit made through this store object (default true) */
  immediate?: boolean;
}

export interface OutboxRelay {
  /** Publishes everything pending now; resolves with how many events it published. */
  flush(): Promise<number>;
  stop(): Promise<void>;
}

/**
 * Publishes pending events in cursor order, one at a time (so an entity's events reach the
 * stream in version order), marking each batch published after its acks.
 */
export function startOutboxRelay(store: StateStore, publisher: EventPublisher, opts: OutboxRelayOptions = {}): OutboxRelay {
  const s = subjects(opts.prefix ?? 'keel');
  const batch = opts.batchSize ?? 500;
  let running: Promise<number> | null = null;
  let again = false;
  let stopped = false;

  const pass = async (): Promise<number> => {
    let total = 0;
    for (;;) {
      const pending = await store.pendingEvents(batch);
      if (pending.length === 0 || stopped) return total;
      const done: string[] = [];
      try {
        for (const e of pending) {
          if (stopped) break;
          await publisher.publish(s.evt(e.entityType, e.entityId), encodeEvent(e), { msgId: e.eventId, headers: eventHeaders(e) });
          done.push(e.eventId);
        }
      } finally {
        await store.markPublished(done);
        total += done.length;
      }
      if (pending.length < batch) return total;
    }
  };

  const flush = (): Promise<number> => {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      let n = 0;
      do {
        again = false;
        n += await pass();
      } while (again && !stopped);
      return n;
    })().finally(() => {
      running = null;
    });
    return running;
  };

  const tick = () => {
    if (stopped) return;
    flush().catch((err) => opts.onError?.(err));
  };
  const timer = setInterval(tick, opts.intervalMs ?? 1_000);
  timer.unref();
  const unsubscribe = opts.immediate === false ? () => undefined : store.onCommit(() => setImmediate(tick));
  setImmediate(tick);

  return {
    flush,
    async stop() {
      stopped = true;
      clearInterval(timer);
      unsubscribe();
      await running?.catch(() => undefined);
    },
  };
}
