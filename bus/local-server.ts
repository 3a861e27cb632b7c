import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
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
  /** 3-node clusters on loopback for reliability tests */
  cluster?: { name: string; port: number; routes: string[] };
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
  cluster?: { name: string; listen: string; routes: string[] };
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
    `}`,
  ];
  if (c.cluster) {
    lines.push(`cluster {`, `  name: ${q(c.cluster.name)}`, `  listen: ${q(c.cluster.listen)}`, `  routes: [${c.cluster.routes.map(q).join(', ')}]`, `}`);
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

function confString(o: LocalNatsServerOptions, port: number): string {
  const host = o.host ?? '127.0.0.1';
  return renderNatsConfig({
    serverName: o.serverName ?? `keel-${port}`,
    listen: `${host}:${port === 0 ? -1 : port}`,
    pidFile: join(o.storeDir, 'nats-server.pid'),
    maxPayload: o.maxPayload,
    jetStreamDir: join(o.storeDir, 'jetstream'),
    cluster: o.cluster ? { name: o.cluster.name, listen: `${host}:${o.cluster.port}`, routes: o.cluster.routes } : undefined,
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
          if (/\[(ERR|FTL)\]/.test(line)) o.logger?.error({ nats: line }, 'nats-server');
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
}
