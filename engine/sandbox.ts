/**
 * The sandbox of supervised agent processes (docs/sandbox.md): Node 24's permission model
 * (`--permission` with `--allow-fs-read` / `--allow-fs-write` limited to what the agent needs), a
 * V8 heap cap, and, where the machine lets this process manage cgroups v2, a memory and CPU limit.
 *
 * ```ts
 * const plan = sandboxPlan([{ name: 'triage', sandbox: def.sandbox }], sandboxContext(cfg, env));
 * spawn(process.execPath, [...plan.flags, 'cli/keel.ts', 'agent', 'start', 'triage']);
 * ```
 *
 * Node 24.21 facts this is built on (measured, see docs/sandbox.md): `--allow-fs-read=a,b` is ONE
 * path named `a,b` (repeat the flag instead); node:sqlite opens database files without any fs
 * check; SQLite extensions (sqlite-vec) refuse to load at all under `--permission`, even with
 * `--allow-addons`; there is no `--allow-net` (network stays open).
 */
import { existsSync, mkdirSync, readFileSync, realpathSync, rmdirSync, writeFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import type { AgentDefinition, AgentSandbox } from '../runtime/index.ts';
import { EngineError } from './errors.ts';

/** V8 old-space cap of an agent process that declares none (MB); docs/sandbox.md has the measurements. */
export const DEFAULT_MAX_OLD_SPACE_MB = 256;

/** What one agent of a process needs: its declaration, and whether it loads SQLite extensions. */
export interface SandboxAgent {
  name: string;
  sandbox?: AgentSandbox | undefined;
  /**
   * it uses long-term memory in sqlite-vec (a capability declares `permissions.memory` and
   * KEEL_MEMORY is `sqlite-vec:`): Node refuses SQLite extensions under `--permission`, so such a
   * process runs without the permission model (the heap cap and cgroup limits still apply)
   */
  loadsSqliteExtensions?: boolean;
}

/** What an agent definition asks of its sandbox: its `sandbox`, and sqlite-vec memory (KEEL_MEMORY) if a capability declares `permissions.memory`. */
export function agentSandboxNeeds(def: Pick<AgentDefinition, 'name' | 'sandbox' | 'capabilities'>, memoryUrl: string): SandboxAgent {
  return { name: def.name, sandbox: def.sandbox, loadsSqliteExtensions: memoryUrl.startsWith('sqlite-vec:') && def.capabilities.some((c) => c.permissions?.memory !== undefined) };
}

/**
 * The folders of KEEL_DATA_DIR an agent process gets, never the data dir itself: it also holds
 * `operators.json` (operator tokens) and `credentials.json` (every bus password). The SQLite files
 * (`keel.db`, `memory.db`) need no grant: node:sqlite is not checked by the permission model.
 * - `outbox/`: every mail the email channel sends (sender, marketer, …) is written there
 * - `site/`: the launch agents' published pages (agents/launch/site.ts)
 * - `attachments/` (read only): the stored attachments of inbound mail, written by the engine's ingress
 */
export const AGENT_DATA_DIRS: { readonly write: readonly string[]; readonly read: readonly string[] } = { write: ['outbox', 'site'], read: ['attachments'] };

/** Where things are, for the base allowance. */
export interface SandboxContext {
  /** the repository (Keel's code): read */
  repoRoot: string;
  /** KEEL_DATA_DIR: only its AGENT_DATA_DIRS folders (the root is neither read nor written) */
  dataDir: string;
  /** KEEL_MODELS_DIR: read */
  modelsDir: string;
  /** NODE_COMPILE_CACHE of this agent process (its own, see processCompileCacheDir): read and write */
  compileCacheDir?: string | undefined;
  /** more paths to read: files the configuration names (e.g. `scripted:` model scripts) */
  extraRead?: string[];
  /** more paths to write: the SQLite files of KEEL_STATE / KEEL_MEMORY when outside the data dir */
  extraWrite?: string[];
}

export interface SandboxPlan {
  /** whether `--permission` is on for this process */
  permission: boolean;
  /** why the permission model is off for it, when it is */
  permissionOffReason?: string;
  /** the Node flags to put before the script */
  flags: string[];
  fsRead: string[];
  fsWrite: string[];
  /** the folders to create before the process starts: the writable ones and the data dir's read-only ones */
  create: string[];
  childProcess: boolean;
  workers: boolean;
  maxOldSpaceMb: number;
  memoryMaxMb: number | undefined;
  cpuPercent: number | undefined;
}

/** KEEL_AGENT_SANDBOX: on unless `0` / `false` / `off`. */
export function sandboxEnabled(env: Readonly<Record<string, string | undefined>>): boolean {
  const v = (env.KEEL_AGENT_SANDBOX ?? '').trim().toLowerCase();
  if (v === '' || v === '1' || v === 'true' || v === 'on') return true;
  if (v === '0' || v === 'false' || v === 'off') return false;
  throw new EngineError('ENGINE_BAD_SANDBOX', `KEEL_AGENT_SANDBOX: '${env.KEEL_AGENT_SANDBOX}' is not 1 or 0`);
}

/** A declared path, made absolute: `$KEEL_DATA_DIR/…`, `$KEEL_MODELS_DIR/…`, absolute, or relative to the data dir. */
export function resolveSandboxPath(p: string, ctx: Pick<SandboxContext, 'dataDir' | 'modelsDir'>): string {
  const t = p.trim();
  for (const [token, dir] of [['$KEEL_DATA_DIR', ctx.dataDir], ['$KEEL_MODELS_DIR', ctx.modelsDir]] as const) {
    if (t === token) return resolve(dir);
    if (t.startsWith(`${token}/`)) return resolve(dir, t.slice(token.length + 1));
  }
  return isAbsolute(t) ? resolve(t) : resolve(ctx.dataDir, t);
}

/** The path, and its real location when a symlink leads elsewhere (Node checks the resolved path). */
function withReal(p: string): string[] {
  try {
    const r = realpathSync(p);
    return r === p ? [p] : [p, r];
  } catch {
    return [p];
  }
}

const uniq = (xs: string[]) => [...new Set(xs)];

/**
 * The flags of one agent process (one agent, or a host of several: the union of their
 * allowances, the largest caps). `enabled` false (KEEL_AGENT_SANDBOX=0): no flags at all.
 */
export function sandboxPlan(agents: readonly SandboxAgent[], ctx: SandboxContext, enabled = true): SandboxPlan {
  const decl = agents.map((a) => a.sandbox ?? {});
  const maxOf = (k: 'maxOldSpaceMb' | 'memoryMaxMb' | 'cpuPercent') => {
    const vs = decl.map((d) => d[k]).filter((v): v is number => typeof v === 'number');
    return vs.length ? Math.max(...vs) : undefined;
  };
  const declaredWrite = decl.flatMap((d) => (d.fsWrite ?? []).map((p) => resolveSandboxPath(p, ctx)));
  const dataWrite = AGENT_DATA_DIRS.write.map((d) => join(ctx.dataDir, d));
  const dataRead = AGENT_DATA_DIRS.read.map((d) => resolve(ctx.dataDir, d));
  const fsWrite = uniq([...dataWrite, ...(ctx.compileCacheDir ? [ctx.compileCacheDir] : []), ...(ctx.extraWrite ?? []), ...declaredWrite].map((p) => resolve(p)).flatMap(withReal));
  const nodeModules = join(ctx.repoRoot, 'node_modules');
  const fsRead = uniq(
    [ctx.repoRoot, nodeModules, ctx.modelsDir, ...dataRead, ...(ctx.extraRead ?? []), ...decl.flatMap((d) => (d.fsRead ?? []).map((p) => resolveSandboxPath(p, ctx))), ...fsWrite]
      .map((p) => resolve(p))
      .flatMap(withReal),
  );
  const childProcess = decl.some((d) => d.childProcess === true);
  const workers = decl.some((d) => d.workers === true);
  const maxOldSpaceMb = maxOf('maxOldSpaceMb') ?? DEFAULT_MAX_OLD_SPACE_MB;
  const create = uniq([...fsWrite, ...dataRead]);
  const plan: SandboxPlan = { permission: false, flags: [], fsRead, fsWrite, create, childProcess, workers, maxOldSpaceMb, memoryMaxMb: maxOf('memoryMaxMb'), cpuPercent: maxOf('cpuPercent') };
  if (!enabled) return { ...plan, permissionOffReason: 'KEEL_AGENT_SANDBOX=0', memoryMaxMb: undefined, cpuPercent: undefined };
  const heap = `--max-old-space-size=${maxOldSpaceMb}`;
  const sqlite = agents.filter((a) => a.loadsSqliteExtensions).map((a) => a.name);
  if (sqlite.length) {
    return {
      ...plan,
      flags: [heap],
      permissionOffReason: `${sqlite.join(', ')} use${sqlite.length === 1 ? 's' : ''} long-term memory in sqlite-vec, and Node refuses SQLite extensions under --permission (ERR_LOAD_SQLITE_EXTENSION); use a Qdrant KEEL_MEMORY to sandbox ${sqlite.length === 1 ? 'it' : 'them'}`,
    };
  }
  const flags = ['--permission', ...fsRead.map((p) => `--allow-fs-read=${p}`), ...fsWrite.map((p) => `--allow-fs-write=${p}`), ...(childProcess ? ['--allow-child-process'] : []), ...(workers ? ['--allow-worker'] : []), heap];
  return { ...plan, permission: true, flags };
}

/**
 * Creates the folders of a plan that do not exist yet (`create`: the writable ones, and the data
 * dir's read-only ones such as `attachments/`, which the engine fills later). Node 24 extends a
 * grant to a folder's contents only when the folder exists as the process starts (a grant on a
 * missing path covers that path alone: its compile cache is skipped, `mkdir -p` below it is
 * denied), so the supervisor makes them first. Returns the folders it could not create, with why.
 */
export function prepareSandboxDirs(plan: Pick<SandboxPlan, 'permission' | 'fsWrite'> & { create?: string[] }): Array<{ path: string; error: string }> {
  if (!plan.permission) return [];
  const failed: Array<{ path: string; error: string }> = [];
  for (const p of plan.create ?? plan.fsWrite) {
    if (existsSync(p)) continue;
    try {
      mkdirSync(p, { recursive: true });
    } catch (err) {
      failed.push({ path: p, error: (err as Error).message });
    }
  }
  return failed;
}

/**
 * The compile cache of one agent process: its own folder below the shared NODE_COMPILE_CACHE, so
 * an agent can write only code cache that it alone loads (a compromised agent must not plant
 * cache entries another agent's process would run). Stable per process id: a restart reuses it.
 */
export function processCompileCacheDir(base: string, processId: string): string {
  return join(resolve(base), `agent-${processId.replace(/[^A-Za-z0-9_.-]/g, '_')}`);
}

/**
 * The base allowance's locations from the configuration the agent processes get: the data dir,
 * the models dir, the compile cache (the shared base: see processCompileCacheDir), `scripted:` model scripts (KEEL_MODEL_*), and the SQLite files
 * of KEEL_STATE / KEEL_MEMORY when they lie outside the data dir.
 */
export function sandboxContext(
  cfg: { dataDir: string; modelsDir: string; state: string; memory: string },
  env: Readonly<Record<string, string | undefined>>,
  repoRoot: string,
): SandboxContext {
  const extraRead: string[] = [];
  for (const [k, v] of Object.entries(env)) {
    if (!k.startsWith('KEEL_MODEL_') || !v) continue;
    const m = /^scripted:(.+)$/.exec(v.trim());
    if (m) extraRead.push(resolve(m[1]!));
  }
  const extraWrite: string[] = [];
  for (const [scheme, url] of [['sqlite:', cfg.state], ['sqlite-vec:', cfg.memory]] as const) {
    if (!url.startsWith(scheme)) continue;
    const dir = dirname(resolve(url.slice(scheme.length)));
    if (dir !== resolve(cfg.dataDir) && !dir.startsWith(resolve(cfg.dataDir) + '/')) extraWrite.push(dir);
  }
  return { repoRoot, dataDir: resolve(cfg.dataDir), modelsDir: resolve(cfg.modelsDir), compileCacheDir: env.NODE_DISABLE_COMPILE_CACHE ? undefined : env.NODE_COMPILE_CACHE, extraRead, extraWrite };
}

/** cgroup v2 limits, where this process may create child cgroups (docs/sandbox.md). */
export interface CgroupManager {
  /** whether limits are applied (else `reason` says why not) */
  readonly available: boolean;
  readonly reason: string | undefined;
  /** puts `pid` in its own child cgroup `name` with memory.max / cpu.max; returns the cgroup's path, or undefined when nothing was set */
  place(name: string, pid: number, limits: { memoryMaxMb?: number | undefined; cpuPercent?: number | undefined }): string | undefined;
  /** removes a child cgroup once its process is gone */
  remove(path: string): void;
  /** removes the supervisor's own cgroup (after its agents are gone) */
  close(): void;
}

const CPU_PERIOD_US = 100_000;

/**
 * Looks for a cgroup v2 directory this process may manage: its own cgroup (from /proc/self/cgroup)
 * under /sys/fs/cgroup, with `memory` and `cpu` in cgroup.controllers and a writable
 * cgroup.subtree_control. The limits go on one child cgroup per agent process, under a
 * `keel-agents-<pid>` cgroup next to this process's own; where any step fails (no cgroup v2, no
 * controller, a read-only hierarchy), the reason is returned and no limits are set.
 * `selfCgroup` (tests): this process's cgroup path, default read from /proc/self/cgroup.
 */
export function detectCgroups(root = '/sys/fs/cgroup', selfCgroup?: string): CgroupManager {
  const off = (reason: string): CgroupManager => ({ available: false, reason, place: () => undefined, remove: () => undefined, close: () => undefined });
  try {
    if (!existsSync(join(root, 'cgroup.controllers'))) return off(`no cgroup v2 hierarchy at ${root}`);
    const self = selfCgroup ?? /^0::(.*)$/m.exec(readFileSync('/proc/self/cgroup', 'utf8'))?.[1]?.trim();
    if (self === undefined) return off('this process is not in a cgroup v2 hierarchy');
    // the root cgroup may hold processes and delegate controllers; any other cgroup holding this
    // process may not (the "no internal processes" rule): its parent must be ours to write
    const parent = self === '/' ? root : dirname(join(root, self));
    const base = join(parent, `keel-agents-${process.pid}`);
    const controllers = readFileSync(join(parent, 'cgroup.controllers'), 'utf8').split(/\s+/);
    for (const c of ['memory', 'cpu']) if (!controllers.includes(c)) return off(`the ${c} controller is not available in ${parent}`);
    mkdirSync(base);
    try {
      writeFileSync(join(parent, 'cgroup.subtree_control'), '+memory +cpu');
      writeFileSync(join(base, 'cgroup.subtree_control'), '+memory +cpu');
    } catch (err) {
      rmdirSync(base);
      throw err;
    }
    return {
      available: true,
      reason: undefined,
      place(name, pid, limits) {
        if (limits.memoryMaxMb === undefined && limits.cpuPercent === undefined) return undefined;
        const dir = join(base, name.replace(/[^A-Za-z0-9_.-]/g, '_'));
        mkdirSync(dir, { recursive: true });
        if (limits.memoryMaxMb !== undefined) writeFileSync(join(dir, 'memory.max'), String(limits.memoryMaxMb * 1024 * 1024));
        if (limits.cpuPercent !== undefined) writeFileSync(join(dir, 'cpu.max'), `${Math.max(1_000, Math.round((limits.cpuPercent / 100) * CPU_PERIOD_US))} ${CPU_PERIOD_US}`);
        writeFileSync(join(dir, 'cgroup.procs'), String(pid));
        return dir;
      },
      remove(path) {
        try {
          rmdirSync(path);
        } catch {
          /* still has a process, or already gone */
        }
      },
      close() {
        this.remove(base);
      },
    };
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return off(`cannot manage cgroups under ${root}: ${e.code ?? ''} ${e.message}`.trim());
  }
}
