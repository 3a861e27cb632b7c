/**
 * The embedded engine: what `keel start` (and `npm start`) runs on one machine.
 *
 * ```ts
 * import { startEngine } from './engine/index.ts';
 * const engine = await startEngine(loadConfig());
 * // ... GET http://127.0.0.1:8080/healthz
 * await engine.stop();
 * ```
 *
 * It starts and supervises a local nats-server with JetStream (unless `KEEL_NATS_URL` names
 * one), opens the system of record, and serves the HTTP API.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { findTool, inheritedEnv, provision, KEEL_VERSION, type KeelConfig } from '../config/index.ts';
import { LocalNatsCluster, LocalNatsServer, LocalServerError, connectBus, createBus, natsEventPublisher, type Bus, type NatsConnection } from '../bus/index.ts';
import { openStore, startOutboxRelay, type StateStore, type OutboxRelay } from '../shared-state/index.ts';
import { loadFeatures, entityTypesOf, workflowsOf, resolveAgent, enabledAgents } from '../agents/index.ts';
import { credentialsFromEnv, loadOrCreateCredentials, natsUsers, type AgentDefinition, type Ingress } from '../runtime/index.ts';
import { AgentSupervisor, agentProcessSpecs, groupAgentProcesses, parseAgentList } from './supervisor.ts';
import { agentSandboxNeeds } from './sandbox.ts';
import { WorkflowEngine, startTriggers, workflowCapabilities, localTaskSchemas, registryTaskSchemas } from '../workflows/index.ts';
import { createLogger, createMetrics } from '../observability/index.ts';
import { startHttpApi, type HealthReport, type HttpApi } from './http.ts';
import { mountApi } from './api.ts';
import { OperatorAuth, mountAuth } from './auth.ts';
import { EngineError } from './errors.ts';
import { engineFootprints } from './footprint.ts';
import { createDiskGuard } from '../channels/index.ts';
import { startStorageWatch } from './storage-watch.ts';
import { metricsTargets, registerEngineGauges } from './dashboard-metrics.ts';

export type { HealthReport, HttpApi } from './http.ts';
export { EngineError } from './errors.ts';
export { OperatorAuth, OperatorAuthError, mountAuth, operatorOf, createOperatorToken, listOperatorTokens, revokeOperatorToken, bootstrapOperatorToken, operatorsFile, OPEN_ROUTES, SESSION_COOKIE } from './auth.ts';
export type { OperatorIdentity, OperatorTokenView, OperatorAuthErrorCode } from './auth.ts';
export type { EngineErrorCode } from './errors.ts';

export interface Engine {
  config: KeelConfig;
  natsUrl: string;
  nats: NatsConnection;
  bus: Bus;
  store: StateStore;
  supervisor: AgentSupervisor;
  /** the embedded nats-server (with KEEL_NATS_CLUSTER: node 0 of {@link localCluster}) */
  localServer: LocalNatsServer | undefined;
  /** KEEL_NATS_CLUSTER: the local cluster's nodes */
  localCluster: LocalNatsCluster | undefined;
  http: HttpApi;
  logger: Logger;
  stop(): Promise<void>;
}



async function natsServerBinary(cfg: KeelConfig, log: Logger): Promise<string> {
  if (cfg.natsServerBin) return cfg.natsServerBin;
  const found = findTool('nats-server');
  if (found) return found;
  if (!cfg.autoProvision) {
    throw new LocalServerError('BUS_SERVER_NOT_FOUND', 'no nats-server binary found: run `npm run provision` (builds the pinned release with Go), set KEEL_NATS_SERVER_BIN, or set KEEL_NATS_URL to use a running server');
  }
  log.info('no nats-server binary yet: building the pinned release once with deploy/provision.sh (about a minute)');
  await provision(['nats-server']);
  const built = findTool('nats-server');
  if (!built) throw new LocalServerError('BUS_SERVER_NOT_FOUND', 'deploy/provision.sh finished but no nats-server binary was found');
  return built;
}

/** Fetches the local embedding model when KEEL_EMBEDDINGS names it and it is missing (KEEL_AUTO_PROVISION). */
async function ensureEmbeddingModel(cfg: KeelConfig, log: Logger): Promise<void> {
  if (cfg.embeddings !== 'local:all-minilm-l6-v2') return;
  const { localMiniLMPresent } = await import('../memory/index.ts');
  if (await localMiniLMPresent(cfg.modelsDir)) return;
  if (!cfg.autoProvision) {
    log.warn({ modelsDir: cfg.modelsDir }, 'the local embedding model is missing and KEEL_AUTO_PROVISION=0: memory and the intent cache are unavailable until `npm run provision`');
    return;
  }
  log.info({ modelsDir: cfg.modelsDir }, 'no local embedding model yet: fetching all-minilm-l6-v2 once with deploy/provision.sh (about 85 MB)');
  try {
    await provision(['all-minilm-l6-v2'], { ...process.env, KEEL_MODELS_DIR: cfg.modelsDir });
  } catch (err) {
    log.warn({ err }, 'could not fetch the local embedding model: memory and the intent cache are unavailable until `npm run provision` succeeds');
  }
}

