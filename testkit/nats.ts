import { findTool } from '../config/index.ts';
import { LocalNatsCluster, LocalNatsServer, type LocalNatsUser } from '../bus/index.ts';
import { dockerAvailable, tempDir, type Availability, type ServerHandle } from './common.ts';

export interface NatsHandle extends ServerHandle {
  /** the local server (restart/kill in reliability tests); undefined for env/container servers */
  local?: LocalNatsServer;
}

export interface NatsClusterHandle {
  urls: string[];
  nodes: LocalNatsServer[];
  /** the nodes as one cluster: `node(serverName)` finds a stream's leader (`cluster.leader` of stream info) */
  cluster: LocalNatsCluster;
  stop(): Promise<void>;
}

const NATS_IMAGE = 'nats:2.14-alpine';

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

/**
 * Three nats-server nodes clustered on loopback (R3 streams), for reliability tests, with Keel's
 * default fsync policy (`sync_interval: always`, KEEL_NATS_SYNC) unless `syncInterval` says
 * otherwise. Client ports are chosen by the servers themselves (no race). Route ports must be
 * known before the nodes start, so they are picked free and may be taken by another process before
 * a node binds them: then every node this attempt started is stopped and the cluster starts again
 * on new ports (bus's {@link LocalNatsCluster}). A failure that is not a port clash stops the nodes
 * too, so no server outlives a failed start. Nodes are not supervised: a test that kills one
 * (`crash()`, `pause()`) brings it back itself (`start()`, `resume()`).
 */
export async function startNatsCluster(size = 3, opts: { clusterPorts?: number[]; syncInterval?: string } = {}): Promise<Availability<NatsClusterHandle & ServerHandle>> {
  const bin = findTool('nats-server');
  if (!bin) return { ok: false, reason: 'no nats-server binary for a local cluster: run `npm run provision` (needs Go)' };
  const dir = tempDir('keel-nats-cluster-');
  const cluster = new LocalNatsCluster({ bin, size, port: 0, storeDir: dir.path, name: 'keel-test', clusterPorts: opts.clusterPorts, syncInterval: opts.syncInterval ?? 'always', supervise: false, startTimeoutMs: 30_000 });
  try {
    await cluster.start();
  } catch (err) {
    dir.remove();
    throw err;
  }
  return {
    ok: true,
    server: {
      url: cluster.url,
      urls: cluster.urls,
      nodes: cluster.nodes,
      cluster,
      source: 'local',
      stop: async () => {
        await cluster.stop(2_000);
        dir.remove();
      },
    },
  };
}
