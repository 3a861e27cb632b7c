import { spawn, type ChildProcess } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { REPO_ROOT, loadConfig, type AgentHostGroup } from '../config/index.ts';
import { EngineError } from './errors.ts';
import { detectCgroups, prepareSandboxDirs, processCompileCacheDir, sandboxContext, sandboxEnabled, sandboxPlan, type CgroupManager, type SandboxAgent, type SandboxContext, type SandboxPlan } from './sandbox.ts';

export interface AgentProcessSpec {
  /** agent name, or the host's name when the process co-hosts several agents (for logs) */
  name: string;
  /** what `keel agent start` gets: a catalog name or a module path, or several comma-separated (a host) */
  spec: string;
  /** the agents this process runs (one, or a host's); default [name] */
  agents?: string[];
  /** set for a host process (KEEL_AGENT_HOSTS group) */
  host?: string;
  replica: number;
  env: Record<string, string>;
  /** what each agent of the process needs from its sandbox (its manifest's `sandbox`); default: the base allowance */
  sandbox?: SandboxAgent[];
}

export interface AgentSupervisorOptions {
  /** where the base allowance points (default: from the configuration in `baseEnv`) */
  sandbox?: SandboxContext;
  /** cgroup v2 limits (default: detected on start when an agent declares memoryMaxMb / cpuPercent) */
  cgroups?: CgroupManager;
}

export interface SupervisedAgent {
  spec: AgentProcessSpec;
  pid(): number | undefined;
  restarts(): number;
  /** the sandbox its process runs in */
  sandbox: SandboxPlan;
}

type Entry = { child: ChildProcess | undefined; restarts: number; spec: AgentProcessSpec; plan: SandboxPlan; cgroup?: string; timer?: NodeJS.Timeout };

/**
 * Runs each agent replica as its own OS process (`keel agent start`), restarts one that dies
 * with exponential backoff, and stops them all with SIGTERM (drain), then SIGKILL after a grace.
 */
export class AgentSupervisor {
  private readonly procs = new Map<string, Entry>();
  private stopping = false;
  private readonly log: Logger;

  private readonly baseEnv: Readonly<Record<string, string>>;

  /** KEEL_AGENT_SANDBOX (docs/sandbox.md) */
  private readonly sandboxOn: boolean;
  private readonly sandboxCtx: SandboxContext;
  private cgroups: CgroupManager | undefined;

  /** `baseEnv`: what every agent process inherits (config's `inheritedEnv()`), before its own variables */
  constructor(log: Logger, baseEnv: Readonly<Record<string, string>>, opts: AgentSupervisorOptions = {}) {
    this.log = log;
    this.baseEnv = baseEnv;
    this.sandboxOn = sandboxEnabled(baseEnv);
    this.sandboxCtx = opts.sandbox ?? sandboxContext(loadConfig(baseEnv), compileCacheEnv(baseEnv), REPO_ROOT);
    this.cgroups = opts.cgroups;
  }

