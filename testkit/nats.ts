import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { findTool } from '../config/index.ts';
import { LocalNatsServer, type LocalNatsUser } from '../bus/index.ts';
import { dockerAvailable, freePort, tempDir, type Availability, type ServerHandle } from './common.ts';

export interface NatsHandle extends ServerHandle {
  /** the local server (restart/kill in reliability tests); undefined for env/container servers */
  local?: LocalNatsServer;
}

export interface NatsClusterHandle {
  urls: string[];
  nodes: LocalNatsServer[];
  stop(): Promise<void>;
}

const NATS_IMAGE = 'nats:2.12-alpine';

/**
 * A NATS server with JetStream for one test file: `NATS_URL` from the environment first, then
 * a container when a Docker engine answers, then the provisioned nats-server binary on a free
 * port with a temp store. `users` forces a local server (the config needs them).
 */
export async function startNats(opts: { users?: LocalNatsUser[]; maxPayload?: number } = {}): Promise<Availability<NatsHandle>> {
  const needsLocal = !!opts.users || opts.maxPayload !== undefined;
  if (process.env.NATS_URL && !needsLocal) {
    return { ok: true, server: { url: process.env.NATS_URL, source: 'env', stop: async () => undefined } };
  }
  if (!needsLocal && (await dockerAvailable())) {
    const { GenericContainer, Wait } = await import('testcontainers');
    const c = await new GenericContainer(NATS_IMAGE).withCommand(['-js']).withExposedPorts(4222).withWaitStrategy(Wait.forLogMessage('Server is ready')).start();
    return { ok: true, server: { url: `nats://${c.getHost()}:${c.getMappedPort(4222)}`, source: 'container', stop: async () => void (await c.stop()) } };
  }
  const bin = findTool('nats-server');
  if (!bin) return { ok: false, reason: 'no nats-server: set NATS_URL, start a Docker engine, or run `npm run provision` (needs Go)' };
  const dir = tempDir('keel-nats-');
  const server = new LocalNatsServer({ bin, port: 0, storeDir: dir.path, users: opts.users, maxPayload: opts.maxPayload, supervise: false });
  await server.start();
  return {
    ok: true,
    server: {
      url: server.url,
      source: 'local',
      local: server,
      stop: async () => {
        await server.stop(2_000);
        dir.remove();
      },
    },
  };
}

/** Three nats-server nodes clustered on loopback (R3 streams), for reliability tests. */
export async function startNatsCluster(size = 3): Promise<Availability<NatsClusterHandle & ServerHandle>> {
  const bin = findTool('nats-server');
  if (!bin) return { ok: false, reason: 'no nats-server binary for a local cluster: run `npm run provision` (needs Go)' };
  const dir = tempDir('keel-nats-cluster-');
  const clusterPorts = await Promise.all(Array.from({ length: size }, () => freePort()));
  const clientPorts = await Promise.all(Array.from({ length: size }, () => freePort()));
  const routes = clusterPorts.map((p) => `nats://127.0.0.1:${p}`);
  const nodes = clusterPorts.map((cp, i) => {
    const storeDir = join(dir.path, `n${i}`);
    mkdirSync(storeDir, { recursive: true });
    return new LocalNatsServer({
      bin,
      port: clientPorts[i]!,
      storeDir,
      serverName: `keel-n${i}`,
      cluster: { name: 'keel-test', port: cp, routes: routes.filter((_, j) => j !== i) },
      supervise: false,
      startTimeoutMs: 30_000,
    });
  });
  // JetStream in a cluster waits for a meta leader: start the nodes together.
  await Promise.all(nodes.map((n) => n.start()));
  const urls = nodes.map((n) => n.url);
  return {
    ok: true,
    server: {
      url: urls.join(','),
      urls,
      nodes,
      source: 'local',
      stop: async () => {
        await Promise.all(nodes.map((n) => n.stop(2_000)));
        dir.remove();
      },
    },
  };
}
