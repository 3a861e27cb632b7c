import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { LocalServerError } from './errors.ts';

/** A user in the local server's config (least-privilege accounts come from agent manifests). */
export interface LocalNatsUser {
  user: string;
  password: string;
  publish?: { allow?: string[]; deny?: string[] };
  subscribe?: { allow?: string[]; deny?: string[] };
}

export interface LocalNatsServerOptions {
  /** nats-server binary */
  bin: string;
  /** client port; 0 picks a free one */
  port: number;
  host?: string;
  /** JetStream store directory; also holds the generated config and pid file */
  storeDir: string;
  serverName?: string;
  /** a clustered node (see {@link LocalNatsCluster}): its route port, the other nodes' route URLs, the route credentials */
  cluster?: { name: string; port: number; routes: string[]; authorization?: RouteAuth };
  /** JetStream `sync_interval`: `always` (fsync before each ack) or a duration (`1s`, `2m`); unset = the server's default (2m) */
  syncInterval?: string;
  users?: LocalNatsUser[];
  maxPayload?: number;
  /** restart the server with backoff when it dies unexpectedly (default true) */
  supervise?: boolean;
  logger?: Logger;
  startTimeoutMs?: number;
}

/** A `tls { }` block: the server's certificate and key, and the CA that signed them (clients verify with it). */
export interface NatsTlsConfig {
  certFile: string;
  keyFile: string;
  caFile?: string;
  /** require client certificates signed by caFile (Keel's own clients present none: leave off) */
  verify?: boolean;
}

/** The user and password cluster nodes present to each other on their route connections. */
export interface RouteAuth {
  user: string;
  password: string;
}

/** Everything a nats-server config holds for Keel: the embedded server and `keel deploy nats-config` render it with {@link renderNatsConfig}. */
export interface NatsConfigSpec {
  serverName?: string;
  /** `host:port`; port -1 lets the server pick */
  listen: string;
  pidFile?: string;
  maxPayload?: number;
  /** JetStream store directory */
  jetStreamDir: string;
  maxMemoryStore?: string;
  /**
   * JetStream `sync_interval`: `always` fsyncs before every acknowledgement; a duration (`1s`,
   * `2m`) syncs that often. Unset leaves the server's default (2 min). See docs/bus.md.
   */
  syncInterval?: string;
  /** routes: `nats://host:port`; with `authorization` each route URL carries those credentials */
  cluster?: { name: string; listen: string; routes: string[]; authorization?: RouteAuth };
  /** one global account with these users; none = no authorization (anyone may connect) */
  users?: LocalNatsUser[];
  tls?: NatsTlsConfig;
  /** comment lines at the top (no secrets) */
  comments?: string[];
}

const q = (v: string) => JSON.stringify(v);

/**
 * A nats-server configuration with JetStream and, when users are given, one user per agent whose
 * publish/subscribe permissions were generated from its manifest (runtime's `natsUsers`). The
 * embedded server and `keel deploy nats-config` both render theirs here, so both enforce the
 * same permissions.
 */
export function renderNatsConfig(c: NatsConfigSpec): string {
  const lines = [
    ...(c.comments ?? []).map((l) => `# ${l}`),
    ...(c.serverName ? [`server_name: ${q(c.serverName)}`] : []),
    `listen: ${q(c.listen)}`,
    ...(c.pidFile ? [`pid_file: ${q(c.pidFile)}`] : []),
    `max_payload: ${c.maxPayload ?? 1024 * 1024}`,
    `jetstream {`,
    `  store_dir: ${q(c.jetStreamDir)}`,
    `  max_memory_store: ${c.maxMemoryStore ?? '256MB'}`,
    ...(c.syncInterval ? [`  sync_interval: ${c.syncInterval === 'always' ? 'always' : q(c.syncInterval)}`] : []),
    `}`,
  ];
  if (c.cluster) {
    const auth = c.cluster.authorization;
    const routes = auth ? c.cluster.routes.map((r) => withCredentials(r, auth)) : c.cluster.routes;
    lines.push(`cluster {`, `  name: ${q(c.cluster.name)}`, `  listen: ${q(c.cluster.listen)}`);
    if (auth) lines.push(`  authorization { user: ${q(auth.user)}, password: ${q(auth.password)}, timeout: 2 }`);
    lines.push(`  routes: [${routes.map(q).join(', ')}]`, `}`);
  }
  if (c.tls) {
    lines.push('tls {', `  cert_file: ${q(c.tls.certFile)}`, `  key_file: ${q(c.tls.keyFile)}`);
    if (c.tls.caFile) lines.push(`  ca_file: ${q(c.tls.caFile)}`);
    if (c.tls.verify) lines.push('  verify: true');
    lines.push('  timeout: 2', '}');
  }
  if (c.users && c.users.length > 0) {
    lines.push('authorization {', '  users: [');
    for (const u of c.users) {
      const perms: string[] = [];
      for (const kind of ['publish', 'subscribe'] as const) {
        const p = u[kind];
        if (!p) continue;
        const parts: string[] = [];
        if (p.allow) parts.push(`allow: ${JSON.stringify(p.allow)}`);
        if (p.deny) parts.push(`deny: ${JSON.stringify(p.deny)}`);
        perms.push(`${kind}: { ${parts.join(', ')} }`);
      }
      lines.push(`    { user: ${q(u.user)}, password: ${q(u.password)}${perms.length ? `, permissions: { ${perms.join(', ')} }` : ''} }`);
    }
    lines.push('  ]', '}');
  }
  return lines.join('\n') + '\n';
}

