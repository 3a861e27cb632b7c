/**
 * A capability test kit, like Temporal's `MockActivityEnvironment`: runs ONE capability handler
 * with a task context built the way the runtime builds it, in a plain unit test. No nats-server:
 * the shared state is a real store (SQLite in a temp dir by default), `ctx.effect` is recorded
 * through the store's idempotency records (`claim`/`complete`/`release`, the runtime's keys),
 * `ctx.llm` goes through the real `invokeModel` (a cost record per call, the task's budget
 * enforced before the call), `ctx.enqueue` is checked against `permissions.enqueue` and recorded
 * instead of published, and the input and output are validated against the capability's schemas.
 *
 * ```ts
 * import { createCapabilityTestKit } from './runtime/index.ts';
 * import { createModelRegistry } from './models/index.ts';
 * import { INBOUND_ENTITY_TYPES } from './agents/inbound/index.ts';
 * import { suggestReply } from './agents/inbound/reply-suggester.ts';
 *
 * const kit = await createCapabilityTestKit({
 *   entities: INBOUND_ENTITY_TYPES,                      // + workflow_run, added by the kit
 *   agent: 'reply-suggester',
 *   config: { dataDir: tmp, supportSignature: 'Ada' },   // overrides on loadConfig({})
 *   models: createModelRegistry({ KEEL_MODEL_SMALL: 'scripted:draft' }, { scripts: { draft: [{ content: 'Hi!' }] } }),
 * });
 * await kit.store.append('ticket', 'T-1', 0, [{ type: 'created', data: { ... } }], { actor: { kind: 'system', id: 'test' } });
 * const r = await kit.run(suggestReply, { ticketId: 'T-1' }, { budgetUsd: 0.01, customer: 'C-7', idempotencyKey: 'k1' });
 * r.output;      // validated against suggestReply.output (else AGENT_BAD_OUTPUT)
 * r.events;      // what the handler appended (from the store's change log)
 * r.modelCalls;  // [{ tier: 'small', messages, text: 'Hi!', costUsd, model, usage, key, replayed: false }]
 * r.effects;     // [{ name, key, result, replayed }] — run again with idempotencyKey 'k1': replayed: true
 * r.enqueued;    // [{ capability, input, id, idempotencyKey }] — recorded, not published
 * await kit.close();                                     // closes and removes the temp store
 * ```
 *
 * Each `run` is one delivery of the task whose completion was not recorded yet: the handler
 * always runs (the runtime's task-level dedupe, which skips an already completed task, is not
 * simulated), while effects and model answers recorded under the same idempotency key are read
 * back, never executed again, exactly as on a redelivery.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { context, isSpanContextValid, trace } from '@opentelemetry/api';
import { BusError, InvalidMessageError, subjects, type Envelope } from '../bus/index.ts';
import { loadConfig, type KeelConfig } from '../config/index.ts';
import type { ModelRegistry } from '../models/index.ts';
import { createLogger } from '../observability/index.ts';
import { openStore, type CommittedEvent, type EntityTypeDef, type StateStore } from '../shared-state/index.ts';
import { CircuitBreaker, type BreakerOptions } from './breaker.ts';
import { taskType, type Capability, type TaskContext } from './define.ts';
import { AgentError, PermissionDeniedError } from './errors.ts';
import { agentEntityTypes, memoryForCapability } from './runtime.ts';
import type { MemoryStore } from '../memory/index.ts';
import { scopeState } from './scoped-state.ts';
import { allowedTools, checkToolsOffered, enforceToolAllowlist } from './tool-guard.ts';
import { LEASE_MARGIN_MS, callModel, checkOutput, effectKey, grantedSecrets, modelServices, recordOnce, runBudgetOf, type ModelServices, type RunBudget } from './task-parts.ts';

export interface CapabilityTestKitOptions {
  /** the entity types the store knows (the agent's `entities`); `workflow_run` is added */
  entities: readonly EntityTypeDef[];
  /** an open store to use (not closed by `close()`); default SQLite in a temp dir, removed on close */
  state?: StateStore;
  /** overrides on `loadConfig({})`; `dataDir` defaults to the kit's temp dir (outbox, files) */
  config?: Partial<KeelConfig>;
  /** model tiers for `ctx.llm` (e.g. `createModelRegistry({ KEEL_MODEL_SMALL: 'scripted:x' }, { scripts })`); default none */
  models?: ModelRegistry;
  /** secret values by name; a capability sees only those it declares */
  secrets?: Record<string, string>;
  /** the agent the tasks run as (the actor of appends, the cost ledger's agent); default `test-agent` */
  agent?: string;
  /** circuit breaker options of `ctx.connector(name)`, by name (as `defineAgent({ connectors })`) */
  connectors?: Record<string, BreakerOptions>;
  /** the long-term memory `ctx.memory()` returns (not closed by the kit); default: none (a capability that asks for it fails) */
  memory?: MemoryStore;
  /** level of the captured task logs (nothing is printed); default `debug` */
  logLevel?: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';
}

