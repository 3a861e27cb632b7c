import { getPriority, setPriority } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { randomBytes, randomUUID } from 'node:crypto';
import { z } from 'zod';
import { INVALID_SPAN_CONTEXT, trace } from '@opentelemetry/api';
import {
  announce, connectBus, createBus, defineMessage, holdLease, WORKFLOW_TIMER_LEASE, RetryableError, PermanentError,
  type Announcement, type Bus, type ConsumerHandle, type Envelope, type Capability as ManifestCapability,
} from '../bus/index.ts';
import { openStore, type ClaimResult, type EntityTypeDef, type StateStore } from '../shared-state/index.ts';
import { createLogger, createMetrics, lazyChild, selfSampler, type Logger, type Metrics } from '../observability/index.ts';
import { loadConfig, type KeelConfig } from '../config/index.ts';
import { CircuitBreaker } from './breaker.ts';
import { AgentError, PermissionDeniedError, sandboxDenial } from './errors.ts';
import { scopeState } from './scoped-state.ts';
import { LEASE_MARGIN_MS, callModel, checkOutput, effectKey, grantedSecrets, modelServices, recordOnce, runBudgetOf, type ModelServices, type RunBudget } from './task-parts.ts';
import { WorkflowEngine, runCoordinates, WORKFLOW_ENTITY_TYPES } from '../workflows/index.ts';
import type { ModelRegistry } from '../models/index.ts';
import { MODEL_ENTITY_TYPES } from '../models/entities/index.ts';
import type { MemoryStore } from '../memory/index.ts';
import { taskType, type AgentDefinition, type Capability, type TaskContext } from './define.ts';
import { allowedTools, checkToolsOffered, enforceToolAllowlist, splitToolCalls } from './tool-guard.ts';

export interface RunAgentOptions {
  natsUrl: string;
  /** this agent's bus credentials (least privilege); unset on an open server */
  natsUser?: string;
  natsPassword?: string;
  /** `sqlite:PATH` or a MongoDB URL, or an open store */
  state: string | StateStore;
  prefix?: string;
  instanceId?: string;
  logger?: Logger;
  /** serve this process's own /metrics on this port (0 = free port); undefined = no endpoint */
  metricsPort?: number;
  /** metrics shared with other agents of the same process (a host); takes precedence over metricsPort */
  metrics?: Metrics;
  /** the process this instance shares with others (co-hosting), for its manifest */
  host?: { name?: string; agents: string[] };
  /** how often this agent was restarted inside its process so far (its manifest reports it) */
  restarts?: number;
  /** secret values by name; each capability sees only those it declared */
  secrets?: Record<string, string>;
  heartbeatMs?: number;
  /** model tiers for `ctx.llm` / `ctx.models` (default: none, tier 0 only) */
  models?: ModelRegistry;
  /**
   * how often this instance looks for due workflow timers while it holds the timer lease
   * (default: config.workflowSweepMs; 0 = never, and it does not compete for the lease)
   */
  sweepMs?: number;
  /** the configuration handlers see as `ctx.config` (default: loadConfig() from the environment) */
  config?: KeelConfig;
  /** the long-term memory `ctx.memory()` returns (not closed by stop); default: KEEL_MEMORY, opened on first use */
  memory?: MemoryStore;
}

export interface RunningAgent {
  definition: AgentDefinition;
  instanceId: string;
  bus: Bus;
  store: StateStore;
  metrics: Metrics | undefined;
  consumers: Record<string, ConsumerHandle>;
  announcement: Announcement;
  /** the workflow timer sweeper: whether this instance holds the lease, and how many sweeps it ran */
  timers: { holding(): boolean; sweeps(): number };
  /** drain: stop taking tasks, finish in-flight ones (up to graceMs), withdraw, disconnect */
  stop(graceMs?: number): Promise<void>;
}

/** One memory store per process and location: opened on first use, closed when its last user lets go. */
const sharedMemories = new Map<string, { store: Promise<MemoryStore>; users: number }>();