/** `nats://host:port` → `nats://user:password@host:port` (a URL that has credentials keeps them). */
function withCredentials(route: string, auth: RouteAuth): string {
  const m = /^([a-z]+:\/\/)([^@/]+)$/.exec(route);
  return m ? `${m[1]}${encodeURIComponent(auth.user)}:${encodeURIComponent(auth.password)}@${m[2]}` : route;
}

function confString(o: LocalNatsServerOptions, port: number): string {
  const host = o.host ?? '127.0.0.1';
  return renderNatsConfig({
    serverName: o.serverName ?? `keel-${port}`,
    listen: `${host}:${port === 0 ? -1 : port}`,
    pidFile: join(o.storeDir, 'nats-server.pid'),
    maxPayload: o.maxPayload,
    jetStreamDir: join(o.storeDir, 'jetstream'),
    syncInterval: o.syncInterval,
    cluster: o.cluster ? { name: o.cluster.name, listen: `${host}:${o.cluster.port}`, routes: o.cluster.routes, authorization: o.cluster.authorization } : undefined,
    users: o.users,
  });
}

/** Kills a nats-server left behind by a previous supervisor that was itself killed. */
function reapStale(pidFile: string, confPath: string, log?: Logger): void {
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, 'utf8').trim());
  if (!Number.isInteger(pid) || pid <= 1) return;
  let cmdline: string;
  try {
    cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return; // not running (or no /proc): nothing to reap
  }
  if (!cmdline.includes(confPath)) return; // the pid was reused by something else
  log?.warn({ pid }, 'stopping a nats-server left running by an earlier keel process');
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
}

/**
 * Starts and supervises a nats-server with JetStream. Used by `keel start` (embedded default)
 * and by the test helpers (free port, temp store).
 */
export class LocalNatsServer {
  readonly options: LocalNatsServerOptions;
  private child: ChildProcess | undefined;
  private stopping = false;
  private boundPort = 0;
  private restarts = 0;
  private readonly confPath: string;
  private lastStderr: string[] = [];
  /** called after each unexpected exit, before the restart */
  onExit?: (code: number | null, signal: NodeJS.Signals | null) => void;
  /**
   * The log line of a JetStream storage failure (a stream's write error, e.g. ENOSPC, or the
   * server's storage limit) since this process started: nats-server 2.14 stops writing to such a
   * stream until it restarts. The engine restarts it once disk space is back (docs/reliability.md).
   */
  storeFault: string | undefined;

  constructor(options: LocalNatsServerOptions) {
    this.options = options;
    this.confPath = join(options.storeDir, 'nats-server.conf');
  }