export interface CapabilityRunOptions {
  /** envelope fields (id, correlationId, causationId, headers, deliveryCount, ...) */
  envelope?: Partial<Envelope>;
  /** the task's budget (`Keel-Budget-Usd`); wins over `envelope.budgetUsd` */
  budgetUsd?: number;
  /** the task's customer (`Keel-Customer`); wins over `envelope.customer` */
  customer?: string;
  /** the task's idempotency key; wins over `envelope.idempotencyKey`; default the envelope id */
  idempotencyKey?: string;
  /** default the capability's `timeoutMs`, else 60 s, as the runtime */
  timeoutMs?: number;
  /** run as this agent instead of the kit's (several agents' capabilities on one store) */
  agent?: string;
}

/** A `ctx.effect` call. */
export interface RecordedEffect {
  name: string;
  /** the idempotency key the effect ran under (`effect:<capability>:<idempotencyKey>:<name>`) */
  key: string;
  result: unknown;
  /** true: recorded by an earlier run with the same idempotency key, read back, `fn` not called */
  replayed: boolean;
}

/** A `ctx.enqueue` call (allowed by `permissions.enqueue`; recorded, not published). */
export interface RecordedEnqueue {
  capability: string;
  input: unknown;
  /** the message id it would have been published with */
  id: string;
  idempotencyKey: string;
  correlationId: string | undefined;
  causationId: string;
  customer: string | undefined;
  budgetUsd: number | undefined;
}

/** A `ctx.llm` call that returned an answer. */
export interface RecordedModelCall {
  tier: 'small' | 'large';
  messages: unknown[];
  text: string;
  /** what the call cost (a replayed answer: what it cost when it was made) */
  costUsd: number;
  model: string;
  usage: { inputTokens: number; outputTokens: number; cachedTokens: number };
  key: string;
  /** true: the answer was recorded by an earlier run with the same idempotency key; no model was called */
  replayed: boolean;
}

/** A `ctx.llm` call that threw (no model at that tier, budget spent, provider error, ...). */
export interface FailedModelCall {
  tier: 'small' | 'large';
  messages: unknown[];
  key: string;
  error: { code: string | undefined; message: string };
}

/** One captured log line of the task (pino's JSON, with `level` as its label). */
export interface CapturedLog {
  level: string;
  msg?: string;
  [field: string]: unknown;
}

export interface CapabilityRunResult<O> {
  output: O;
  envelope: Envelope<unknown>;
  effects: RecordedEffect[];
  enqueued: RecordedEnqueue[];
  modelCalls: RecordedModelCall[];
  failedModelCalls: FailedModelCall[];
  /** the events this task appended (the store's change log, caused by this envelope), in order */
  events: CommittedEvent[];
  logs: CapturedLog[];
  /** how many times the handler called `ctx.working()` */
  workingCalls: number;
}

export interface CapabilityTestKit {
  /** the whole store (unscoped): seed it, inspect it, read `store.costs()` */
  store: StateStore;
  config: KeelConfig;
  /** the agent tasks run as, unless a run names another */
  agent: string;
  /**
   * Runs the capability's handler once on `input` (validated by its input schema like a bus
   * message: an InvalidMessageError `schema_mismatch` rejects, the runtime dead-letters it).
   * Rejects with whatever the handler throws, AGENT_BAD_OUTPUT when its output fails its schema.
   */
  run<I, O>(capability: Capability<I, O>, input: unknown, opts?: CapabilityRunOptions): Promise<CapabilityRunResult<O>>;
  /** closes the store the kit opened and removes its temp dir */
  close(): Promise<void>;
}


/** What a bus message body goes through: JSON (undefined → malformed). */
function overTheWire(input: unknown): unknown {
  let text: string | undefined;
  try {
    text = JSON.stringify(input);
  } catch (err) {
    throw new InvalidMessageError('malformed_json', (err as Error).message);
  }
  if (text === undefined) throw new InvalidMessageError('malformed_json', 'the input is not JSON (undefined)');
  return JSON.parse(text);
}

