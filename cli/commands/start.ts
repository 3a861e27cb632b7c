import module from 'node:module';
import type { Command } from 'commander';
import { loadConfig } from '../../config/index.ts';
import { bootstrapOperatorToken, startEngine } from '../../engine/index.ts';

export function registerStart(program: Command): void {
  program
    .command('start')
    .description('Run the engine on this machine: a supervised nats-server with JetStream (unless KEEL_NATS_URL is set), the state store (KEEL_STATE) and its outbox relay, the HTTP API (GET /healthz, /metrics, /v1/...), the SMTP ingress (KEEL_SMTP_PORT), workflow triggers, and every enabled agent (KEEL_AGENTS) as its own process. Stops cleanly on Ctrl-C / SIGTERM.')
    .action(async () => {
      const cfg = loadConfig();
      const engine = await startEngine(cfg);
      // persist the compiled code now, not only at a clean exit: the next start (or a restart after a
      // crash) skips compiling and TypeScript stripping
      module.flushCompileCache?.();
      // one human line besides the JSON logs
      const agents = engine.supervisor.list().length;
      // on a terminal (readable logs) it stands out: bold green, marked
      const loud = process.stderr.isTTY === true && cfg.logFormat !== 'json';
      const summary = `Keel is running: http://${cfg.httpHost}:${engine.http.port}/healthz · SMTP ${cfg.smtpHost}:${cfg.smtpPort} · bus ${engine.natsUrl} · ${agents} agent process${agents === 1 ? '' : 'es'} · data ${cfg.dataDir}`;
      process.stderr.write(`\n${loud ? `\x1b[1;32m▶ ${summary}\x1b[0m` : summary}\nTry ./bin/keel.js --help in another terminal; Ctrl-C stops everything.\n\n`);
      // the first operator token, shown once here and never logged (logs must not carry secrets)
      let first: ReturnType<typeof bootstrapOperatorToken>;
      try {
        first = bootstrapOperatorToken(cfg.dataDir, { operator: cfg.operator, envToken: cfg.operatorToken });
      } catch (err) {
        engine.logger.error({ err: { code: (err as { code?: string }).code, message: (err as Error).message } }, 'could not read or create the first operator token: the HTTP API refuses every operator request until operators.json is fixed');
      }
      if (first) {
        process.stderr.write(
          `Operator token for the HTTP API (operator ${first.record.operator}, id ${first.record.id}), shown only this once:\n\n  ${first.token}\n\nSend it as \`Authorization: Bearer <token>\` (curl -H "Authorization: Bearer $KEEL_TOKEN" http://${cfg.httpHost}:${engine.http.port}/v1/approvals), or sign a browser in with POST /v1/session {"token": "..."}.\nManage tokens with keel operator token create | list | revoke (stored hashed in ${cfg.dataDir}/operators.json).\n\n`,
        );
      }
      let stopping = 0;
      // whatever happens, no child outlives the engine
      process.on('exit', () => {
        engine.supervisor.killAll();
        for (const n of engine.localCluster?.nodes ?? [engine.localServer]) n?.kill('SIGKILL');
      });
      const stop = (sig: NodeJS.Signals) => {
        if (stopping) {
          // npm and the terminal may both deliver one Ctrl-C: only a later one forces the exit
          if (Date.now() - stopping < 2_000) return;
          engine.logger.warn({ signal: sig }, 'second signal: forcing exit');
          process.exit(130);
        }
        stopping = Date.now();
        engine.logger.info({ signal: sig }, 'shutting down');
        engine
          .stop()
          .then(() => {
            engine.logger.info('stopped');
            process.exit(0);
          })
          .catch((err: unknown) => {
            engine.logger.error({ err }, 'shutdown failed');
            process.exit(1);
          });
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
      process.on('SIGHUP', stop);
      await new Promise<never>(() => undefined);
    });
}