  get port(): number {
    return this.boundPort;
  }
  get url(): string {
    return `nats://${this.options.host ?? '127.0.0.1'}:${this.boundPort}`;
  }
  get pid(): number | undefined {
    return this.child?.pid;
  }
  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }
  get restartCount(): number {
    return this.restarts;
  }

  async start(): Promise<void> {
    const o = this.options;
    if (!existsSync(o.bin)) throw new LocalServerError('BUS_SERVER_NOT_FOUND', `nats-server binary not found at ${o.bin}; run deploy/provision.sh nats-server`);
    mkdirSync(o.storeDir, { recursive: true });
    reapStale(join(o.storeDir, 'nats-server.pid'), this.confPath, o.logger);
    this.stopping = false;
    await this.spawnOnce(this.boundPort || o.port);
  }

  /** Rewrites the config (e.g. new users) and asks the server to reload it without a restart. */
  async reload(users: LocalNatsUser[]): Promise<void> {
    this.options.users = users;
    writeFileSync(this.confPath, confString(this.options, this.boundPort || this.options.port), { mode: 0o600 });
    if (this.running) this.child!.kill('SIGHUP');
    await sleep(100);
  }

  private spawnOnce(port: number): Promise<void> {
    const o = this.options;
    writeFileSync(this.confPath, confString(o, port), { mode: 0o600 });
    // detached: a Ctrl-C in the terminal reaches only the supervisor, which drains clients first, then stops the server.
    const child = spawn(o.bin, ['-c', this.confPath], { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
    this.child = child;
    this.lastStderr = [];
    this.storeFault = undefined;
    return new Promise<void>((resolve, reject) => {
      let ready = false;
      let serverReady = false;
      let routesBound = false;
      let buf = '';
      const timer = setTimeout(() => {
        if (!ready) {
          child.kill('SIGKILL');
          reject(new LocalServerError('BUS_SERVER_START_FAILED', `nats-server did not become ready within ${o.startTimeoutMs ?? 20_000} ms:\n${this.lastStderr.join('\n')}`));
        }
      }, o.startTimeoutMs ?? 20_000);
      child.stderr!.setEncoding('utf8');
      child.stderr!.on('data', (chunk: string) => {
        buf += chunk;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          this.lastStderr.push(line);
          if (this.lastStderr.length > 50) this.lastStderr.shift();
          const m = /Listening for client connections on [^\s]*:(\d+)/.exec(line);
          if (m) this.boundPort = Number(m[1]);
          // a clustered node retries its routes until the others are up: not an error of ours
          if (/\[(ERR|FTL)\]/.test(line) && !/Error trying to connect to route/.test(line)) o.logger?.error({ nats: line }, 'nats-server');
          if (/critical write error|resource limits exceeded|will be DISABLED/i.test(line)) this.storeFault ??= line;
          else o.logger?.debug({ nats: line }, 'nats-server');
          if (line.includes('Listening for route connections')) routesBound = true;
          if (line.includes('Server is ready')) serverReady = true;
          // a clustered node is ready once its route listener is bound too: the route port was
          // picked before the server started, and a failed bind is fatal right after "ready"
          if (!ready && serverReady && (routesBound || !o.cluster)) {
            ready = true;
            clearTimeout(timer);
            o.logger?.info({ url: this.url, server_pid: child.pid, storeDir: o.storeDir }, 'nats-server ready');
            resolve();
          }
        }
      });
      child.on('error', (err) => {
        clearTimeout(timer);
        if (!ready) reject(new LocalServerError('BUS_SERVER_START_FAILED', `cannot start ${o.bin}: ${err.message}`, err));
      });
      child.on('exit', (code, signal) => {
        clearTimeout(timer);
        if (!ready) {
          reject(new LocalServerError('BUS_SERVER_START_FAILED', `nats-server exited (code ${code}, signal ${signal}) before it was ready:\n${this.lastStderr.join('\n')}`));
          return;
        }
        if (this.stopping || o.supervise === false) return;
        this.onExit?.(code, signal);
        void this.restartLoop(code, signal);
      });
    });
  }

  private async restartLoop(code: number | null, signal: NodeJS.Signals | null): Promise<void> {
    const log = this.options.logger;
    let delay = 500;
    for (;;) {
      if (this.stopping) return;
      log?.warn({ code, signal, restartInMs: delay }, 'nats-server exited unexpectedly; restarting');
      await sleep(delay);
      if (this.stopping) return;
      try {
        await this.spawnOnce(this.boundPort);
        this.restarts++;
        return;
      } catch (err) {
        log?.error({ err }, 'nats-server restart failed');
        delay = Math.min(delay * 2, 30_000);
      }
    }
  }

  /** Stops the server gracefully (SIGTERM, then SIGKILL after the grace period). */
  async stop(graceMs = 10_000): Promise<void> {
    this.stopping = true;
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGCONT'); // a paused server could not act on SIGTERM
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(t);
    rmSync(join(this.options.storeDir, 'nats-server.pid'), { force: true });
  }

  /** Kills the server without a clean shutdown (tests of crash recovery). */
  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    this.child?.kill(signal);
  }

  /**
   * SIGKILL, resolved once the process is gone. A supervised server restarts by itself; otherwise
   * {@link start} brings it back on the same ports with the same store.
   */
  async crash(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGKILL');
    await exited;
  }

  /** SIGSTOP: the process keeps its sockets and answers nothing, like a node cut off by a partition. */
  pause(): void {
    this.child?.kill('SIGSTOP');
  }

  /** SIGCONT after {@link pause}. */
  resume(): void {
    this.child?.kill('SIGCONT');
  }
}

/** A free TCP port on the host (it may be taken again before it is bound: callers retry). */
function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, host, () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

