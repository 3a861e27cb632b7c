import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { REPO_ROOT } from '../config/index.ts';

export interface AgentProcessSpec {
  /** agent name (for logs and credentials) */
  name: string;
  /** what `keel agent start` gets: a catalog name or a module path */
  spec: string;
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

  list(): Array<{ id: string; pid: number | undefined; restarts: number }> {
    return [...this.procs].map(([id, e]) => ({ id, pid: e.child?.pid, restarts: e.restarts }));
  }

  private launch(id: string): void {
    const e = this.procs.get(id)!;
    const startedAt = Date.now();
    const child = spawn(process.execPath, [join(REPO_ROOT, 'cli', 'keel.ts'), 'agent', 'start', e.spec.spec, '--instance', `${e.spec.replica}-${process.pid}`], {
      env: { ...this.baseEnv, ...e.spec.env, KEEL_SUPERVISOR_PID: String(process.pid) },
      stdio: ['ignore', 'inherit', 'inherit'],
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

/** Parses KEEL_AGENTS entries: `name`, `name@3` (replicas), or a module path (optionally `@N`). */
export function parseAgentList(entries: string[]): Array<{ spec: string; replicas: number }> {
  return entries.map((e) => {
    const m = /^(.*?)@(\d+)$/.exec(e);
    return m ? { spec: m[1]!, replicas: Math.max(1, Number(m[2])) } : { spec: e, replicas: 1 };
  });
}