/**
 * `ctx.memory()` for one agent instance: the given store, or KEEL_MEMORY opened (with the
 * configured embedder) on the first call and shared by every agent of the process. Internal to
 * runtime/ (the test kit uses it too).
 */
export function memoryAccess(config: KeelConfig, given?: MemoryStore): { get(): Promise<MemoryStore>; release(): Promise<void> } {
  if (given) return { get: async () => given, release: async () => undefined };
  const key = `${config.memory}\n${config.embeddings}\n${config.subjectPrefix}`;
  let held = false;
  return {
    get: async () => {
      let slot = sharedMemories.get(key);
      if (!slot) {
        const store = (async () => {
          // the memory module and its embedding model load here, on the first recall or write
          const { openMemory, createEmbeddings } = await import('../memory/index.ts');
          const embeddings = createEmbeddings({ spec: config.embeddings, modelsDir: config.modelsDir, modelEnv: config.modelEnv });
          return openMemory(config.memory, { embeddings, weights: config.memoryWeights, prefix: config.subjectPrefix });
        })();
        slot = { store, users: 0 };
        sharedMemories.set(key, slot);
        // a failed open is not cached: the next task tries again (e.g. once the model is provisioned)
        store.catch(() => sharedMemories.get(key) === slot && sharedMemories.delete(key));
      }
      if (!held) {
        held = true;
        slot.users++;
      }
      return slot.store;
    },
    release: async () => {
      if (!held) return;
      held = false;
      const slot = sharedMemories.get(key);
      if (!slot || --slot.users > 0) return;
      sharedMemories.delete(key);
      await (await slot.store.catch(() => undefined))?.close();
    },
  };
}

/**
 * Failures of what a task stands on (the store unreachable or its disk full, the bus not taking
 * writes, a full disk under a local write such as the outbox: ENOSPC): waited out, not counted.
 */
const OUTAGE_CODES = new Set(['STATE_UNAVAILABLE', 'STATE_STORAGE_FULL', 'BUS_UNAVAILABLE', 'BUS_PUBLISH_FAILED', 'ENOSPC']);

