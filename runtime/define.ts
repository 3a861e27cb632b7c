import { isAbsolute, posix } from 'node:path';
import type { LlmCallOptions, ModelToolCall } from '../models/index.ts';
import type { z } from 'zod';
import type { Envelope } from '../bus/index.ts';
import type { Logger } from '../observability/index.ts';
import type { Span } from '@opentelemetry/api';
import type { EntityTypeDef } from '../shared-state/index.ts';
import type { KeelConfig } from '../config/index.ts';
import type { BreakerOptions } from './breaker.ts';
import type { ScopedState } from './scoped-state.ts';
import type { MemoryStore } from '../memory/index.ts';
import { DefinitionError } from './errors.ts';

/** What a capability may touch beyond its own task subject; enforced by nats-server and the runtime. */
export interface Permissions {
  /** capabilities it may enqueue tasks for */
  enqueue?: string[];
  /** extra subjects (relative to the prefix, e.g. `out.email`) it may publish to */
  publish?: string[];
  /** extra subjects (relative to the prefix) it may subscribe to */
  subscribe?: string[];
  /** entity types it may read and write */
  entityTypes?: string[];
  /** secret names it receives (from KEEL_SECRET_<NAME>) */
  secrets?: string[];
  /**
   * long-term memory (`ctx.memory()`): `read` recalls, `write` also writes and forgets. The store
   * (and its embedding model) is opened on the first call, so agents that never use memory never load it.
   */
  memory?: 'read' | 'write';
  /**
   * tools its model calls may offer and use (default none): `ctx.llm` refuses to bind any other,
   * and drops any other tool call from an answer, recording the refusal (runtime/tool-guard.ts).
   * Inbound text reaches prompts: a tool call is a request, never an instruction.
   */
  tools?: string[];
}

export interface TaskContext<I> {
  input: I;
  envelope: Envelope<I>;
  agent: string;
  capability: string;
  /** the engine's configuration (KEEL_* variables, read once by config/) */
  config: KeelConfig;
  /** the shared state, limited to the declared entity types */
  state: ScopedState;
  /** enqueue a task for another capability (declared in `permissions.enqueue`) */
  enqueue(capability: string, input: unknown, meta?: { id?: string; idempotencyKey?: string }): Promise<{ id: string }>;
  /**
   * Runs an external side effect at most once per task and name: a redelivered task gets the
   * recorded result instead of running it again. `key` is stable across retries; pass it to the
   * external system as its idempotency key so a crash between the effect and its record is safe too.
   */
  effect<T>(name: string, fn: (key: string) => Promise<T>): Promise<T>;
  /** a call through the named connector's circuit breaker */
  connector<T>(name: string, fn: () => Promise<T>): Promise<T>;
  /** only the secrets the capability declared */
  secrets: Readonly<Record<string, string>>;
  /** USD the task may still spend (from the message's budget), undefined = unlimited */
  budgetUsd: number | undefined;
  logger: Logger;
  span: Span;
  signal: AbortSignal;
  /** keeps a long task's message from being redelivered */
  working(): void;
  /** model tiers configured for this process; see models/ */
  models: unknown;
  /**
   * one model call at a tier ('small' | 'large'), attributed to this task's agent, capability,
   * run and customer in the cost ledger; recorded so a retry or a replay reuses the answer
   */
  llm(tier: 'small' | 'large', messages: unknown[], opts?: LlmCallOptions): Promise<{ text: string; usage: { inputTokens: number; outputTokens: number; cachedTokens: number }; costUsd: number; model: string; cacheHit?: boolean; savedUsd?: number; batched?: { size: number; id: string }; toolCalls?: ModelToolCall[]; refusedToolCalls?: string[] }>;
  /** whether a model is configured at that tier (else stay at tier 0) */
  hasModel(tier: 'small' | 'large'): boolean;
  /**
   * the long-term memory store (KEEL_MEMORY), opened on first use and shared by the process;
   * read-only unless the capability declared `permissions.memory: 'write'`. Rejects with
   * AGENT_PERMISSION_DENIED when it declared no memory permission.
   */
  memory(): Promise<MemoryStore>;
  /** true while `keel replay` re-executes the handler (model answers and effects are read back; writes are suppressed) */
  replay?: boolean;
}