/** Every event after `since` caused by the envelope `causationId`. */
async function eventsCausedBy(store: StateStore, since: number, causationId: string): Promise<CommittedEvent[]> {
  const out: CommittedEvent[] = [];
  let cursor = since;
  for (;;) {
    const page = await store.changes({ since: cursor, limit: 10_000 });
    out.push(...page.events.filter((e) => e.meta.causationId === causationId));
    if (!page.hasMore || page.cursor === cursor) return out;
    cursor = page.cursor;
  }
}

export async function createCapabilityTestKit(opts: CapabilityTestKitOptions): Promise<CapabilityTestKit> {
  const kitAgent = opts.agent ?? 'test-agent';
  const dir = mkdtempSync(join(tmpdir(), 'keel-capkit-'));
  const removeDir = () => rmSync(dir, { recursive: true, force: true });
  let store: StateStore;
  try {
    // the store knows the declared entity types plus the runtime's own, as runAgent opens it
    const types = agentEntityTypes({ name: kitAgent, version: '0', capabilities: [], entities: [...opts.entities] });
    store = opts.state ?? (await openStore(`sqlite:${join(dir, 'keel.db')}`, { types, sqlite: { synchronous: 'NORMAL' } }));
  } catch (err) {
    removeDir();
    throw err;
  }
  const config: KeelConfig = { ...loadConfig({}), dataDir: dir, ...opts.config };
  const models = opts.models;
  const breakers = new Map<string, CircuitBreaker>();
  for (const [name, o] of Object.entries(opts.connectors ?? {})) breakers.set(name, new CircuitBreaker(name, o));
  const tracer = trace.getTracer('keel.testkit');
  let closed = false;
  // the intent cache and batchers the kit's model calls share, as in an agent process
  let services: ModelServices | undefined;
  const modelSvc = () => (services ??= modelServices(store, config));

  const run = async <I, O>(cap: Capability<I, O>, rawInput: unknown, o: CapabilityRunOptions = {}): Promise<CapabilityRunResult<O>> => {
    if (closed) throw new AgentError('AGENT_UNKNOWN', 'the capability test kit is closed');
    const agent = o.agent ?? kitAgent;
    const body = cap.input.safeParse(overTheWire(rawInput));
    if (!body.success) {
      throw new InvalidMessageError('schema_mismatch', body.error.issues.map((i) => `${i.path.length ? i.path.join('.') : '(body)'}: ${i.message}`));
    }
    const given = o.envelope ?? {};
    const id = given.id ?? randomUUID();
    const env: Envelope<I> = {
      type: taskType(cap.name),
      subject: subjects(config.subjectPrefix).task(cap.name),
      correlationId: undefined,
      causationId: undefined,
      publishedAt: Date.now(),
      traceparent: undefined,
      tracestate: undefined,
      deliveryCount: 1,
      streamSeq: undefined,
      headers: {},
      ...given,
      id,
      data: body.data,
      idempotencyKey: o.idempotencyKey ?? given.idempotencyKey ?? id,
      customer: o.customer ?? given.customer,
      budgetUsd: o.budgetUsd ?? given.budgetUsd,
    };

    const effects: RecordedEffect[] = [];
    const enqueued: RecordedEnqueue[] = [];
    const modelCalls: RecordedModelCall[] = [];
    const failedModelCalls: FailedModelCall[] = [];
    const lines: Record<string, unknown>[] = [];
    let workingCalls = 0;

    const sink = new Writable({
      write(chunk: Buffer | string, _enc, cb) {
        for (const line of String(chunk).split('\n')) if (line.trim()) lines.push(JSON.parse(line) as Record<string, unknown>);
        cb();
      },
    });
    const baseLog = createLogger(agent, { level: opts.logLevel ?? 'debug', destination: sink });
    const labels = baseLog.levels.labels;
    const logger = baseLog.child({ agent, capability: cap.name, task: env.id, correlation: env.correlationId });

    const span = tracer.startSpan(`process ${env.subject}`, { attributes: { 'keel.agent': agent, 'keel.capability': cap.name, ...(env.customer ? { 'keel.customer': env.customer } : {}) } });
    const sc = span.spanContext();
    const traceId = isSpanContextValid(sc) ? sc.traceId : undefined;
    const timeoutMs = o.timeoutMs ?? cap.timeoutMs ?? 60_000;
    const leaseMs = timeoutMs + LEASE_MARGIN_MS;
    const ac = new AbortController();
    const keyOf = (name: string) => effectKey(cap.name, env.idempotencyKey, name);

    const secrets = grantedSecrets(cap as Capability, opts.secrets);
    const allowedEnqueue = new Set(cap.permissions?.enqueue ?? []);
    // the run's workflow and own budget, read on the first model call (budgets are admitted per call)
    let runBudget: Promise<RunBudget> | undefined;
    let modelN = 0;

    const ctx: TaskContext<I> = {
      input: env.data,
      envelope: env,
      agent,
      capability: cap.name,
      config,
      state: scopeState(store, agent, cap.permissions?.entityTypes ?? [], { causationId: env.id, correlationId: env.correlationId, traceId }),
      enqueue: async (capability, input, meta = {}) => {
        if (!allowedEnqueue.has(capability)) throw new PermissionDeniedError(agent, `tasks of capability '${capability}'`);
        subjects(config.subjectPrefix).task(capability); // a name the bus would refuse fails here too
        const mid = meta.id ?? randomUUID();
        enqueued.push({
          capability,
          input: overTheWire(input),
          id: mid,
          idempotencyKey: meta.idempotencyKey ?? mid,
          correlationId: env.correlationId,
          causationId: env.id,
          customer: env.customer,
          budgetUsd: env.budgetUsd,
        });
        return { id: mid };
      },
      effect: async <T>(name: string, fn: (key: string) => Promise<T>): Promise<T> => {
        const key = keyOf(name);
        const r = await recordOnce(store, key, leaseMs, fn);
        effects.push({ name, key, result: r.result, replayed: r.replayed });
        return r.result;
      },
      connector: async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
        let b = breakers.get(name);
        if (!b) breakers.set(name, (b = new CircuitBreaker(name)));
        return b.call(fn);
      },
      secrets,
      budgetUsd: env.budgetUsd,
      logger,
      span,
      signal: ac.signal,
      working: () => {
        workingCalls++;
      },
      models,
      llm: async (tier, messages, callOpts) => {
        checkToolsOffered(cap as Capability, agent, callOpts?.tools);
        const n = ++modelN;
        const key = keyOf(callOpts?.key ? `model-${callOpts.key}` : `model-${n}`);
        try {
          // recorded like a side effect, under the runtime's key: a rerun reads the answer back
          const r = await recordOnce(store, key, leaseMs, async () => {
            const m = await callModel({
              models, tier, messages, capability: cap.name, store, signal: ac.signal,
              attribution: { agent, runId: env.correlationId, customerId: env.customer },
              run: await (runBudget ??= runBudgetOf(store, env)), policy: config.budgetOnRefusal, taskId: env.id, call: callOpts, services: modelSvc(),
            });
            return enforceToolAllowlist(m, allowedTools(cap as Capability), { agent, capability: cap.name, logger, span, counter: undefined, store, runId: env.correlationId, taskId: env.id, model: m.model });
          });
          modelCalls.push({ tier, messages, ...r.result, key, replayed: r.replayed });
          return r.result;
        } catch (err) {
          const e = err as { code?: unknown; message?: unknown };
          failedModelCalls.push({ tier, messages, key, error: { code: typeof e.code === 'string' ? e.code : undefined, message: String(e.message ?? err) } });
          throw err;
        }
      },
      hasModel: (tier) => !!models?.has(tier),
      memory: memoryForCapability(cap as Capability, agent, {
        get: async () => opts.memory ?? Promise.reject(new AgentError('AGENT_UNKNOWN', 'no long-term memory in this test kit: pass createCapabilityTestKit({ memory })')),
      }),
    };

    const since = await store.headCursor();
    const timer = setTimeout(() => ac.abort(new BusError('BUS_HANDLER_TIMEOUT', `timed out after ${timeoutMs} ms`, { retryable: true })), timeoutMs);
    timer.unref();
    let output: O;
    try {
      const handled = context.with(trace.setSpan(context.active(), span), () => cap.handler(ctx));
      // a handler that ignores its signal still fails on timeout, as under the runtime
      const raw = await Promise.race([handled, new Promise<never>((_, rej) => ac.signal.addEventListener('abort', () => rej(ac.signal.reason as Error), { once: true }))]);
      output = checkOutput(cap as Capability<unknown, O>, raw);
    } finally {
      clearTimeout(timer);
      span.end();
    }
    const events = await eventsCausedBy(store, since, env.id);
    const logs = lines.map((l): CapturedLog => ({ ...l, level: typeof l.level === 'number' ? (labels[l.level] ?? String(l.level)) : String(l.level) }));
    return { output, envelope: env as Envelope<unknown>, effects, enqueued, modelCalls, failedModelCalls, events, logs, workingCalls };
  };

  return {
    store,
    config,
    agent: kitAgent,
    run,
    close: async () => {
      if (closed) return;
      closed = true;
      await services?.close();
      try {
        if (!opts.state) await store.close();
      } finally {
        removeDir();
      }
    },
  };
}
