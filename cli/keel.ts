#!/usr/bin/env node
/**
 * The `keel` command. Every subcommand that prints data takes `--json`.
 */
import { Command, CommanderError } from 'commander';
import { registerStart } from './commands/start.ts';
import { registerAgents } from './commands/agents.ts';
import { registerAgent } from './commands/agent.ts';
import { registerState } from './commands/state.ts';
import { registerCost } from './commands/cost.ts';
import { registerRuns } from './commands/runs.ts';
import { registerApprovals } from './commands/approvals.ts';
import { registerReplay } from './commands/replay.ts';
import { registerTickets } from './commands/tickets.ts';
import { KEEL_VERSION, isKeelError, telemetryEnv } from '../config/index.ts';
import { initTelemetry } from '../observability/index.ts';

const program = new Command();
program
  .name('keel')
  .description('Keel: the engine of a one-person company (agents on NATS JetStream, event-sourced state, traces and cost).\nConfiguration comes from KEEL_* environment variables; see README.md.')
  .version(KEEL_VERSION)
  .showHelpAfterError('(run with --help for usage)')
  .exitOverride();

registerStart(program);
registerAgents(program);
registerAgent(program);
registerState(program);
registerCost(program);
registerRuns(program);
registerApprovals(program);
registerReplay(program);
registerTickets(program);

// every keel process traces: `keel start` as keel-engine, agents under their own names (set in
// `keel agent start`), other commands as keel-cli, so an operator's approval joins the run's trace
const sub = process.argv[2];
const telemetry = sub === 'agent' ? undefined : initTelemetry({ serviceName: sub === 'start' ? 'keel-engine' : 'keel-cli', env: telemetryEnv() });

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    process.exitCode = err.exitCode;
  } else {
    const e = err as Error & { code?: string };
    const json = process.argv.includes('--json');
    if (json) console.log(JSON.stringify({ error: e.code ?? e.name ?? 'error', message: e.message }));
    else if (isKeelError(err)) console.error(`error [${err.code}]: ${err.message}`);
    else console.error(`keel: ${e.message}`);
    process.exitCode = 1;
  }
}
await telemetry?.flush().catch(() => undefined);
