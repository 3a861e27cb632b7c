import { spawn, type ChildProcess } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { REPO_ROOT, type AgentHostGroup } from '../config/index.ts';
import { EngineError } from './errors.ts';

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
}

export interface SupervisedAgent {
  spec: AgentProcessSpec;
  pid(): number | undefined;
  restarts(): number;
}

/**
 * Runs each agent replica as its own OS process (`keel agent start`), restarts one that dies
 * with exponential backoff, and stops them all with SIGTERM (drain), then SIGKILL after a grace.
 */
export class AgentSupervisor {
  private readonly procs = new Map<string, { child: ChildProcess | undefined; restarts: number; spec: AgentProcessSpec; timer?: NodeJS.Timeout }>();
  private stopping = false;
  private readonly log: Logger;

  private readonly baseEnv: Readonly<Record<string, string>>;

  /** `baseEnv`: what every agent process inherits (config's `inheritedEnv()`), before its own variables */
  constructor(log: Logger, baseEnv: Readonly<Record<string, string>>) {
    this.log = log;
    this.baseEnv = baseEnv;
  }

  start(specs: AgentProcessSpec[]): SupervisedAgent[] {
    return specs.map((spec) => {
      const id = `${spec.name}#${spec.replica}`;
      const entry: { child: ChildProcess | undefined; restarts: number; spec: AgentProcessSpec; timer?: NodeJS.Timeout } = { child: undefined, restarts: 0, spec };
      this.procs.set(id, entry);
      this.launch(id);
      return { spec, pid: () => entry.child?.pid, restarts: () => entry.restarts };
    });
  }

  /** every supervised process: its agents (several for a host) and its restarts, which count for each of them */
  list(): Array<{ id: string; pid: number | undefined; restarts: number; agents: string[]; host: string | undefined }> {
    return [...this.procs].map(([id, e]) => ({ id, pid: e.child?.pid, restarts: e.restarts, agents: e.spec.agents ?? [e.spec.name], host: e.spec.host }));
  }

  private launch(id: string): void {
    const e = this.procs.get(id)!;
    const startedAt = Date.now();
    const args = [join(REPO_ROOT, 'cli', 'keel.ts'), 'agent', 'start', e.spec.spec, '--instance', `${e.spec.replica}-${process.pid}`, ...(e.spec.host ? ['--host', e.spec.host] : [])];
    const child = spawn(process.execPath, [...agentNodeFlags(this.baseEnv), ...args], {
      env: { ...compileCacheEnv(this.baseEnv), ...e.spec.env, KEEL_SUPERVISOR_PID: String(process.pid) },
      // stdin is a pipe only we hold: when this process dies, even by SIGKILL, the agent reads
      // its end and drains (no polling for the parent)
      stdio: ['pipe', 'inherit', 'inherit'],
      // its own process group: a Ctrl-C reaches the supervisor, which drains the agents in order
      detached: true,
    });
    e.child = child;
    this.log.info({ agent: e.spec.name, replica: e.spec.replica, pid: child.pid }, 'agent process started');
    child.on('exit', (code, signal) => {
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

/**
 * Agent processes share Node's on-disk compile cache (NODE_COMPILE_CACHE, the directory
 * `module.enableCompileCache()` uses by default): a restarted agent neither recompiles nor strips
 * TypeScript again, which also keeps the type stripper (about 20 MB) out of its memory.
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
  env: { common: Record<string, string>; credentials?: (agent: string) => { user: string; password: string } | undefined; secrets?: (agent: string) => Record<string, string> },
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
        out.push({ name: a.name, spec: a.spec, replica: i, env: { ...env.common, ...(c ? { KEEL_AGENT_NATS_USER: c.user, KEEL_AGENT_NATS_PASSWORD: c.password } : {}), ...secrets } });
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
      });
    }
  }
  return out;
}
