import type { Logger } from 'pino';
import type { DiskGuard } from '../channels/index.ts';

/** What the watch needs of a supervised nats-server (bus/local-server.ts). */
export interface WatchedNatsServer {
  /** the log line of a JetStream storage failure since the server started (cleared by a restart) */
  readonly storeFault: string | undefined;
  readonly pid: number | undefined;
  /** SIGTERM: the server shuts down cleanly and its supervisor starts it again */
  kill(signal?: NodeJS.Signals): void;
}

export interface StorageWatch {
  /** nats-server restarts made to clear a storage failure */
  restarts(): number;
  /** the storage failure waiting for a restart, if any */
  pending(): string | undefined;
  stop(): void;
}

/**
 * Gets JetStream back after the disk filled up, without an operator. nats-server 2.14 stops
 * writing to a stream after a write error (ENOSPC) until it restarts, and a server (re)started on
 * a nearly full disk sizes its storage limit from the little space left. So when a supervised
 * server has logged such a failure and the disk guard sees the reserve free again, the server is
 * restarted (SIGTERM; its supervisor starts it again on the same port and store, and every client
 * reconnects). A failure that comes back right away is retried with backoff (10 s up to 5 min).
 */
export function startStorageWatch(o: { disk: DiskGuard; servers: () => readonly WatchedNatsServer[]; logger: Logger; everyMs?: number }): StorageWatch {
  let restarts = 0;
  let backoffMs = 10_000;
  let notBefore = 0;
  let waitingLogged = false;
  let pending: string | undefined;
  let busy = false;
  const tick = async () => {
    if (busy) return;
    busy = true;
    try {
      const faulty = o.servers().filter((s) => s.storeFault);
      pending = faulty[0]?.storeFault;
      if (faulty.length === 0) {
        waitingLogged = false;
        if (Date.now() > notBefore + 10 * 60_000) backoffMs = 10_000; // long healthy: forget the backoff
        return;
      }
      const disk = await o.disk.status();
      if (disk.status === 'low') {
        if (!waitingLogged) o.logger.warn({ nats: pending, free_bytes: disk.freeBytes, min_free_bytes: disk.minFreeBytes }, 'JetStream cannot write (disk full): nats-server will be restarted once free space is back above KEEL_MIN_FREE_MB');
        waitingLogged = true;
        return;
      }
      if (Date.now() < notBefore) return;
      for (const s of faulty) {
        o.logger.warn({ nats: s.storeFault, server_pid: s.pid, free_bytes: disk.freeBytes }, 'disk space is back: restarting nats-server to clear its JetStream storage failure');
        s.kill('SIGTERM');
        restarts++;
      }
      notBefore = Date.now() + backoffMs;
      backoffMs = Math.min(backoffMs * 2, 5 * 60_000);
      waitingLogged = false;
    } catch (err) {
      o.logger.warn({ err }, 'storage watch failed; trying again');
    } finally {
      busy = false;
    }
  };
  const timer = setInterval(() => void tick(), o.everyMs ?? 1_000);
  timer.unref();
  return { restarts: () => restarts, pending: () => pending, stop: () => clearInterval(timer) };
}
