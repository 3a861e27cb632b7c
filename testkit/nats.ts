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

/** How often the cluster helper picks new ports when one was taken between picking and binding. */
const CLUSTER_START_ATTEMPTS = 5;

/**
 * Three nats-server nodes clustered on loopback (R3 streams), for reliability tests. Client ports
 * are chosen by the servers themselves (no race). Cluster ports must be known before the nodes
 * start (each lists the others as routes), so they are picked free and may be taken by another
 * process before a node binds them: then every node this attempt started is stopped and the
 * cluster starts again on new ports. A failure that is not a port clash stops the nodes too, so
 * no server outlives a failed start.
 */
export async function startNatsCluster(size = 3, opts: { clusterPorts?: number[] } = {}): Promise<Availability<NatsClusterHandle & ServerHandle>> {
  const bin = findTool('nats-server');
  if (!bin) return { ok: false, reason: 'no nats-server binary for a local cluster: run `npm run provision` (needs Go)' };
  const dir = tempDir('keel-nats-cluster-');
  for (let attempt = 1; ; attempt++) {
    // `opts.clusterPorts` (first attempt only) lets a test hand it a port that is already taken
    const clusterPorts = attempt === 1 && opts.clusterPorts ? opts.clusterPorts : await distinctFreePorts(size);
    const routes = clusterPorts.map((p) => `nats://127.0.0.1:${p}`);
    const nodes = clusterPorts.map((cp, i) => {
      const storeDir = join(dir.path, `a${attempt}`, `n${i}`);
      mkdirSync(storeDir, { recursive: true });
      return new LocalNatsServer({
        bin,
        port: 0,
        storeDir,
        serverName: `keel-n${i}`,
        cluster: { name: 'keel-test', port: cp, routes: routes.filter((_, j) => j !== i) },
        supervise: false,
        startTimeoutMs: 30_000,
      });
    });
    // JetStream in a cluster waits for a meta leader: start the nodes together.
    const started = await Promise.allSettled(nodes.map((n) => n.start()));
    const failure = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (!failure) {
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
    await Promise.all(nodes.map((n) => n.stop(2_000).catch(() => undefined)));
    const clash = /address already in use/i.test(String((failure.reason as Error)?.message));
    if (!clash || attempt >= CLUSTER_START_ATTEMPTS) {
      dir.remove();
      throw failure.reason;
    }
  }
}

/** `n` free loopback ports, all different. */
async function distinctFreePorts(n: number): Promise<number[]> {
  const out = new Set<number>();
  while (out.size < n) out.add(await freePort());
  return [...out];
}
