/**
 * The embedded engine: what `keel start` (and `npm start`) runs on one machine.
 *
 * ```ts
 * import { startEngine } from './engine/index.ts';
 * const engine = await startEngine(loadConfig());
 * // ... GET http://127.0.0.1:8080/healthz
 * await engine.stop();
 * ```
 *
 * It starts and supervises a local nats-server with JetStream (unless `KEEL_NATS_URL` names
 * one), opens the system of record, and serves the HTTP API.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { MongoClient } from 'mongodb';
import type { DatabaseSync } from 'node:sqlite';
import { findTool, provision, KEEL_VERSION, type KeelConfig } from '../config/index.ts';
import { LocalNatsServer, connectBus, createBus, type Bus, type NatsConnection } from '../bus/index.ts';
import { openSqlite, parseStateUrl, probeState } from '../shared-state/index.ts';
import { createLogger } from '../observability/index.ts';
import { startHttpApi, type HealthReport, type HttpApi } from './http.ts';

export type { HealthReport, HttpApi } from './http.ts';

export interface Engine {
  config: KeelConfig;
  natsUrl: string;
  nats: NatsConnection;
  bus: Bus;
  localServer: LocalNatsServer | undefined;
  http: HttpApi;
  logger: Logger;
  stop(): Promise<void>;
}



async function natsServerBinary(cfg: KeelConfig, log: Logger): Promise<string> {
  if (cfg.natsServerBin) return cfg.natsServerBin;
  const found = findTool('nats-server');
  if (found) return found;
  if (!cfg.autoProvision) {
    throw new Error('no nats-server binary found: run `npm run provision` (builds the pinned release with Go), set KEEL_NATS_SERVER_BIN, or set KEEL_NATS_URL to use a running server');
  }
  log.info('no nats-server binary yet: building the pinned release once with deploy/provision.sh (about a minute)');
  await provision(['nats-server']);
  const built = findTool('nats-server');
  if (!built) throw new Error('deploy/provision.sh finished but no nats-server binary was found');
  return built;
}

export async function startEngine(cfg: KeelConfig, opts: { logger?: Logger } = {}): Promise<Engine> {
  const log = opts.logger ?? createLogger('keel', { level: cfg.logLevel });
  const started = Date.now();
  mkdirSync(cfg.dataDir, { recursive: true });
  const cleanups: Array<() => Promise<void>> = [];
  const cleanup = async () => {
    for (const fn of cleanups.reverse()) await fn().catch((err: unknown) => log.error({ err }, 'shutdown step failed'));
    cleanups.length = 0;
  };

  try {
    // 1. the bus
    let localServer: LocalNatsServer | undefined;
    let natsUrl = cfg.natsUrl;
    if (!natsUrl) {
      const bin = await natsServerBinary(cfg, log);
      localServer = new LocalNatsServer({ bin, port: cfg.natsPort, storeDir: join(cfg.dataDir, 'nats'), serverName: 'keel-embedded', logger: log });
      await localServer.start();
      cleanups.push(() => localServer!.stop());
      natsUrl = localServer.url;
    }
    const nats = await connectBus({ servers: natsUrl, name: 'keel-engine', logger: log });
    cleanups.push(() => nats.drain().catch(() => nats.close()));
    const bus = createBus(nats, { prefix: cfg.subjectPrefix, logger: log });
    const provisioned = await bus.provision();
    log.info({ changed: provisioned.filter((r) => r.action !== 'unchanged') }, 'bus streams and buckets provisioned');

    // 2. the system of record
    const state = parseStateUrl(cfg.state);
    let sqlite: DatabaseSync | undefined;
    let mongo: MongoClient | undefined;
    if (state.kind === 'sqlite') {
      sqlite = openSqlite(state.path);
      cleanups.push(async () => sqlite!.close());
    } else {
      const { MongoClient } = await import('mongodb');
      mongo = new MongoClient(state.url, { serverSelectionTimeoutMS: 5_000 });
      await mongo.connect();
      cleanups.push(() => mongo!.close());
    }
    log.info({ state: state.kind === 'sqlite' ? state.path : 'mongodb' }, 'state store open');

    // 3. the HTTP API
    const health = async (): Promise<HealthReport> => {
      let bus: HealthReport['bus'];
      try {
        const rtt = await nats.rtt();
        const info = nats.info;
        bus = { status: 'up', url: natsUrl, server_version: info?.version, jetstream: info?.jetstream ?? false, rtt_ms: rtt, local: !!localServer };
      } catch (err) {
        bus = { status: 'down', url: natsUrl, error: (err as Error).message, local: !!localServer };
      }
      const st = await probeState(cfg.state, { sqlite, mongo });
      return {
        status: bus.status === 'up' && st.status === 'up' ? 'ok' : 'degraded',
        version: KEEL_VERSION,
        uptime_s: Math.round((Date.now() - started) / 1000),
        bus,
        state: { ...st },
      };
    };
    const http = await startHttpApi({ host: cfg.httpHost, port: cfg.httpPort, health });
    cleanups.push(() => http.close());
    log.info({ url: `http://${cfg.httpHost}:${http.port}`, nats: natsUrl, dataDir: cfg.dataDir }, 'keel engine ready');

    return { config: cfg, natsUrl, nats, bus, localServer, http, logger: log, stop: cleanup };
  } catch (err) {
    await cleanup();
    throw err;
  }
}