  start(specs: AgentProcessSpec[]): SupervisedAgent[] {
    const planOf = (spec: AgentProcessSpec) => sandboxPlan(spec.sandbox ?? (spec.agents ?? [spec.name]).map((name) => ({ name })), { ...this.sandboxCtx, compileCacheDir: this.compileCacheOf(spec) }, this.sandboxOn);
    const planned = specs.map((spec) => {
      // the writable folders must exist before the process starts (then their real paths are known too)
      for (const f of prepareSandboxDirs(planOf(spec))) this.log.warn({ agent: spec.name, path: f.path, error: f.error }, 'could not create a writable folder of the agent\'s sandbox: writes below it will be denied');
      return { spec, plan: planOf(spec) };
    });
    if (!this.sandboxOn) this.log.info('agent sandbox off (KEEL_AGENT_SANDBOX=0): agent processes run without Node\'s permission model or a heap cap');
    const limited = planned.some((p) => p.plan.memoryMaxMb !== undefined || p.plan.cpuPercent !== undefined);
    if (this.sandboxOn && limited && !this.cgroups) {
      this.cgroups = detectCgroups();
      if (!this.cgroups.available) this.log.info({ reason: this.cgroups.reason }, 'cgroup limits are off (memoryMaxMb / cpuPercent not applied)');
    }
    const warned = new Set<string>();
    return planned.map(({ spec, plan }) => {
      const id = `${spec.name}#${spec.replica}`;
      if (this.sandboxOn && !plan.permission && !warned.has(spec.name)) {
        warned.add(spec.name);
        this.log.warn({ agent: spec.name, reason: plan.permissionOffReason, maxOldSpaceMb: plan.maxOldSpaceMb }, 'agent process runs without Node\'s permission model');
      }
      const entry: Entry = { child: undefined, restarts: 0, spec, plan };
      this.procs.set(id, entry);
      this.launch(id);
      return { spec, pid: () => entry.child?.pid, restarts: () => entry.restarts, sandbox: plan };
    });
  }

  /** the process's own compile cache folder (undefined when the compile cache is off) */
  private compileCacheOf(spec: AgentProcessSpec): string | undefined {
    return this.sandboxCtx.compileCacheDir ? processCompileCacheDir(this.sandboxCtx.compileCacheDir, `${spec.name}-${spec.replica}`) : undefined;
  }

  /** every supervised process: its agents (several for a host) and its restarts, which count for each of them */
  list(): Array<{ id: string; pid: number | undefined; restarts: number; agents: string[]; host: string | undefined; sandboxed: boolean }> {
    return [...this.procs].map(([id, e]) => ({ id, pid: e.child?.pid, restarts: e.restarts, agents: e.spec.agents ?? [e.spec.name], host: e.spec.host, sandboxed: e.plan.permission }));
  }

  private launch(id: string): void {
    const e = this.procs.get(id)!;
    const startedAt = Date.now();
    const args = [join(REPO_ROOT, 'cli', 'keel.ts'), 'agent', 'start', e.spec.spec, '--instance', `${e.spec.replica}-${process.pid}`, ...(e.spec.host ? ['--host', e.spec.host] : [])];
    const cache = this.compileCacheOf(e.spec);
    const child = spawn(process.execPath, [...sandboxFlags(e.plan, this.baseEnv), ...agentNodeFlags(this.baseEnv), ...args], {
      env: { ...compileCacheEnv(this.baseEnv), ...e.spec.env, ...(cache ? { NODE_COMPILE_CACHE: cache } : {}), KEEL_SUPERVISOR_PID: String(process.pid) },
      // stdin is a pipe only we hold: when this process dies, even by SIGKILL, the agent reads
      // its end and drains (no polling for the parent)
      stdio: ['pipe', 'inherit', 'inherit'],
      // its own process group: a Ctrl-C reaches the supervisor, which drains the agents in order
      detached: true,
    });
    e.child = child;
    if (child.pid !== undefined && this.cgroups?.available) {
      try {
        e.cgroup = this.cgroups.place(`${e.spec.name}-${e.spec.replica}`, child.pid, { memoryMaxMb: e.plan.memoryMaxMb, cpuPercent: e.plan.cpuPercent });
      } catch (err) {
        this.log.warn({ agent: e.spec.name, err }, 'could not put the agent process in its cgroup');
      }
    }
    this.log.info({ agent: e.spec.name, replica: e.spec.replica, pid: child.pid, sandbox: e.plan.permission, maxOldSpaceMb: this.sandboxOn ? e.plan.maxOldSpaceMb : undefined, ...(e.cgroup ? { cgroup: e.cgroup } : {}) }, 'agent process started');
    child.on('exit', (code, signal) => {
      if (e.cgroup) this.cgroups?.remove(e.cgroup);
      if (this.stopping) return;
      // a process that ran a while before dying starts the backoff afresh
      if (Date.now() - startedAt > 60_000) e.restarts = 0;
      const delay = Math.min(30_000, 500 * 2 ** Math.min(e.restarts, 6));
      e.restarts++;
      this.log.warn({ agent: e.spec.name, replica: e.spec.replica, code, signal, restartInMs: delay }, 'agent process exited; restarting');
      e.timer = setTimeout(() => this.launch(id), delay);
    });
  }