export interface LocalNatsClusterOptions {
  bin: string;
  /** number of nodes (3 or 5: a JetStream cluster needs a majority to elect its leaders) */
  size: number;
  /** node i keeps its config, pid file and JetStream store under `<storeDir>/n<i>` */
  storeDir: string;
  host?: string;
  /** client port of node 0; node i listens on port + i. 0: every node picks a free one */
  port: number;
  /** route ports of the first start attempt (tests); default: free ports picked just before the start */
  clusterPorts?: number[];
  /** cluster name (default `keel`) */
  name?: string;
  /** node i is `<serverNamePrefix><i>` (default `keel-n`): JetStream knows its peers by these names, keep them stable */
  serverNamePrefix?: string;
  users?: LocalNatsUser[];
  maxPayload?: number;
  syncInterval?: string;
  /** restart a node that dies (default true) */
  supervise?: boolean;
  logger?: Logger;
  startTimeoutMs?: number;
  /** start attempts when a route port was taken between picking and binding (default 5) */
  startAttempts?: number;
}

/**
 * N nats-server nodes clustered on loopback with JetStream: `keel start` with KEEL_NATS_CLUSTER,
 * and the test kit's `startNatsCluster`. The nodes authenticate their routes to each other with a
 * password made for this cluster. Route ports must be known before the nodes start (each lists the
 * others), so they are picked free and may be taken by another process before a node binds them:
 * then every node this attempt started is stopped and the cluster starts again on new route ports.
 * Any other failure stops the nodes too, so no server outlives a failed start.
 */
export class LocalNatsCluster {
  readonly options: LocalNatsClusterOptions;
  nodes: LocalNatsServer[] = [];
  private readonly routeAuth: RouteAuth = { user: 'keel-route', password: randomBytes(18).toString('hex') };

  constructor(options: LocalNatsClusterOptions) {
    if (!Number.isInteger(options.size) || options.size < 1) throw new LocalServerError('BUS_SERVER_START_FAILED', `a cluster needs at least one node (size ${options.size})`);
    this.options = options;
  }

  /** the nodes' client URLs */
  get urls(): string[] {
    return this.nodes.map((n) => n.url);
  }
  /** every node's client URL, comma-separated (KEEL_NATS_URL, connectBus) */
  get url(): string {
    return this.urls.join(',');
  }
  /** the node whose server_name is `name` (stream info's `cluster.leader`) */
  node(name: string): LocalNatsServer | undefined {
    return this.nodes.find((n) => n.options.serverName === name);
  }

  async start(): Promise<void> {
    const o = this.options;
    const host = o.host ?? '127.0.0.1';
    const attempts = o.startAttempts ?? 5;
    for (let attempt = 1; ; attempt++) {
      const clusterPorts = attempt === 1 && o.clusterPorts ? o.clusterPorts : await distinctFreePorts(o.size, host);
      const routes = clusterPorts.map((p) => `nats://${host}:${p}`);
      const nodes = clusterPorts.map((cp, i) => {
        const storeDir = join(o.storeDir, `n${i}`);
        mkdirSync(storeDir, { recursive: true });
        return new LocalNatsServer({
          bin: o.bin,
          port: o.port === 0 ? 0 : o.port + i,
          host,
          storeDir,
          serverName: `${o.serverNamePrefix ?? 'keel-n'}${i}`,
          cluster: { name: o.name ?? 'keel', port: cp, routes: routes.filter((_, j) => j !== i), authorization: this.routeAuth },
          syncInterval: o.syncInterval,
          users: o.users,
          maxPayload: o.maxPayload,
          supervise: o.supervise,
          logger: o.logger?.child({ nats_node: i }),
          startTimeoutMs: o.startTimeoutMs ?? 30_000,
        });
      });
      // JetStream in a cluster waits for a meta leader: start the nodes together
      const started = await Promise.allSettled(nodes.map((n) => n.start()));
      const failure = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (!failure) {
        this.nodes = nodes;
        return;
      }
      await Promise.all(nodes.map((n) => n.stop(2_000).catch(() => undefined)));
      // only a route port is ours to pick again (a fixed client port that is taken stays taken)
      const routeClash = /Error listening on router port.*address already in use/i.test(String((failure.reason as Error)?.message));
      if (!routeClash || attempt >= attempts) throw failure.reason;
      o.logger?.warn({ attempt }, 'a route port of the local nats cluster was taken; starting again on new ports');
    }
  }

  /** Rewrites every node's users and reloads them without a restart. */
  async reload(users: LocalNatsUser[]): Promise<void> {
    this.options.users = users;
    await Promise.all(this.nodes.map((n) => n.reload(users)));
  }

  async stop(graceMs = 10_000): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.stop(graceMs)));
  }
}

/** `n` free ports, all different. */
async function distinctFreePorts(n: number, host: string): Promise<number[]> {
  const out = new Set<number>();
  while (out.size < n) out.add(await freePort(host));
  return [...out];
}