/** A cheap round trip to the system of record, bounded in time. */
async function probeStore(store: StateStore): Promise<Record<string, unknown> & { status: 'up' | 'down' }> {
  const t0 = performance.now();
  try {
    await Promise.race([store.headCursor(), new Promise((_, rej) => setTimeout(() => rej(new EngineError('ENGINE_PROBE_TIMEOUT', 'no answer within 2 s', { retryable: true })), 2_000).unref())]);
    return { status: 'up', ...store.info, latency_ms: Math.round((performance.now() - t0) * 1000) / 1000 };
  } catch (err) {
    return { status: 'down', ...store.info, error: (err as Error).message };
  }
}

/** Only the secrets an agent declared, from KEEL_SECRET_<NAME>. */
function secretsFor(def: AgentDefinition, secrets: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const c of def.capabilities)
    for (const s of c.permissions?.secrets ?? []) {
      const v = secrets[s];
      if (v !== undefined) out[`KEEL_SECRET_${s}`] = v;
    }
  return out;
}

export async function startEngine(cfg: KeelConfig, opts: { logger?: Logger; agents?: string[] } = {}): Promise<Engine> {
  const log = opts.logger ?? createLogger('keel', { level: cfg.logLevel, format: cfg.logFormat });
  const started = Date.now();
  mkdirSync(cfg.dataDir, { recursive: true });
  const cleanups: Array<() => Promise<void>> = [];
  const cleanup = async () => {
    for (const fn of cleanups.reverse()) await fn().catch((err: unknown) => log.error({ err }, 'shutdown step failed'));
    cleanups.length = 0;
  };

  try {
    // 0. the features: their entity types, workflows, agents (whose manifests shape the bus's
    // permissions) and ingress
    const features = await loadFeatures(cfg.featureModules);
    const wanted = parseAgentList(opts.agents ?? enabledAgents(features, cfg.agents));
    const agentDefs: Array<{ def: AgentDefinition; spec: string; replicas: number; entry: string }> = [];
    for (const w of wanted) {
      const { def, module } = await resolveAgent(w.spec, features);
      agentDefs.push({ def, spec: module, replicas: w.replicas, entry: w.spec });
    }
    // one process per agent, or hosts of several (KEEL_AGENT_HOSTS), checked before anything starts
    const processGroups = groupAgentProcesses(agentDefs.map((a) => ({ name: a.def.name, entry: a.entry, spec: a.spec, replicas: a.replicas })), cfg.agentHosts);

    const catalog = await workflowsOf(features, cfg.workflowModules);

    // 1. the bus: a local nats-server, or KEEL_NATS_CLUSTER nodes clustered on loopback, with one
    // user per agent (least privilege); or KEEL_NATS_URL (one URL or a cluster's, comma-separated)
    let localServer: LocalNatsServer | undefined;
    let localCluster: LocalNatsCluster | undefined;
    let natsUrl = cfg.natsUrl;
    const creds = natsUrl ? undefined : loadOrCreateCredentials(join(cfg.dataDir, 'credentials.json'), agentDefs.map((a) => a.def.name));
    if (!natsUrl) {
      const bin = await natsServerBinary(cfg, log);
      const users = natsUsers(creds!, agentDefs.map((a) => a.def), cfg.subjectPrefix, workflowCapabilities(catalog));
      if (cfg.natsCluster > 1) {
        // node i: client port KEEL_NATS_PORT + i, store <data>/nats/n<i>; each restarted by its own supervisor
        localCluster = new LocalNatsCluster({ bin, size: cfg.natsCluster, port: cfg.natsPort, storeDir: join(cfg.dataDir, 'nats'), logger: log, users, syncInterval: cfg.natsSync });
        await localCluster.start();
        cleanups.push(() => localCluster!.stop());
        localServer = localCluster.nodes[0];
        natsUrl = localCluster.url;
      } else {
        localServer = new LocalNatsServer({ bin, port: cfg.natsPort, storeDir: join(cfg.dataDir, 'nats'), serverName: 'keel-embedded', logger: log, users, syncInterval: cfg.natsSync });
        await localServer.start();
        cleanups.push(() => localServer!.stop());
        natsUrl = localServer.url;
      }
    }
    const nats = await connectBus({ servers: natsUrl, name: 'keel-engine', logger: log, user: creds?.admin.user ?? cfg.natsUser, pass: creds?.admin.password ?? cfg.natsPassword });
    cleanups.push(() => nats.drain().catch(() => nats.close()));
    const bus = createBus(nats, { prefix: cfg.subjectPrefix, logger: log, replicas: cfg.natsReplicas, maxBytes: cfg.natsMaxBytes });
    const provisioned = await bus.provision();
    log.info({ changed: provisioned.filter((r) => r.action !== 'unchanged'), replicas: cfg.natsReplicas, nodes: localCluster?.nodes.length ?? (localServer ? 1 : undefined) }, 'bus streams and buckets provisioned');

    // the embedded embedding model (memory, the intent cache, the learned triage tier): fetched
    // once, like nats-server; without it those parts say so and the rest runs on
    await ensureEmbeddingModel(cfg, log);

    // 2. the system of record, and the outbox relay that puts its events on the bus
    const store: StateStore = await openStore(cfg.state, { types: entityTypesOf(features), sqlite: { synchronous: cfg.sqliteSync } });
    cleanups.push(() => store.close());
    log.info({ state: store.info }, 'state store open');
    const relay: OutboxRelay = startOutboxRelay(store, natsEventPublisher(nats), { prefix: cfg.subjectPrefix, onError: (err) => log.warn({ err }, 'outbox relay: will retry') });
    cleanups.push(() => relay.stop());
    cleanups.push((await import('./retention.ts')).startEngineRetention(store, cfg, log)); // KEEL_RUN_RETENTION: docs/operations.md

    // the data dir's free space (KEEL_MIN_FREE_MB): reported on /healthz, new runs are refused below
    // it, and a nats-server whose JetStream store failed on a full disk is restarted once space is back
    const disk = createDiskGuard({ dir: cfg.dataDir, minFreeBytes: cfg.minFreeBytes });
    const storageWatch = startStorageWatch({ disk, servers: () => localCluster?.nodes ?? (localServer ? [localServer] : []), logger: log });
    cleanups.push(async () => storageWatch.stop());

    let supervisorList: () => ReturnType<AgentSupervisor['list']> = () => [];
    // 3. the HTTP API
    const health = async (): Promise<HealthReport> => {
      let bus: HealthReport['bus'];
      try {
        const rtt = await nats.rtt();
        const info = nats.info;
        bus = { status: 'up', url: natsUrl, server_version: info?.version, jetstream: info?.jetstream ?? false, rtt_ms: rtt, local: !!localServer };
      } catch (err) {
        bus = { status: 'down', url: natsUrl, error: (err as Error).message, local: !!localServer };
      }
      // a JetStream storage failure (full disk) waiting for the restart that clears it
      const fault = storageWatch.pending();
      if (fault) bus = { ...bus, jetstream_store_fault: fault };
      const [st, d] = await Promise.all([probeStore(store), disk.status()]);
      return {
        status: bus.status === 'up' && !fault && st.status === 'up' && d.status !== 'low' ? 'ok' : 'degraded',
        version: KEEL_VERSION,
        uptime_s: Math.round((Date.now() - started) / 1000),
        bus,
        state: { ...st },
        disk: { status: d.status, path: d.path, free_bytes: d.freeBytes, total_bytes: d.totalBytes, min_free_bytes: d.minFreeBytes, ...(d.error ? { error: d.error } : {}) },
      };
    };
    // 3b. workflows can be started here (HTTP, channels); agents advance them
    // run inputs and edited approval texts are checked against the capabilities' input schemas:
    // those of the agents this engine runs, else what live agents announce in the registry
    const taskSchemas = localTaskSchemas(agentDefs.flatMap((a) => a.def.capabilities), registryTaskSchemas(bus));
    const workflows = new WorkflowEngine({ store, bus, actor: { kind: 'system', id: 'engine' }, logger: log, catalog, policies: cfg.policies, taskSchemas });
    await (await import('./policy-audit.ts')).auditPolicies(store, cfg.policies, log); // policy.changed when KEEL_POLICY_* differ from the last recorded
    const triggers = await startTriggers({ bus, workflows, catalog, log });
    cleanups.push(() => triggers.stop());
    // each feature's ingress (channels that feed the bus), hosted here
    const ingresses: Ingress[] = [];
    for (const f of features) {
      if (!f.ingress) continue;
      const mod = await f.ingress();
      const ingress = await mod.startIngress({ config: cfg, bus, store, workflows, logger: log.child({ feature: f.name }) });
      ingresses.push(ingress);
      cleanups.push(() => ingress.close());
    }
    // the engine's own metrics on GET /metrics (each agent serves its own, see KEEL_METRICS_PORT)
    // with the footprint (RSS, CPU) of every Keel process: this one, each agent process, nats-server
    const metrics = await createMetrics({
      serviceName: 'keel-engine',
      processes: engineFootprints({ nats, registryBucket: bus.subjects.registryBucket, natsServerPid: () => localServer?.pid }),
    });
    cleanups.push(() => metrics.shutdown());
    // budgets left, DLQ depth, JetStream streams (engine/dashboard-metrics.ts)
    registerEngineGauges(metrics.meter, { store, bus, nats, logger: log, capabilities: () => agentDefs.flatMap((a) => a.def.capabilities.map((c) => c.name)) });
    const statNames = new Set(ingresses.flatMap((i) => Object.keys(i.stats?.() ?? {})));
    for (const name of statNames) {
      metrics.meter.createObservableCounter(name, { description: 'ingress messages by outcome' }).addCallback((r) => {
        for (const i of ingresses) for (const [outcome, n] of Object.entries(i.stats?.()[name] ?? {})) r.observe(n, { outcome });
      });
    }
    const http = await startHttpApi({
      host: cfg.httpHost,
      port: cfg.httpPort,
      health,
      mount: (app) => {
        // first: every /v1 route mounted after it (ingress, API) needs an operator, but the customer chat routes
        mountAuth(app, new OperatorAuth({ dataDir: cfg.dataDir, envToken: cfg.operatorToken ? { token: cfg.operatorToken, operator: cfg.operator } : undefined, logger: log }));
        app.get('/metrics', async (c) => c.text(await metrics.text(), 200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' }));
        // Prometheus http_sd_configs: the /metrics of every agent process this engine supervises (KEEL_AGENT_METRICS)
        app.get('/metrics/targets', async (c) => c.json(await metricsTargets({ nats, registryBucket: bus.subjects.registryBucket, pids: () => supervisorList().map((p) => p.pid) }).catch(() => [])));
        for (const i of ingresses) i.mount?.(app);
        // the web console (docs/console.md); the supervisor starts below, so its list is read late
        mountApi(app, { store, workflows, disk, console: { bus, nats, config: cfg, processes: () => supervisorList() } });
      },
    });
    for (const i of ingresses) i.attach?.(http.server);
    cleanups.push(() => http.close());
    // 4. the agents, each its own OS process (or several per process: KEEL_AGENT_HOSTS)
    const supervisor = new AgentSupervisor(log, inheritedEnv());
    supervisorList = () => supervisor.list();
    const defOf = (name: string) => agentDefs.find((a) => a.def.name === name)!.def;
    supervisor.start(
      agentProcessSpecs(processGroups, {
        // KEEL_NATS_CLUSTER is this process's to run: an agent given KEEL_NATS_URL must not see it
        // KEEL_AGENT_METRICS: each process serves /metrics on a free port and announces it (GET /metrics/targets lists them)
        common: { KEEL_NATS_URL: natsUrl!, KEEL_NATS_CLUSTER: '', KEEL_STATE: cfg.state, KEEL_SUBJECT_PREFIX: cfg.subjectPrefix, KEEL_DATA_DIR: cfg.dataDir, ...(cfg.agentMetrics ? { KEEL_METRICS_PORT: '0' } : {}) },
        // embedded: the generated users; with KEEL_NATS_URL: KEEL_NATS_USER_<AGENT> / _PASSWORD_<AGENT> (`keel deploy nats-config`)
        credentials: (name) => creds?.agents[name] ?? credentialsFromEnv(name),
        secrets: (name) => secretsFor(defOf(name), cfg.secrets),
        sandbox: (name) => agentSandboxNeeds(defOf(name), cfg.memory),
      }),
    );
    // restarts per agent: a host's restarts count for each agent it runs
    metrics.meter.createObservableGauge('keel_agent_process_restarts', { description: 'how often the supervisor restarted the process of an agent (a host process counts for each of its agents)' }).addCallback((r) => {
      for (const p of supervisor.list()) for (const agent of p.agents) r.observe(p.restarts, { agent, process: p.id });
    });
    cleanups.push(() => supervisor.stop());

    log.info({ url: `http://${cfg.httpHost}:${http.port}`, nats: natsUrl, dataDir: cfg.dataDir }, 'keel engine ready');

    return { config: cfg, natsUrl, nats, bus, store, supervisor, localServer, localCluster, http, logger: log, stop: cleanup };
  } catch (err) {
    await cleanup();
    throw err;
  }
}