  /** Last resort (process exit, second Ctrl-C): SIGKILL every agent process now. */
  killAll(): void {
    this.stopping = true;
    for (const e of this.procs.values()) {
      if (e.timer) clearTimeout(e.timer);
      const c = e.child;
      if (c && c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    }
  }

  async stop(graceMs = 15_000): Promise<void> {
    this.stopping = true;
    await Promise.all(
      [...this.procs.values()].map(async (e) => {
        if (e.timer) clearTimeout(e.timer);
        const c = e.child;
        if (!c || c.exitCode !== null || c.signalCode !== null) return;
        const done = new Promise((r) => c.once('exit', r));
        c.kill('SIGTERM');
        const t = setTimeout(() => c.kill('SIGKILL'), graceMs);
        await done;
        clearTimeout(t);
      }),
    );
    for (const e of this.procs.values()) if (e.cgroup) this.cgroups?.remove(e.cgroup);
    this.cgroups?.close();
  }
}

/**
 * V8 flags of agent processes: a small young generation (2 MB semi-spaces instead of up to 16 MB).
 * An agent allocates little between tasks, and the default lets the young generation grow to
 * 32 MB resident in every process, a third of an idle agent's memory. NODE_OPTIONS setting
 * --max-semi-space-size wins.
 */
export const AGENT_NODE_FLAGS = ['--max-semi-space-size=2'];
function agentNodeFlags(env: Readonly<Record<string, string>>): string[] {
  return /--max-semi-space-size/.test(env.NODE_OPTIONS ?? '') ? [] : AGENT_NODE_FLAGS;
}

/** The sandbox's flags; a heap cap set in NODE_OPTIONS wins over the manifest's. */
function sandboxFlags(plan: SandboxPlan, env: Readonly<Record<string, string>>): string[] {
  return /--max-old-space-size/.test(env.NODE_OPTIONS ?? '') ? plan.flags.filter((f) => !f.startsWith('--max-old-space-size')) : plan.flags;
}

/**
 * Agent processes use Node's on-disk compile cache (NODE_COMPILE_CACHE, the directory
 * `module.enableCompileCache()` uses by default), each in its own folder below it
 * (processCompileCacheDir: no agent writes cache another loads): a restarted agent neither
 * recompiles nor strips TypeScript again, which also keeps the type stripper (about 20 MB) out of
 * its memory.
 */
function compileCacheEnv(env: Readonly<Record<string, string>>): Record<string, string> {
  if (env.NODE_DISABLE_COMPILE_CACHE || env.NODE_COMPILE_CACHE) return { ...env };
  return { ...env, NODE_COMPILE_CACHE: join(tmpdir(), 'node-compile-cache') };
}

/** Parses KEEL_AGENTS entries: `name`, `name@3` (replicas), or a module path (optionally `@N`). */
export function parseAgentList(entries: string[]): Array<{ spec: string; replicas: number }> {
  return entries.map((e) => {
    const m = /^(.*?)@(\d+)$/.exec(e);
    return m ? { spec: m[1]!, replicas: Math.max(1, Number(m[2])) } : { spec: e, replicas: 1 };
  });
}

/** An agent `keel start` runs: its name, what KEEL_AGENTS called it, its module and replicas. */
export interface PlannedAgent {
  name: string;
  /** the KEEL_AGENTS entry without `@N` (a name or a module path) */
  entry: string;
  /** the module `keel agent start` loads */
  spec: string;
  replicas: number;
}

/** One OS process to supervise: one agent, or a host of several (KEEL_AGENT_HOSTS). */
export interface AgentProcessGroup {
  /** set for a host */
  host: string | undefined;
  agents: PlannedAgent[];
}

/**
 * Splits the agents into processes: by default one per agent; with KEEL_AGENT_HOSTS, the agents
 * of a group share one process (`all`: every agent in one). A group naming an agent that is not
 * run is refused, naming it.
 */
export function groupAgentProcesses(agents: readonly PlannedAgent[], hosts: 'all' | readonly AgentHostGroup[] | undefined): AgentProcessGroup[] {
  if (!hosts) return agents.map((a) => ({ host: undefined, agents: [a] }));
  if (hosts === 'all') return agents.length ? [{ host: 'all', agents: [...agents] }] : [];
  const out: AgentProcessGroup[] = [];
  const placed = new Set<PlannedAgent>();
  for (const g of hosts) {
    const members: PlannedAgent[] = [];
    for (const n of g.agents) {
      const a = agents.find((x) => x.name === n || x.entry === n || x.spec === n);
      if (!a) {
        throw new EngineError('ENGINE_BAD_AGENT_HOSTS', `KEEL_AGENT_HOSTS: host '${g.name}' names agent '${n}', which keel start does not run (running: ${agents.map((x) => x.name).join(', ') || 'none'}; see KEEL_AGENTS)`);
      }
      members.push(a);
      placed.add(a);
    }
    out.push({ host: g.name, agents: members });
  }
  for (const a of agents) if (!placed.has(a)) out.push({ host: undefined, agents: [a] });
  return out;
}

/**
 * The processes to start for these groups. A lone agent gets its own bus user in
 * KEEL_AGENT_NATS_USER / _PASSWORD; a host gets each member's in KEEL_AGENT_NATS_CREDENTIALS and the
 * secrets of its members (each agent inside still sees only its own). A host runs as many
 * processes as its most replicated member; process i hosts the members with at least i replicas.
 */
export function agentProcessSpecs(
  groups: readonly AgentProcessGroup[],
  env: { common: Record<string, string>; credentials?: (agent: string) => { user: string; password: string } | undefined; secrets?: (agent: string) => Record<string, string>; sandbox?: (agent: string) => SandboxAgent },
): AgentProcessSpec[] {
  const out: AgentProcessSpec[] = [];
  for (const g of groups) {
    const replicas = Math.max(...g.agents.map((a) => a.replicas));
    for (let i = 1; i <= replicas; i++) {
      const members = g.agents.filter((a) => a.replicas >= i);
      const secrets = Object.assign({}, ...members.map((a) => env.secrets?.(a.name) ?? {})) as Record<string, string>;
      if (!g.host) {
        const a = members[0]!;
        const c = env.credentials?.(a.name);
        out.push({ name: a.name, spec: a.spec, replica: i, env: { ...env.common, ...(c ? { KEEL_AGENT_NATS_USER: c.user, KEEL_AGENT_NATS_PASSWORD: c.password } : {}), ...secrets }, ...(env.sandbox ? { sandbox: [env.sandbox(a.name)] } : {}) });
        continue;
      }
      const creds: Record<string, { user: string; password: string }> = {};
      for (const a of members) {
        const c = env.credentials?.(a.name);
        if (c) creds[a.name] = c;
      }
      out.push({
        name: g.host,
        host: g.host,
        agents: members.map((a) => a.name),
        spec: members.map((a) => a.spec).join(','),
        replica: i,
        env: { ...env.common, ...(Object.keys(creds).length ? { KEEL_AGENT_NATS_CREDENTIALS: JSON.stringify(creds) } : {}), ...secrets },
        // a host's sandbox: the union of its members' allowances, the largest caps
        ...(env.sandbox ? { sandbox: members.map((a) => env.sandbox!(a.name)) } : {}),
      });
    }
  }
  return out;
}