/** Whether `err` (or what it wraps) is an outage of the store, the bus or the disk ({@link OUTAGE_CODES}). */
export function isOutage(err: unknown): boolean {
  let e: unknown = err;
  for (let depth = 0; depth < 5 && typeof e === 'object' && e !== null; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && OUTAGE_CODES.has(code)) return true;
    if ((e as { storageFull?: unknown }).storageFull === true) return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

const NOT_FOR_TASKS = new Set(['close']);
const WRITES = new Set(['put', 'supersede', 'forget', 'reindex']);

/** The store as a task sees it: never closed by a handler; read-only unless the capability may write. */
export function taskMemory(store: MemoryStore, agent: string, mode: 'read' | 'write'): MemoryStore {
  return new Proxy(store, {
    get(target, prop, receiver) {
      const name = String(prop);
      if (NOT_FOR_TASKS.has(name)) return async () => undefined;
      if (mode === 'read' && WRITES.has(name)) return async () => Promise.reject(new PermissionDeniedError(agent, `long-term memory writes (${name}): declare permissions.memory: 'write'`));
      const v = Reflect.get(target, prop, receiver) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

/** `ctx.memory` of one capability: refused without a memory permission. */
export function memoryForCapability(cap: Capability, agent: string, access: { get(): Promise<MemoryStore> }): () => Promise<MemoryStore> {
  const mode = cap.permissions?.memory;
  return async () => {
    if (!mode) throw new PermissionDeniedError(agent, `long-term memory (capability '${cap.name}' declares no permissions.memory)`);
    return taskMemory(await access.get(), agent, mode);
  };
}

/** The entity types an agent's store must know: those it declares, plus the workflow engine's (runs, lanes) and the model budgets'. */
export function agentEntityTypes(def: AgentDefinition): EntityTypeDef[] {
  return [...(def.entities ?? []), ...WORKFLOW_ENTITY_TYPES, ...MODEL_ENTITY_TYPES];
}


function jsonSchema(s: z.ZodType): Record<string, unknown> | undefined {
  try {
    return z.toJSONSchema(s, { unrepresentable: 'any' }) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

export function manifestCapabilities(def: AgentDefinition): ManifestCapability[] {
  return def.capabilities.map((c) => ({
    name: c.name,
    version: c.version,
    description: c.description,
    input: jsonSchema(c.input),
    output: jsonSchema(c.output),
    permissions: {
      publish: [...(c.permissions?.enqueue ?? []).map((e) => `task.${e}`), ...(c.permissions?.publish ?? [])],
      subscribe: c.permissions?.subscribe ?? [],
      entityTypes: c.permissions?.entityTypes ?? [],
      secrets: c.permissions?.secrets ?? [],
    },
    costClass: c.costClass ?? 'none',
  }));
}

/**
 * Runs one agent instance: consumes its capabilities' tasks from the bus with the runtime's
 * reliability (idempotency, retries, dead letters, timeouts, concurrency, heartbeats), hands
 * each handler a least-privilege context, announces its manifest, records a cost entry and a
 * span per task, and exposes metrics.
 */
export async function runAgent(def: AgentDefinition, opts: RunAgentOptions): Promise<RunningAgent> {
  const prefix = opts.prefix ?? 'keel';
  const instanceId = opts.instanceId ?? `${process.pid}-${randomBytes(3).toString('hex')}`;
  const config = opts.config ?? loadConfig();
  const log = (opts.logger ?? createLogger(def.name, { level: config.logLevel })).child({ agent: def.name, instance: instanceId });
  const nc = await connectBus({ servers: opts.natsUrl, name: `${def.name}/${instanceId}`, user: opts.natsUser, pass: opts.natsPassword, logger: log });
  const bus = createBus(nc, { prefix, logger: log });
  // the store knows exactly the agent's declared entity types plus the runtime's own (workflow runs)
  const store = typeof opts.state === 'string' ? await openStore(opts.state, { types: agentEntityTypes(def), sqlite: { synchronous: config.sqliteSync } }) : opts.state;
  const metrics = opts.metrics ?? (opts.metricsPort !== undefined ? await createMetrics({ serviceName: def.name, port: opts.metricsPort, host: config.metricsHost }) : undefined);
  const tasksCounter = metrics?.meter.createCounter('keel_tasks', { description: 'tasks settled, by outcome (ack, retry, dead_letter)' });
  const duration = metrics?.meter.createHistogram('keel_task_duration_seconds', { description: 'task handling time', unit: 's' });
  const costCounter = metrics?.meter.createCounter('keel_cost_usd', { description: 'recorded spend in USD (model calls carry model and workflow)' });
  // what the ledger records per model call, for the dashboards (per-customer cost stays in the ledger: no customer label)
  const tokensCounter = metrics?.meter.createCounter('keel_model_tokens', { description: 'model tokens by kind: input (cached included), output, cached (provider prompt cache)' });
  const callsCounter = metrics?.meter.createCounter('keel_model_calls', { description: 'model calls by source: provider, cache (intent cache hit), batch (one item of a batch)' });
  const savedCounter = metrics?.meter.createCounter('keel_model_saved_usd', { description: 'USD not spent: cache (intent cache hits, the cached answer\'s cost) and routing (against the large model\'s price)' });
  const toolRefusals = metrics?.meter.createCounter('keel_tool_calls_refused', { description: 'tool calls in model answers refused: not on the capability\'s permissions.tools' });
  const breakers = new Map<string, CircuitBreaker>();
  for (const [name, o] of Object.entries(def.connectors ?? {})) breakers.set(name, new CircuitBreaker(name, o));
  // background work yields the cores to the customer's path (only when the agent has the process to itself)
  if (def.priority === 'background' && (opts.host?.agents.length ?? 1) <= 1) {
    try {
      setPriority(process.pid, Math.max(getPriority(process.pid), 10));
      log.info({ nice: getPriority(process.pid) }, 'background agent: lower CPU priority');
    } catch (err) {
      log.warn({ err }, 'could not lower the CPU priority of a background agent');
    }
  }
  // the intent cache and batchers this process's model calls share (made on the first model call)
  let services: ModelServices | undefined;
  const modelSvc = () => (services ??= modelServices(store, config, log));

  const memory = memoryAccess(config, opts.memory);
  const workflows = new WorkflowEngine({ store, bus, actor: { kind: 'agent', id: def.name }, logger: log });
  const advance = async (env: Envelope<unknown>, ok: boolean, extra: { output?: unknown; error?: string; durationMs?: number; costUsd?: number }) => {
    const rc = runCoordinates(env.headers);
    if (!rc) return;
    await workflows.onOutcome(rc.runId, { step: rc.step, attempt: rc.attempt, role: rc.role, ok, agent: def.name, ...extra }, env.id);
  };

  const taskMessage = new Map(def.capabilities.map((c) => [c.name, defineMessage(taskType(c.name), c.input)]));

  // the tasks this process is running, by idempotency key: a duplicate delivered while the first
  // runs here (published again under a new message id) waits for it and then finds it completed,
  // instead of being put back until the first one's lease would have expired
  const runningHere = new Map<string, Promise<void>>();
  // task claims whose release failed in an outage, released before the task is tried again
  const unreleased = new Map<string, string>();
  /**
   * Runs a task, and waits out an outage of the store or the bus (Mongo down, a full disk, JetStream
   * restarting): the message is held (the consumer keeps telling the server it is being worked on)
   * and the task is tried again every 1 s growing to 10 s, so an outage burns no delivery attempts
   * and makes no dead letters. Bounded by the task's timeout (its signal); after that it is retried
   * like any failure.
   */
  const holdThroughOutages = async (key: string, signal: AbortSignal, attempt: () => Promise<void>) => {
    let pause = 1_000;
    let since = 0;
    for (;;) {
      try {
        const token = unreleased.get(key);
        if (token) {
          await store.release(key, token).catch((err: unknown) => {
            if (isOutage(err)) throw err;
          });
          unreleased.delete(key);
        }
        await attempt();
        if (since) log.info({ task: key, pausedMs: Date.now() - since }, 'outage over: the paused task completed');
        return;
      } catch (err) {
        if (!isOutage(err) || signal.aborted) throw err;
        if (!since) log.warn({ err, task: key }, 'task paused: the state store or the bus is not taking writes; holding the message and trying again');
        since ||= Date.now();
        try {
          await sleep(pause, undefined, { signal });
        } catch {
          throw err;
        }
        pause = Math.min(pause * 2, 10_000);
      }
    }
  };
  const handlerFor = (cap: Capability) => async (env: Envelope<unknown>, hctx: { signal: AbortSignal; working(): void }) => {
    const key = `task:${cap.name}:${env.idempotencyKey}`;
    for (let prior = runningHere.get(key); prior; prior = runningHere.get(key)) await prior.catch(() => undefined);
    const run = holdThroughOutages(key, hctx.signal, () => runTask(cap)(env, hctx));
    runningHere.set(key, run);
    try {
      await run;
    } finally {
      if (runningHere.get(key) === run) runningHere.delete(key);
    }
  };
  /**
   * A workflow step's attempt, without a claim: a read of the task's record. Completed → its
   * result; held under a live claim (by an instance of an earlier version, which claimed steps)
   * → running; else this delivery's own token and attempt number.
   */
  const stepAttempt = async (taskKey: string, env: Envelope<unknown>): Promise<ClaimResult> => {
    const rec = await store.getIdempotency(taskKey);
    if (rec?.status === 'completed') return { status: 'completed', key: taskKey, result: rec.result, completedAt: rec.completedAt ?? '' };
    if (rec?.status === 'running' && rec.leaseUntil && Date.parse(rec.leaseUntil) > Date.now()) return { status: 'running', key: taskKey, attempt: rec.attempt, leaseUntil: rec.leaseUntil };
    // no lease: nothing is held (leaseUntil is now)
    return { status: 'claimed', key: taskKey, token: randomUUID(), attempt: Math.max(env.deliveryCount ?? 1, (rec?.attempt ?? 0) + 1), leaseUntil: new Date().toISOString() };
  };
  const runTask = (cap: Capability) => async (env: Envelope<unknown>, hctx: { signal: AbortSignal; working(): void }) => {
    // without telemetry set up there is no active span: a non-recording one keeps ctx.span usable
    const active = trace.getActiveSpan();
    const span = active ?? trace.wrapSpanContext(INVALID_SPAN_CONTEXT);
    const traceId = active?.spanContext().traceId;
    const taskLog = lazyChild(log, { capability: cap.name, task: env.id, correlation: env.correlationId });
    span?.setAttributes({ 'keel.agent': def.name, 'keel.capability': cap.name, ...(env.customer ? { 'keel.customer': env.customer } : {}) });
    const taskKey = `task:${cap.name}:${env.idempotencyKey}`;
    const leaseMs = (cap.timeoutMs ?? 60_000) + LEASE_MARGIN_MS;
    const rc = runCoordinates(env.headers);
    // A workflow step runs without a claim (one write less per step): the run's expected-version
    // append, which records the task completed in the same transaction, decides which delivery's
    // outcome counts, and a step's side effects and model calls have claims of their own
    // (`ctx.effect`), so a second delivery running at the same time repeats only pure compute.
    // Other tasks claim first: their completion has no run to arbitrate it.
    const claimed = rc ? await stepAttempt(taskKey, env) : await store.claim(taskKey, { leaseMs });
    if (claimed.status === 'completed') {
      taskLog.info('task already completed (redelivered or republished): not running it again');
      // the process that completed it may have died before advancing its workflow run
      await advance(env, true, { output: claimed.result });
      return;
    }
    if (claimed.status === 'running') {
      const wait = Math.max(250, Date.parse(claimed.leaseUntil) - Date.now() + 250);
      throw new AgentError('AGENT_TASK_IN_PROGRESS', `task ${taskKey} is held by another instance until ${claimed.leaseUntil}`, { retryable: true, nextDelayMs: wait });
    }
    const claim = claimed;
    const release = () => (rc ? Promise.resolve() : store.release(taskKey, claim.token).catch((e: unknown) => void (isOutage(e) && unreleased.set(taskKey, claim.token))));
    const t0 = performance.now();
    const secrets = grantedSecrets(cap, opts.secrets, { store, agent: def.name, logger: taskLog });
    const allowedEnqueue = new Set(cap.permissions?.enqueue ?? []);
    let spentUsd = 0;
    // the run's workflow and own budget, read on the first model call (budgets are admitted per call)
    let runBudget: Promise<RunBudget> | undefined;
    let modelCalls = 0;
    const ctx: TaskContext<unknown> = {
      input: env.data,
      envelope: env,
      agent: def.name,
      capability: cap.name,
      config,
      state: scopeState(store, def.name, cap.permissions?.entityTypes ?? [], { causationId: env.id, correlationId: env.correlationId, traceId }),
      enqueue: async (capability, input, meta = {}) => {
        if (!allowedEnqueue.has(capability)) throw new PermissionDeniedError(def.name, `tasks of capability '${capability}'`);
        const mt = defineMessage(taskType(capability), z.unknown());
        const r = await bus.publish(bus.subjects.task(capability), mt, input, {
          id: meta.id,
          idempotencyKey: meta.idempotencyKey,
          correlationId: env.correlationId,
          causationId: env.id,
          customer: env.customer,
          budgetUsd: env.budgetUsd,
        });
        return { id: r.id };
      },
      effect: async <T>(name: string, fn: (key: string) => Promise<T>): Promise<T> => (await recordOnce(store, effectKey(cap.name, env.idempotencyKey, name), leaseMs, fn)).result,
      connector: async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
        let b = breakers.get(name);
        if (!b) breakers.set(name, (b = new CircuitBreaker(name)));
        return b.call(fn);
      },
      secrets,
      budgetUsd: env.budgetUsd,
      logger: taskLog,
      span,
      signal: hctx.signal,
      working: hctx.working,
      models: opts.models,
      llm: async (tier, messages, callOpts) => {
        checkToolsOffered(cap, def.name, callOpts?.tools);
        const n = ++modelCalls;
        // recorded like a side effect: a retried task reuses the answer, and replay reads it back
        // (with the prompt, so a replay can tell when the step now asks something else)
        const { prompt: _prompt, ...answer } = await ctx.effect(callOpts?.key ? `model-${callOpts.key}` : `model-${n}`, async () => {
          const r = await callModel({
            models: opts.models, tier, messages, capability: cap.name, store, signal: hctx.signal,
            attribution: { agent: def.name, runId: env.correlationId, customerId: env.customer },
            run: await (runBudget ??= runBudgetOf(store, env)), policy: config.budgetOnRefusal, taskId: env.id, call: callOpts, services: modelSvc(),
          });
          spentUsd += r.costUsd;
          const workflow = (await runBudget)?.workflow;
          const labels = { agent: def.name, capability: cap.name, model: r.model, tier, ...(workflow ? { workflow } : {}) };
          costCounter?.add(r.costUsd, labels);
          callsCounter?.add(1, { ...labels, source: r.cacheHit ? 'cache' : r.batched ? 'batch' : 'provider' });
          if (!r.cacheHit) {
            tokensCounter?.add(r.usage.inputTokens, { ...labels, kind: 'input' });
            tokensCounter?.add(r.usage.outputTokens, { ...labels, kind: 'output' });
            tokensCounter?.add(r.usage.cachedTokens, { ...labels, kind: 'cached' });
          }
          if (r.savedUsd) savedCounter?.add(r.savedUsd, { ...labels, source: r.cacheHit ? 'cache' : 'routing' });
          // a tool call not on permissions.tools never reaches the handler (recorded once, here)
          const guarded = await enforceToolAllowlist(r, allowedTools(cap), { agent: def.name, capability: cap.name, logger: taskLog, span, counter: toolRefusals, store, runId: env.correlationId, taskId: env.id, model: r.model });
          return { ...guarded, prompt: { tier, messages } };
        });
        // an answer recorded before (retry, replay) is held to today's list too
        const { toolCalls: recorded, ...rest } = answer;
        const { kept } = splitToolCalls(recorded, allowedTools(cap));
        return kept.length ? { ...rest, toolCalls: kept } : rest;
      },
      hasModel: (tier) => !!opts.models?.has(tier),
      memory: memoryForCapability(cap, def.name, memory),
    };
    let output: unknown;
    try {
      output = checkOutput(cap, await cap.handler(ctx));
    } catch (err) {
      await release();
      const e = err as { code?: string };
      if (e.code === 'AGENT_PERMISSION_DENIED') taskLog.error({ err }, 'permission denied');
      // Node's permission model refused a resource (ERR_ACCESS_DENIED): permanent, never retried
      const denied = sandboxDenial(err, def.name, cap.name);
      if (denied) {
        taskLog.error({ code: denied.code, permission: denied.permission, resource: denied.resource }, denied.message);
        throw denied;
      }
      throw err;
    }
    const computeMs = Math.round((performance.now() - t0) * 1000) / 1000;
    costCounter?.add(0, { agent: def.name, capability: cap.name });
    // the task's own record (compute time; model spend has its own records), written with the
    // completion so a task is never counted twice
    const complete = {
      key: taskKey,
      token: claim.token,
      unclaimed: !!rc,
      attempt: claim.attempt,
      result: output ?? null,
      cost: { agent: def.name, capability: cap.name, runId: env.correlationId, customerId: env.customer, computeMs, costUsd: 0, traceId, details: { kind: 'task', taskId: env.id, delivery: env.deliveryCount } },
    };
    try {
      if (rc) {
        // a workflow step: the completion commits with the run's advance (one transaction)
        await workflows.onOutcome(rc.runId, { step: rc.step, attempt: rc.attempt, role: rc.role, ok: true, agent: def.name, output, durationMs: computeMs, costUsd: spentUsd }, env.id, complete);
      } else {
        await store.complete(taskKey, claim.token, complete.result, { cost: complete.cost });
      }
    } catch (err) {
      if ((err as { code?: string }).code === 'STATE_IDEMPOTENCY_LEASE_LOST') {
        // this instance's lease expired while it worked (a slow store, a long pause) and another
        // delivery took the task over; or, on MongoDB (no transactions), this very attempt's
        // completion landed and the run's advance lost a race and was retried
        const rec = await store.getIdempotency(taskKey).catch(() => null);
        if (rec?.status === 'completed') {
          taskLog.warn({ attempt: claim.attempt, completedAttempt: rec.attempt }, 'lease lost: the task was completed (by this attempt or another); its result stands');
          // like a redelivered completed task: make sure its run moved on (an outcome already applied changes nothing)
          await advance(env, true, { output: rec.result });
          return;
        }
        // still running elsewhere: come back later and find it completed (or its lease expired)
        throw new AgentError('AGENT_TASK_IN_PROGRESS', `task ${taskKey}: lease lost to attempt ${rec?.attempt ?? '?'}, which is still running`, { retryable: true, nextDelayMs: 1_000, cause: err });
      }
      // nothing was recorded: let the retry run the task again (its effects are recorded)
      await release();
      throw err;
    }
    taskLog.info({ computeMs }, 'task completed');
  };

  // the leases this instance holds, as its registry entry reports them
  const leasesHeld = new Set<string>();
  const announcement = await announce(
    nc,
    bus.subjects.registryBucket,
    { agent: def.name, instanceId, version: def.version, capabilities: manifestCapabilities(def) },
    {
      heartbeatMs: opts.heartbeatMs,
      logger: log,
      process: (() => {
        const sample = selfSampler();
        const agents = opts.host?.agents ?? [def.name];
        return () => {
          const u = sample();
          return { rssBytes: u.rssBytes, cpu: u.cpu, cpuSeconds: u.cpuSeconds, ...(opts.host?.name ? { host: opts.host.name } : {}), agents, restarts: opts.restarts ?? 0, ...(metrics?.url ? { metricsUrl: metrics.url } : {}) };
        };
      })(),
      leases: () => [...leasesHeld],
      breakers: () => [...breakers.values()].map((b) => b.snapshot()),
    },
  );

  const consumers: Record<string, ConsumerHandle> = {};
  for (const cap of def.capabilities) {
    // every outcome's series exists from the start (at 0): a dashboard's failure panels show 0, not "no data"
    for (const outcome of ['ack', 'retry', 'dead_letter']) tasksCounter?.add(0, { agent: def.name, capability: cap.name, outcome });
    consumers[cap.name] = await bus.consumeTasks(cap.name, {
      accepts: [taskMessage.get(cap.name)!],
      handler: handlerFor(cap),
      maxDeliver: cap.maxDeliver,
      ackWaitMs: cap.ackWaitMs,
      timeoutMs: cap.timeoutMs ?? 60_000,
      concurrency: cap.concurrency ?? 4,
      onDeadLetter: async (d) => {
        // the headers carry the run coordinates even when the body did not parse (schema mismatch):
        // the step fails now, with the dead letter's reason, instead of waiting for its timeout
        const rc = runCoordinates(d.envelope?.headers ?? d.headers);
        if (!rc) return;
        const deadLetter = { reason: d.reason, stream: d.dlq.stream, seq: d.dlq.seq, subject: d.dlq.subject };
        await workflows.onOutcome(rc.runId, { step: rc.step, attempt: rc.attempt, role: rc.role, ok: false, agent: def.name, error: `${d.reason}: ${d.error.message}`, deadLetter }, d.envelope?.id ?? d.headers['Nats-Msg-Id']);
      },
      onOutcome: (o) => {
        tasksCounter?.add(1, { agent: def.name, capability: cap.name, outcome: o.outcome, ...(o.reason ? { reason: o.reason } : {}) });
        duration?.record(o.durationMs / 1000, { agent: def.name, capability: cap.name, outcome: o.outcome });
      },
    });
  }
  // durable timers fire from one place at a time: the instance holding the timer lease (a
  // JetStream token, bus/lease.ts) sweeps every sweepMs; every other instance waits on the bus
  // for the token (a pending pull request, no polling) and gets it when the holder's lease runs
  // out (it died) or is handed back (it stopped). Races between an old and a new holder resolve
  // by the runs' expected versions.
  const sweepMs = opts.sweepMs ?? config.workflowSweepMs;
  let sweeper: NodeJS.Timeout | undefined;
  let sweeping = false;
  let sweeps = 0;
  const sweep = () => {
    if (sweeping) return;
    sweeping = true;
    sweeps++;
    workflows
      .wakeDue()
      .catch((err: unknown) => log.warn({ err }, 'workflow timer sweep failed'))
      .finally(() => (sweeping = false));
  };
  const startSweeping = () => {
    if (sweeper) return;
    sweep();
    sweeper = setInterval(sweep, sweepMs);
    sweeper.unref();
  };
  const stopSweeping = () => {
    if (sweeper) clearInterval(sweeper);
    sweeper = undefined;
  };
  let timerLease: { holding(): boolean; release(): Promise<void> } | undefined;
  if (sweepMs > 0) {
    timerLease = await holdLease(nc, WORKFLOW_TIMER_LEASE, {
      prefix,
      holder: `${def.name}.${instanceId}`,
      logger: log,
      // the registry says at once who fires the timers (`keel agents`)
      onAcquired: () => {
        leasesHeld.add(WORKFLOW_TIMER_LEASE);
        startSweeping();
        void announcement.refresh();
      },
      onLost: () => {
        leasesHeld.delete(WORKFLOW_TIMER_LEASE);
        stopSweeping();
        if (!stopped) void announcement.refresh();
      },
    }).catch((err: unknown) => {
      // a bus provisioned before leases existed (no lease consumer): fall back to sweeping here
      log.warn({ err }, 'no workflow timer lease (is the bus provisioned?): this instance sweeps on its own');
      startSweeping();
      return undefined;
    });
  }
  // scheduled tasks: each window's task has one id and idempotency key, so the bus and the task
  // claim keep it to one run however many instances publish it
  const schedules: NodeJS.Timeout[] = [];
  for (const sch of def.schedules ?? []) {
    const mt = defineMessage(taskType(sch.capability), z.unknown());
    const tick = () => {
      const w = Math.floor(Date.now() / sch.everyMs);
      bus
        .publish(bus.subjects.task(sch.capability), mt, sch.input ?? {}, { id: `sched-${sch.capability}-${w}`, idempotencyKey: `${sch.capability}:${w}` })
        .catch((err: unknown) => log.warn({ err, capability: sch.capability }, 'could not enqueue a scheduled task'));
    };
    tick();
    const t = setInterval(tick, sch.everyMs);
    t.unref();
    schedules.push(t);
  }
  log.info({ capabilities: def.capabilities.map((c) => c.name), metrics: metrics?.url }, 'agent running');

  let stopped = false;
  return {
    definition: def,
    instanceId,
    bus,
    store,
    metrics,
    consumers,
    announcement,
    timers: { holding: () => !!sweeper, sweeps: () => sweeps },
    stop: async (graceMs = 10_000) => {
      if (stopped) return;
      stopped = true;
      for (const t of schedules) clearInterval(t);
      // released first, so another instance takes the timers over at once
      await timerLease?.release().catch((err: unknown) => log.warn({ err }, 'could not release the workflow timer lease'));
      stopSweeping();
      log.info('draining');
      await Promise.all(Object.values(consumers).map((c) => c.stop(graceMs)));
      await services?.close();
      await announcement.withdraw();
      if (!opts.metrics) await metrics?.shutdown();
      await memory.release().catch((err: unknown) => log.warn({ err }, 'could not close long-term memory'));
      if (typeof opts.state === 'string') await store.close();
      await nc.drain().catch(() => undefined);
      log.info('stopped');
    },
  };
}

// re-exported for handlers that want to fail a task on purpose
export { RetryableError, PermanentError };
