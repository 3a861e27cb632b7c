import { randomBytes } from 'node:crypto';
import type { Logger } from '../observability/index.ts';
import type { AgentDefinition } from './define.ts';
import { runAgent, type RunAgentOptions, type RunningAgent } from './runtime.ts';

/** One agent a host runs: its definition and its own runAgent options (bus user, secrets, ...). */
export interface HostedAgentSpec {
  def: AgentDefinition;
  options: RunAgentOptions;
}

export interface HostedAgentStatus {
  agent: string;
  status: 'starting' | 'running' | 'restarting' | 'stopped';
  /** how often this agent was restarted inside the host */
  restarts: number;
  instanceId: string | undefined;
  lastError: string | undefined;
}

export interface AgentHost {
  /** each agent's state and restart count */
  status(): HostedAgentStatus[];
  /** the agents running now */
  running(): RunningAgent[];
  /** drain every agent (in parallel), up to graceMs each */
  stop(graceMs?: number): Promise<void>;
}

export interface HostAgentsOptions {
  logger: Logger;
  /** name of the host (KEEL_AGENT_HOSTS group), for manifests */
  name?: string;
  /** first restart delay; doubles up to 30 s (default 500 ms) */
  restartBaseMs?: number;
  /**
   * a single agent whose first start fails makes hostAgents throw (the supervisor then restarts
   * the process, as for one agent per process); with several, each one's failed start is retried
   * here so the others keep running (default: true when there is one agent)
   */
  failFast?: boolean;
}

/**
 * Runs several agents in this one process (co-hosting, `keel agent start a,b,c`). Each keeps its
 * own bus connection (its own least-privilege user), its own secrets, its own heartbeat in the
 * registry and its own restart accounting: an agent whose start fails or whose bus connection
 * closes for good is restarted here with backoff, without touching the others. What a host does
 * not isolate is the process: a crash (an uncaught exception, out of memory, SIGKILL) stops every
 * agent it hosts until the supervisor restarts it.
 */
export async function hostAgents(specs: readonly HostedAgentSpec[], o: HostAgentsOptions): Promise<AgentHost> {
  const base = o.restartBaseMs ?? 500;
  const failFast = o.failFast ?? specs.length === 1;
  const agents = specs.map((s) => s.def.name);
  let stopping = false;
  const slots = specs.map((spec) => ({
    // one instance id for the agent's whole life in this host: a restart rewrites its registry entry
    spec: { ...spec, options: { ...spec.options, instanceId: spec.options.instanceId ?? `${process.pid}-${randomBytes(3).toString('hex')}` } },
    status: 'starting' as HostedAgentStatus['status'],
    restarts: 0,
    running: undefined as RunningAgent | undefined,
    lastError: undefined as string | undefined,
    timer: undefined as NodeJS.Timeout | undefined,
    startedAt: 0,
  }));
  type Slot = (typeof slots)[number];

  const schedule = (slot: Slot, why: string) => {
    if (stopping) return;
    // an agent that ran a while before failing starts its backoff afresh
    const quick = Date.now() - slot.startedAt < 60_000 ? slot.restarts : 0;
    const delay = Math.min(30_000, base * 2 ** Math.min(quick, 6));
    slot.restarts++;
    slot.status = 'restarting';
    o.logger.warn({ agent: slot.spec.def.name, restarts: slot.restarts, restartInMs: delay, why }, 'hosted agent stopped; restarting it');
    slot.timer = setTimeout(() => void start(slot).catch(() => undefined), delay);
  };

  const start = async (slot: Slot): Promise<void> => {
    slot.status = 'starting';
    slot.startedAt = Date.now();
    try {
      const r = await runAgent(slot.spec.def, { ...slot.spec.options, host: { ...(o.name ? { name: o.name } : {}), agents }, restarts: slot.restarts });
      if (stopping) {
        await r.stop(0);
        return;
      }
      slot.running = r;
      slot.status = 'running';
      // a connection that closes for good (not by stop()) takes this agent down: restart it alone
      void r.bus.nc.closed().then((err) => {
        if (stopping || slot.running !== r) return;
        slot.running = undefined;
        // its timers (heartbeat, lease) and store go with it
        void r.stop(0).catch(() => undefined);
        slot.lastError = err ? err.message : 'bus connection closed';
        schedule(slot, slot.lastError);
      });
    } catch (err) {
      slot.lastError = (err as Error).message;
      if (failFast && slot.restarts === 0) throw err; // the first start of a lone agent: let the process fail
      schedule(slot, slot.lastError);
    }
  };

  // start them side by side: one slow agent does not hold the others back
  await Promise.all(slots.map((s) => start(s)));

  return {
    status: () => slots.map((s) => ({ agent: s.spec.def.name, status: s.status, restarts: s.restarts, instanceId: s.running?.instanceId, lastError: s.lastError })),
    running: () => slots.flatMap((s) => (s.running ? [s.running] : [])),
    stop: async (graceMs = 10_000) => {
      stopping = true;
      await Promise.all(
        slots.map(async (s) => {
          if (s.timer) clearTimeout(s.timer);
          const r = s.running;
          s.running = undefined;
          s.status = 'stopped';
          await r?.stop(graceMs);
        }),
      );
    },
  };
}
