#!/usr/bin/env node
/**
 * The `keel` command. Every subcommand that prints data takes `--json`.
 *
 * Start-up cost is what the command needs, no more: only the module of the command being run is
 * imported (`keel --version` imports none), the bus and the workflow engine load only for
 * commands that act on them, telemetry starts only for commands that trace, and compiled code
 * is cached on disk (Node's compile cache). `npm run bench -- cli` measures it.
 *
 * Errors, one contract: exit 1 with `error [CODE]: message` on stderr, or with `--json`
 * `{"error": "CODE", "message": "...", ...details}` on stdout, usage errors included.
 */
import module from 'node:module';
import { Command, CommanderError } from 'commander';
import { usageErrorCode } from './errors.ts';

// compiled modules are cached on disk (no-op when NODE_DISABLE_COMPILE_CACHE is set)
module.enableCompileCache?.();

type Register = (program: Command) => void;

/** The command modules, loaded on demand. */
const MODULES: Record<string, () => Promise<Register[]>> = {
  init: async () => [(await import('./commands/init.ts')).registerInit],
  start: async () => [(await import('./commands/start.ts')).registerStart],
  agents: async () => [(await import('./commands/agents.ts')).registerAgents],
  agent: async () => [(await import('./commands/agent.ts')).registerAgent],
  state: async () => [(await import('./commands/state.ts')).registerState],
  cost: async () => [(await import('./commands/cost.ts')).registerCost],
  budget: async () => [(await import('./commands/budget.ts')).registerBudget],
  runs: async () => [(await import('./commands/runs.ts')).registerRuns],
  approvals: async () => [(await import('./commands/approvals.ts')).registerApprovals],
  replay: async () => [(await import('./commands/replay.ts')).registerReplay],
  tickets: async () => [(await import('./commands/tickets.ts')).registerTickets],
  dlq: async () => [(await import('./commands/dlq.ts')).registerDlq],
  memory: async () => [(await import('./commands/memory.ts')).registerMemory],
  triage: async () => [(await import('./commands/triage.ts')).registerTriage],
  launch: async () => [(await import('./commands/launch.ts')).registerLaunch],
  deploy: async () => [(await import('./commands/deploy.ts')).registerDeploy],
  operator: async () => [(await import('./commands/operator.ts')).registerOperator],
  customer: async () => [(await import('./commands/customer.ts')).registerCustomer],
  backup: async () => [(await import('./commands/backup.ts')).registerBackup],
};

/** Top-level command → the module that registers it. */
const COMMAND_MODULE: Record<string, string> = {
  init: 'init',
  start: 'start',
  agents: 'agents',
  agent: 'agent',
  entity: 'state',
  changes: 'state',
  audit: 'state',
  cost: 'cost',
  budget: 'budget',
  budgets: 'budget',
  run: 'runs',
  runs: 'runs',
  approvals: 'approvals',
  approve: 'approvals',
  approval: 'approvals',
  reject: 'approvals',
  dlq: 'dlq',
  replay: 'replay',
  tickets: 'tickets',
  ticket: 'tickets',
  why: 'tickets',
  memory: 'memory',
  triage: 'triage',
  product: 'launch',
  products: 'launch',
  launch: 'launch',
  launches: 'launch',
  content: 'launch',
  calendar: 'launch',
  deploy: 'deploy',
  operator: 'operator',
  customer: 'customer',
  backup: 'backup',
  restore: 'backup',
};

/** Commands that start telemetry (their spans join the runs they touch); the rest do not trace. */
const TRACED: Record<string, string> = { start: 'keel-engine', approve: 'keel-cli', reject: 'keel-cli', run: 'keel-cli', launch: 'keel-cli' };

const argv = process.argv;
const json = argv.includes('--json');
const sub = argv.slice(2).find((a) => !a.startsWith('-'));
const versionOnly = sub === undefined && (argv.includes('--version') || argv.includes('-V'));

const program = new Command();
program
  .name('keel')
  .description('Keel: the engine of a one-person company (agents on NATS JetStream, event-sourced state, traces and cost).\nConfiguration comes from KEEL_* environment variables; see README.md.')
  .exitOverride()
  // the program's own -V/--version counts only before a subcommand, so a subcommand's option of
  // that name is its own (`keel content show ID --version 2`); the program has no other options
  .enablePositionalOptions()
  // usage errors are printed below, in the one error format (JSON on stdout with --json)
  .configureOutput({ outputError: () => undefined })
  .addHelpText('after', '\nErrors exit 1 with `error [CODE]: message` on stderr; with --json, `{"error": "CODE", "message": ...}` on stdout.');

/** `tickets ` or `ticket show `: the command the arguments name, for the usage hint. */
function helpPath(): string {
  const cmd = program.commands.find((c) => c.name() === sub);
  if (!cmd) return '';
  const next = argv.slice(argv.indexOf(sub!) + 1).find((a) => !a.startsWith('-'));
  const child = cmd.commands.find((c) => c.name() === next);
  return `${cmd.name()} ${child ? `${child.name()} ` : ''}`;
}

let telemetry: { flush(): Promise<void> } | undefined;
try {
  program.version((await import('../config/index.ts')).KEEL_VERSION);
  if (!versionOnly) {
    const mod = sub ? COMMAND_MODULE[sub] : undefined;
    // a known command loads its own module; `keel`, `keel help` or a typo load them all (for the help and "did you mean")
    for (const name of mod ? [mod] : Object.keys(MODULES)) for (const register of await MODULES[name]!()) register(program);
    const { addExamples } = await import('./help.ts');
    addExamples(program);
    const service = sub ? TRACED[sub] : undefined;
    if (service) {
      const [{ initTelemetry }, { telemetryEnv }] = await Promise.all([import('../observability/index.ts'), import('../config/index.ts')]);
      telemetry = initTelemetry({ serviceName: service, env: telemetryEnv() });
    }
  }
  await program.parseAsync(argv);
} catch (err) {
  if (err instanceof CommanderError) {
    const usage = !['commander.helpDisplayed', 'commander.help', 'commander.version'].includes(err.code);
    const message = err.message.replace(/^error:\s*/, '');
    if (usage && json) console.log(JSON.stringify({ error: usageErrorCode(err.code), message }));
    else if (usage) console.error(`error [${usageErrorCode(err.code)}]: ${message}\n(run keel ${helpPath()}--help for usage)`);
    process.exitCode = err.exitCode;
  } else {
    const { isKeelError } = await import('../config/index.ts');
    const e = err as Error & { code?: unknown; details?: Record<string, unknown>; issues?: unknown };
    const code = isKeelError(err) ? err.code : typeof e.code === 'string' && /^[A-Z][A-Z0-9_]*$/.test(e.code) ? e.code : 'INTERNAL';
    const message = e.message ?? String(err);
    if (json) console.log(JSON.stringify({ error: code, message, ...(e.issues ? { issues: e.issues } : {}), ...(e.details ?? {}) }));
    else console.error(`error [${code}]: ${message}`);
    process.exitCode = 1;
  }
}
await telemetry?.flush().catch(() => undefined);
