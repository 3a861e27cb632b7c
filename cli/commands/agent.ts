import { fstatSync } from 'node:fs';
import module from 'node:module';
import { join } from 'node:path';
import type { Command } from 'commander';
import { loadConfig, type KeelConfig } from '../../config/index.ts';
import { loadFeatures, resolveAgent } from '../../agents/index.ts';
import { hostAgents, readCredentials, type AgentDefinition, type HostedAgentSpec } from '../../runtime/index.ts';
import { createLogger, createMetrics, initTelemetry, type Metrics } from '../../observability/index.ts';
import type { ModelRegistry } from '../../models/index.ts';

/** Only the secrets an agent's capabilities declare (KEEL_SECRET_<NAME>). */
function declaredSecrets(def: AgentDefinition, secrets: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const c of def.capabilities) for (const s of c.permissions?.secrets ?? []) if (secrets[s] !== undefined) out[s] = secrets[s];
  return out;
}

/** An agent's own bus user: from the supervisor (one or, when co-hosted, several), else the engine's credentials file. */
function credentialsOf(cfg: KeelConfig, name: string, alone: boolean): { user?: string; password?: string } {
  const hosted = cfg.agentNatsCredentials[name];
  if (hosted) return hosted;
  if (alone && cfg.agentNatsUser) return { user: cfg.agentNatsUser, password: cfg.agentNatsPassword };
  if (!cfg.natsUrl) {
    const creds = readCredentials(join(cfg.dataDir, 'credentials.json'))?.agents[name];
    if (creds) return creds;
  }
  return {};
}

/** The model tiers, loaded (with LangChain) only when one is configured: tier 0 needs none. */
async function modelsFor(cfg: KeelConfig): Promise<ModelRegistry | undefined> {
  if (!Object.keys(cfg.modelEnv).some((k) => /^KEEL_MODEL_(SMALL|LARGE)$/.test(k) && cfg.modelEnv[k]!.trim())) return undefined;
  const { createModelRegistry } = await import('../../models/index.ts');
  return createModelRegistry(cfg.modelEnv);
}

export function registerAgent(program: Command): void {
  const agent = program.command('agent').description('Run or inspect one agent (see also `keel agents`).');
  agent
    .command('start')
    .argument('<agents>', 'a name from a feature (agents/index.ts) or a module path that default-exports defineAgent(...); several, comma-separated, run together in this one process (co-hosting)')
    .description(
      'Run one instance of an agent as this process, or of several agents (`keel agent start intake,triage,sender`: co-hosted, each with its own bus user, secrets, heartbeat and restarts; a crash of the process stops them all). Uses KEEL_NATS_URL (or the local engine\'s bus on KEEL_NATS_PORT), KEEL_STATE, and each agent\'s own bus credentials (KEEL_AGENT_NATS_USER / KEEL_AGENT_NATS_PASSWORD, or KEEL_AGENT_NATS_CREDENTIALS for several, else the engine\'s credentials file). SIGTERM drains it.',
    )
    .option('--instance <id>', 'instance id (default: pid-random)')
    .option('--host <name>', 'name of this host process (KEEL_AGENT_HOSTS group), shown in `keel agents`')
    .option('--metrics-port <port>', 'serve /metrics on this port (0 = any free port); default $KEEL_METRICS_PORT, else none')
    .action(async (specs: string, opts: { instance?: string; host?: string; metricsPort?: string }) => {
      const cfg = loadConfig();
      const features = await loadFeatures(cfg.featureModules);
      const defs: AgentDefinition[] = [];
      for (const spec of specs.split(',').map((s) => s.trim()).filter(Boolean)) defs.push((await resolveAgent(spec, features)).def);
      const alone = defs.length === 1;
      const processName = opts.host ?? defs.map((d) => d.name).join('+');
      const telemetry = initTelemetry({ serviceName: alone ? defs[0]!.name : `keel-host-${processName}`, env: cfg.telemetryEnv });
      const log = createLogger(processName, { level: cfg.logLevel });
      const metricsPort = opts.metricsPort !== undefined ? Number(opts.metricsPort) : cfg.metricsPort;
      // one /metrics per process: co-hosted agents share it (their series carry the agent label)
      const metrics: Metrics | undefined = metricsPort !== undefined ? await createMetrics({ serviceName: processName, port: metricsPort, host: cfg.metricsHost }) : undefined;
      const models = await modelsFor(cfg);
      const hosted: HostedAgentSpec[] = defs.map((def) => {
        const { user, password } = credentialsOf(cfg, def.name, alone);
        return {
          def,
          options: {
            natsUrl: cfg.natsUrl ?? `nats://127.0.0.1:${cfg.natsPort}`,
            natsUser: user,
            natsPassword: password,
            state: cfg.state,
            prefix: cfg.subjectPrefix,
            instanceId: opts.instance,
            logger: alone ? log : log.child({ agent: def.name }),
            metrics,
            secrets: declaredSecrets(def, cfg.secrets),
            config: cfg,
            models,
          },
        };
      });
      const host = await hostAgents(hosted, { logger: log, ...(opts.host ? { name: opts.host } : {}) }).catch(async (err: unknown) => {
        // a lone agent that cannot start: leave (the supervisor restarts the process), even if a
        // half-made connection would keep the event loop alive
        await metrics?.shutdown();
        await telemetry.shutdown().catch(() => undefined);
        setTimeout(() => process.exit(1), 2_000).unref();
        throw err;
      });
      // persist the compiled code now (Node writes its compile cache at exit otherwise, and a
      // killed process never exits cleanly): the next start skips compiling and TypeScript stripping
      module.flushCompileCache?.();
      let stopping = false;
      const stop = (sig: string) => {
        if (stopping) process.exit(130);
        stopping = true;
        log.info({ signal: sig }, 'draining');
        void host
          .stop(cfg.drainMs)
          .then(() => metrics?.shutdown())
          .then(() => telemetry.shutdown())
          .then(() => process.exit(0), () => process.exit(1));
      };
      // supervised by `keel start`: if the supervisor dies (even by SIGKILL), drain and leave too.
      // It holds the write end of our stdin: its death closes the pipe (no polling needed).
      const supervisor = cfg.supervisorPid ?? 0;
      if (supervisor > 0) {
        const stdin = fstatSync(0);
        if (process.ppid !== supervisor) stop('supervisor gone');
        else if (stdin.isFIFO() || stdin.isSocket()) process.stdin.on('end', () => stop('supervisor gone')).on('error', () => stop('supervisor gone')).resume();
        else setInterval(() => process.ppid !== supervisor && stop('supervisor gone'), 5_000).unref();
      }
      process.on('SIGTERM', () => stop('SIGTERM'));
      process.on('SIGINT', () => stop('SIGINT'));
      await new Promise<never>(() => undefined);
    });
}
