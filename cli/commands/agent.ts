import { join } from 'node:path';
import type { Command } from 'commander';
import { loadConfig } from '../../config/index.ts';
import { loadFeatures, resolveAgent } from '../../agents/index.ts';
import { runAgent, readCredentials } from '../../runtime/index.ts';
import { createLogger, initTelemetry } from '../../observability/index.ts';
import { createModelRegistry } from '../../models/index.ts';

export function registerAgent(program: Command): void {
  const agent = program.command('agent').description('Run or inspect one agent (see also `keel agents`).');
  agent
    .command('start')
    .argument('<agent>', 'a name from a feature (agents/index.ts), or a module path that default-exports defineAgent(...)')
    .description('Run one instance of an agent as this process. Uses KEEL_NATS_URL (or the local engine\'s bus on KEEL_NATS_PORT), KEEL_STATE, and the agent\'s own bus credentials (KEEL_AGENT_NATS_USER / KEEL_AGENT_NATS_PASSWORD, else the engine\'s credentials file). SIGTERM drains it.')
    .option('--instance <id>', 'instance id (default: pid-random)')
    .option('--metrics-port <port>', 'serve /metrics on this port (0 = any free port); default $KEEL_METRICS_PORT, else none')
    .action(async (spec: string, opts: { instance?: string; metricsPort?: string }) => {
      const cfg = loadConfig();
      const { def } = await resolveAgent(spec, await loadFeatures(cfg.featureModules));
      const telemetry = initTelemetry({ serviceName: def.name, env: cfg.telemetryEnv });
      const log = createLogger(def.name, { level: cfg.logLevel });
      let user = cfg.agentNatsUser;
      let password = cfg.agentNatsPassword;
      if (!user && !cfg.natsUrl) {
        const creds = readCredentials(join(cfg.dataDir, 'credentials.json'))?.agents[def.name];
        if (creds) ({ user, password } = creds);
      }
      const metricsPort = opts.metricsPort !== undefined ? Number(opts.metricsPort) : cfg.metricsPort;
      const running = await runAgent(def, {
        natsUrl: cfg.natsUrl ?? `nats://127.0.0.1:${cfg.natsPort}`,
        natsUser: user,
        natsPassword: password,
        state: cfg.state,
        prefix: cfg.subjectPrefix,
        instanceId: opts.instance,
        logger: log,
        metricsPort,
        secrets: cfg.secrets,
        config: cfg,
        models: createModelRegistry(cfg.modelEnv),
      });
      let stopping = false;
      const stop = (sig: string) => {
        if (stopping) process.exit(130);
        stopping = true;
        log.info({ signal: sig }, 'draining agent');
        void running
          .stop(cfg.drainMs)
          .then(() => telemetry.shutdown())
          .then(() => process.exit(0), () => process.exit(1));
      };
      // supervised by `keel start`: if the supervisor dies (even by SIGKILL), drain and leave too
      const supervisor = cfg.supervisorPid ?? 0;
      if (supervisor > 0) setInterval(() => process.ppid !== supervisor && stop('supervisor gone'), 1_000).unref();
      process.on('SIGTERM', () => stop('SIGTERM'));
      process.on('SIGINT', () => stop('SIGINT'));
      await new Promise<never>(() => undefined);
    });
}