export interface Capability<I = unknown, O = unknown> {
  name: string;
  version: string;
  description?: string;
  input: z.ZodType<I>;
  output: z.ZodType<O>;
  permissions?: Permissions;
  /** 'none' | 'heuristic' | 'small-model' | 'large-model' */
  costClass?: string;
  /** per-task timeout (default 60 s) */
  timeoutMs?: number;
  /** how long the server waits for an ack before redelivering (default 30 s; long tasks send working()) */
  ackWaitMs?: number;
  maxDeliver?: number;
  concurrency?: number;
  handler(ctx: TaskContext<I>): Promise<O>;
}

export interface AgentDefinition {
  name: string;
  version: string;
  description?: string;
  capabilities: Capability<any, any>[]; // eslint-disable-line @typescript-eslint/no-explicit-any
  /** connectors wrapped in circuit breakers, by name */
  connectors?: Record<string, BreakerOptions>;
  /**
   * the entity types this agent's capabilities read or write (its feature's declarations); the
   * runtime opens the store with exactly these plus the workflow run type
   */
  entities?: EntityTypeDef[];
  /**
   * tasks the runtime enqueues for this agent's own capabilities on a timer (e.g. a periodic
   * sweep): every `everyMs` each instance publishes one task with the idempotency key
   * `<capability>:<window>`, so replicas and restarts run each window's task once. The capability
   * must list itself in `permissions.enqueue` (the bus lets it publish there).
   */
  schedules?: { capability: string; everyMs: number; input?: unknown }[];
  /**
   * `background`: work that may wait (e.g. embedding memories): an agent running alone in its
   * process lowers the process's CPU priority (nice 10), so the agents on the customer's path
   * get the cores first. Co-hosted agents share a process and keep its priority.
   */
  priority?: 'normal' | 'background';
  /**
   * What the agent's process may touch beyond the base allowance (the repo and node_modules to
   * read, the data dir to read and write, the models dir and Node's compile cache), when the
   * supervisor runs it under Node's permission model (KEEL_AGENT_SANDBOX, docs/sandbox.md).
   */
  sandbox?: AgentSandbox;
}

/**
 * An agent's sandbox declaration (docs/sandbox.md). Paths are absolute, relative to the data dir
 * (KEEL_DATA_DIR), or start with `$KEEL_DATA_DIR` / `$KEEL_MODELS_DIR`; a writable path is
 * readable too. A host process gets the union of its agents' allowances and the largest caps.
 */
export interface AgentSandbox {
  /** more paths (files or folders) the process may read */
  fsRead?: string[];
  /** more paths the process may write (and read) */
  fsWrite?: string[];
  /** may spawn child processes (`--allow-child-process`) */
  childProcess?: boolean;
  /** may start worker threads (`--allow-worker`) */
  workers?: boolean;
  /** V8 old-space cap in MB (`--max-old-space-size`); default 256 */
  maxOldSpaceMb?: number;
  /** cgroup v2 memory.max in MB, where the supervisor may create cgroups */
  memoryMaxMb?: number;
  /** cgroup v2 cpu.max as a percentage of one core (e.g. 50, or 200 for two cores) */
  cpuPercent?: number;
}

