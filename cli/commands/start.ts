import type { Command } from 'commander';
import { loadConfig } from '../../config/index.ts';
import { startEngine } from '../../engine/index.ts';

export function registerStart(program: Command): void {
  program
    .command('start')
    .description('Run the engine on this machine: a supervised nats-server with JetStream (unless KEEL_NATS_URL is set), the state store (KEEL_STATE), and the HTTP API with GET /healthz. Stops cleanly on Ctrl-C / SIGTERM.')
    .action(async () => {
      const cfg = loadConfig();
      const engine = await startEngine(cfg);
      let stopping = false;
      const stop = (sig: NodeJS.Signals) => {
        if (stopping) {
          engine.logger.warn({ signal: sig }, 'second signal: forcing exit');
          engine.localServer?.kill('SIGKILL');
          process.exit(130);
        }
        stopping = true;
        engine.logger.info({ signal: sig }, 'shutting down');
        engine
          .stop()
          .then(() => {
            engine.logger.info('stopped');
            process.exit(0);
          })
          .catch((err: unknown) => {
            engine.logger.error({ err }, 'shutdown failed');
            engine.localServer?.kill('SIGKILL');
            process.exit(1);
          });
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
      process.on('SIGHUP', stop);
      await new Promise<never>(() => undefined);
    });
}
