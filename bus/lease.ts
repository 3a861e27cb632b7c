import { jetstream, jetstreamManager, type Consumer, type JsMsg } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import type { Logger } from 'pino';
import { subjects, leaseDurable } from './subjects.ts';

/**
 * A lease held as a JetStream token: one message per lease (`<p>.lease.<name>` on `<P>_LEASES`)
 * and one durable consumer with `max_ack_pending` 1. Whoever receives the token holds the lease
 * and keeps it by telling the server it is still working on it (`+WPI`) well within the
 * consumer's ack wait; it never acks it. The others wait in a pull request. When the holder
 * dies, its ack wait runs out and the server hands the token to a waiting participant; a
 * graceful release (`-NAK`) hands it over at once.
 *
 * Nobody polls, and only the holder talks: waiting participants cost the server one pending
 * pull request each (renewed once a minute), not a message per renewal.
 *
 * ```ts
 * const lease = await holdLease(nc, 'workflow-timers', {
 *   prefix, holder: instanceId,
 *   onAcquired: () => startSweeping(),
 *   onLost: () => stopSweeping(),
 * });
 * await lease.release();                    // graceful: the next holder takes over at once
 * ```
 *
 * Two holders can overlap briefly (a holder stalled past the ack wait learns that it lost the
 * lease on its next check), so guard the work with something that tolerates it (the workflow
 * engine's expected versions do).
 */
export interface LeaseOptions {
  /** subject prefix (default keel) */
  prefix?: string;
  /** this participant's id, for logs */
  holder: string;
  onAcquired(): void;
  onLost(): void;
  /** how often the holder renews (default: a third of the consumer's ack wait) */
  renewMs?: number;
  /** how long a waiting participant's pull request lasts before it is renewed (default 60 s) */
  waitMs?: number;
  logger?: Logger;
}

export interface Lease {
  /** whether this participant holds the lease now */
  holding(): boolean;
  /** how often this participant acquired the lease */
  acquisitions(): number;
  /** stop taking part; a holder hands the lease over at once */
  release(): Promise<void>;
}

export async function holdLease(nc: NatsConnection, name: string, opts: LeaseOptions): Promise<Lease> {
  const log = opts.logger;
  const s = subjects(opts.prefix ?? 'keel');
  const consumer: Consumer = await jetstream(nc).consumers.get(s.streams.leases, leaseDurable(name));
  const ackWaitMs = Math.round(((await consumer.info(true)).config.ack_wait ?? 30e9) / 1e6);
  const renewMs = opts.renewMs ?? Math.max(100, Math.floor(ackWaitMs / 3));
  const jsm = await jetstreamManager(nc);
  let token: JsMsg | undefined;
  let acquisitions = 0;
  let stopped = false;
  let renewTimer: NodeJS.Timeout | undefined;
  let wake: (() => void) | undefined;
  let fetching: { stop(): void } | undefined;

  const lose = (why: string) => {
    if (!token) return;
    token = undefined;
    if (renewTimer) clearInterval(renewTimer);
    renewTimer = undefined;
    log?.info({ lease: name, why }, 'lease lost');
    opts.onLost();
    wake?.();
  };

  let renewals = 0;
  const renew = async (m: JsMsg) => {
    if (token !== m) return;
    try {
      m.working();
      // every third renewal: is the token still ours? (after a stall past the ack wait the
      // server has handed it to someone else, and this process's renewals no longer count)
      if (++renewals % 3 !== 0) return;
      const info = await jsm.consumers.info(s.streams.leases, leaseDurable(name));
      if (token === m && info.delivered.consumer_seq !== m.info.deliverySequence) lose('handed to another participant after a stall');
    } catch (err) {
      // a closed or reconnecting connection: the next renewal (or the close handler) decides
      log?.debug({ err, lease: name }, 'lease renewal failed; will try again');
    }
  };

  // wait for the token; hold it; after losing it, wait again
  const loop = (async () => {
    while (!stopped) {
      if (token) {
        await new Promise<void>((r) => (wake = r));
        wake = undefined;
        continue;
      }
      try {
        const iter = await consumer.fetch({ max_messages: 1, expires: opts.waitMs ?? 60_000 });
        fetching = iter;
        for await (const m of iter) {
          if (stopped) {
            m.nak();
            break;
          }
          token = m;
          acquisitions++;
          renewals = 0;
          renewTimer = setInterval(() => void renew(m), renewMs);
          renewTimer.unref();
          log?.info({ lease: name, holder: opts.holder }, 'lease acquired');
          opts.onAcquired();
        }
      } catch (err) {
        if (stopped || nc.isClosed()) break;
        // no server, a missed heartbeat, a server restart: ask again shortly
        log?.debug({ err, lease: name }, 'waiting for the lease failed; retrying');
        await new Promise((r) => setTimeout(r, renewMs).unref());
      } finally {
        fetching = undefined;
      }
    }
  })();
  void nc.closed().then(() => lose('bus connection closed'));

  return {
    holding: () => token !== undefined,
    acquisitions: () => acquisitions,
    release: async () => {
      if (stopped) return;
      stopped = true;
      fetching?.stop();
      const m = token;
      lose('released');
      try {
        m?.nak(); // hand it over now, not after the ack wait
      } catch {
        // the connection is gone: the server hands it over when the ack wait runs out
      }
      wake?.();
      await Promise.race([loop, new Promise((r) => setTimeout(r, 1_000).unref())]);
    },
  };
}