function checkSandbox(agent: string, s: AgentSandbox): void {
  const bad = (what: string) => new DefinitionError(`agent '${agent}': sandbox.${what}`);
  if (typeof s !== 'object' || s === null || Array.isArray(s)) throw new DefinitionError(`agent '${agent}': sandbox must be an object { fsRead?, fsWrite?, childProcess?, workers?, maxOldSpaceMb?, memoryMaxMb?, cpuPercent? }`);
  const known = new Set(['fsRead', 'fsWrite', 'childProcess', 'workers', 'maxOldSpaceMb', 'memoryMaxMb', 'cpuPercent']);
  for (const k of Object.keys(s)) if (!known.has(k)) throw bad(`${k} is not a sandbox field (known: ${[...known].join(', ')})`);
  for (const k of ['fsRead', 'fsWrite'] as const) {
    const v = s[k];
    if (v === undefined) continue;
    if (!Array.isArray(v)) throw bad(`${k} must be a list of paths`);
    for (const p of v) if (typeof p !== 'string' || p.trim() === '' || p.includes('\0') || p.trim() === '*') throw bad(`${k}: '${String(p)}' is not a path (absolute, relative to the data dir, or $KEEL_DATA_DIR/... / $KEEL_MODELS_DIR/...; '*' is refused)`);
    // the data dir's root holds the operators' tokens and every agent's bus credentials: a grant
    // must name a folder inside it
    for (const p of v as string[]) {
      const inData = p.startsWith('$KEEL_DATA_DIR') ? p.slice('$KEEL_DATA_DIR'.length).replace(/^\/+/, '') : isAbsolute(p) || p.startsWith('$') ? undefined : p;
      if (inData === undefined) continue;
      const n = posix.normalize(inData || '.');
      if (n === '.' || n === './' || n === '..' || n.startsWith('../')) throw bad(`${k}: '${p}' names the data dir itself or a path outside it; grant a folder inside it (e.g. $KEEL_DATA_DIR/reports)`);
    }
  }
  for (const k of ['childProcess', 'workers'] as const) if (s[k] !== undefined && typeof s[k] !== 'boolean') throw bad(`${k} must be true or false`);
  const limits: Array<[keyof AgentSandbox, number, number]> = [['maxOldSpaceMb', 32, 65_536], ['memoryMaxMb', 32, 1_048_576], ['cpuPercent', 1, 25_600]];
  for (const [k, min, max] of limits) {
    const v = s[k];
    if (v !== undefined && (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)) throw bad(`${k} must be an integer from ${min} to ${max}; got ${String(v)}`);
  }
}

export function defineCapability<I, O>(c: Capability<I, O>): Capability<I, O> {
  if (!/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/.test(c.name)) throw new DefinitionError(`invalid capability name '${c.name}'`);
  return c;
}

export function defineAgent(a: AgentDefinition): AgentDefinition {
  if (!/^[a-z0-9][a-z0-9-]*$/.test(a.name)) throw new DefinitionError(`invalid agent name '${a.name}': lowercase letters, digits and '-'`);
  const names = new Set<string>();
  const known = a.entities ? new Set(['workflow_run', ...a.entities.map((e) => e.name)]) : undefined;
  for (const c of a.capabilities) {
    if (names.has(c.name)) throw new DefinitionError(`agent '${a.name}' declares capability '${c.name}' twice`);
    names.add(c.name);
    for (const t of c.permissions?.entityTypes ?? [])
      if (known && !known.has(t)) throw new DefinitionError(`agent '${a.name}': capability '${c.name}' may touch entity type '${t}', which the agent does not declare in entities`);
  }
  for (const s of a.schedules ?? []) {
    const c = a.capabilities.find((x) => x.name === s.capability);
    if (!c) throw new DefinitionError(`agent '${a.name}' schedules capability '${s.capability}', which it does not have`);
    if (!(c.permissions?.enqueue ?? []).includes(s.capability)) throw new DefinitionError(`agent '${a.name}': scheduled capability '${s.capability}' must list itself in permissions.enqueue`);
    if (!Number.isFinite(s.everyMs) || s.everyMs < 1_000) throw new DefinitionError(`agent '${a.name}': schedule of '${s.capability}' must be every 1000 ms or more`);
  }
  if (a.sandbox !== undefined) checkSandbox(a.name, a.sandbox);
  return a;
}

/** The message type of a capability's tasks. */
export const taskType = (capability: string) => `task.${capability}`;
