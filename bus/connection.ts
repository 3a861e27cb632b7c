import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import type { Logger } from 'pino';
import { BusAuthError, BusUnavailableError, BusPermissionError } from './errors.ts';

export type { NatsConnection } from '@nats-io/nats-core';

export interface BusConnectOptions {
  /** one URL or a comma-separated list (cluster seeds) */
  servers: string | string[];
  /** connection name shown by the server (`nats server report connections`) */
  name?: string;
  user?: string;
  pass?: string;
  logger?: Logger;
  /** give up on the first connect after this long (default 5 s); reconnects are unlimited */
  connectTimeoutMs?: number;
  /** default -1: reconnect forever */
  maxReconnectAttempts?: number;
  /**
   * PEM file of the CA that signed the server's TLS certificate (a private CA or a self-signed
   * certificate); default `KEEL_NATS_TLS_CA` from the environment, so every Keel process (engine,
   * CLI, agents) verifies the same way. Unset: a server that requires TLS is verified against the
   * system's CAs.
   */
  tlsCaFile?: string;
}

/** How often the client pings its server; two unanswered pings and it reconnects elsewhere. */
export const PING_INTERVAL_MS = 5_000;

/**
 * Connects to NATS with unlimited reconnects and turns the client's errors into Keel's typed
 * bus errors: {@link BusUnavailableError} when no server answers, {@link BusAuthError} when
 * the credentials are refused. Permission violations reported asynchronously are logged.
 */
export async function connectBus(opts: BusConnectOptions): Promise<NatsConnection> {
  const servers = Array.isArray(opts.servers) ? opts.servers : opts.servers.split(',').map((s) => s.trim()).filter(Boolean);
  const caFile = opts.tlsCaFile ?? (process.env.KEEL_NATS_TLS_CA || undefined);
  let nc: NatsConnection;
  try {
    nc = await connect({
      servers,
      name: opts.name,
      user: opts.user,
      pass: opts.pass,
      timeout: opts.connectTimeoutMs ?? 5_000,
      maxReconnectAttempts: opts.maxReconnectAttempts ?? -1,
      reconnectTimeWait: 250,
      reconnectJitter: 100,
      // a server that stops answering without closing the connection (a frozen or partitioned
      // cluster node) is given up after 2 unanswered pings: within 10-15 s the client moves to
      // another server of the list
      pingInterval: PING_INTERVAL_MS,
      maxPingOut: 2,
      // nats.js otherwise makes an Error (a stack capture) per request and JetStream publish, in
      // case it fails: about 2 % of a workflow step's CPU. Our errors say what failed without it.
      noAsyncTraces: true,
      ...(caFile ? { tls: { caFile } } : {}),
    });
  } catch (err) {
    const name = (err as Error | undefined)?.name ?? '';
    const msg = (err as Error | undefined)?.message ?? '';
    if (name === 'AuthorizationError' || /authoriz|authentic/i.test(msg)) throw new BusAuthError(opts.user, err);
    throw new BusUnavailableError(servers.join(','), err);
  }
  const log = opts.logger;
  if (log) {
    void (async () => {
      for await (const s of nc.status()) {
        switch (s.type) {
          case 'disconnect':
            log.warn({ server: s.server }, 'bus disconnected; reconnecting');
            break;
          case 'reconnect':
            log.info({ server: s.server }, 'bus reconnected');
            break;
          case 'error': {
            const e = s.error as { name?: string; operation?: string; subject?: string } | undefined;
            if (e?.name === 'PermissionViolationError') {
              const perr = new BusPermissionError(e.operation === 'publish' ? 'publish' : 'subscribe', e.subject ?? '?', s.error);
              log.error({ err: perr, subject: perr.subject, operation: perr.operation }, 'bus permission denied');
            } else {
              log.error({ err: s.error }, 'bus error');
            }
            break;
          }
          default:
            break;
        }
      }
    })().catch(() => undefined);
  }
  return nc;
}
