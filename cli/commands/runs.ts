import type { Command } from 'commander';
import { WorkflowError, resolveRunId, type RunState } from '../../workflows/index.ts';
import { CliError } from '../errors.ts';
import { openCli, print, table, parseJsonOption } from '../context.ts';
import { resolveCustomer } from '../../agents/index.ts';
import { enumOption, intArg, parseSince } from '../args.ts';

/** `keel runs --status` values: every run status (tsc fails here when a run gains one). */
const RUN_STATUSES = ['running', 'completed', 'failed', 'compensating', 'cancelled', 'superseded'] as const satisfies readonly RunState['status'][];
const everyRunStatus: Exclude<RunState['status'], (typeof RUN_STATUSES)[number]> extends never ? true : never = true;
void everyRunStatus;

function stepRows(st: RunState): string[][] {
  return Object.entries(st.steps).map(([id, s]) => [
    id,
    s.status === 'waiting' && s.waitUntil ? `waiting until ${s.waitUntil}` : s.status,
    String(s.attempt),
    s.agent ?? '',
    s.durationMs !== undefined ? `${s.durationMs} ms` : '',
    s.costUsd !== undefined ? `$${s.costUsd.toFixed(6)}` : '',
    s.error ?? '',
  ]);
}

export function registerRuns(program: Command): void {
  const run = program.command('run').description('Start and inspect workflow runs.');

  run
    .command('start')
    .argument('<workflow>', 'workflow name (built in, or from KEEL_WORKFLOWS)')
    .option('--input <json>', 'the run input as JSON', '{}')
    .option('--id <runId>', 'run id (idempotent: the same id starts one run)')
    .option('--customer <id>', 'customer the run concerns (cost attribution)')
    .option('--budget <usd>', 'USD the run may spend')
    .option('--json', 'print JSON')
    .description('Start a run of a workflow; the agents that own its capabilities carry it out.')
    .action(async (workflow: string, o: { input: string; id?: string; customer?: string; budget?: string; json?: boolean }) => {
      const c = await openCli({ bus: true });
      try {
        const input = parseJsonOption('--input', o.input);
        const r = await c.workflows!.start(workflow, input, { runId: o.id, customer: o.customer, budgetUsd: o.budget ? Number(o.budget) : undefined });
        print(o.json, r, () => console.log(`${r.created ? 'started' : 'already exists:'} ${r.runId} (trace ${r.traceId})`));
      } finally {
        await c.close();
      }
    });

  run
    .command('show')
    .argument('<runId>', 'run id, or a unique prefix of it')
    .option('--json', 'print JSON: { run, steps, history }')
    .description('A run\'s page: steps, attempts, durations, cost, compensations, dead letters, supersession, trace id, and its event history.')
    .action(async (runIdArg: string, o: { json?: boolean }) => {
      const c = await openCli();
      try {
        const runId = await resolveRunId(c.store, runIdArg);
        const e = await c.store.get<RunState>('workflow_run', runId);
        if (!e) throw new WorkflowError('WORKFLOW_RUN_NOT_FOUND', `no workflow run '${runId}'`);
        const history = await c.store.history('workflow_run', runId);
        const st = e.state;
        const { definition: _d, ...summary } = st;
        print(o.json, { run: { id: runId, ...summary, entityVersion: e.version }, history: history.map((h) => ({ version: h.version, type: h.type, time: h.time, actor: h.meta.actor, data: h.data })) }, () => {
          console.log(`run ${runId}  ${st.workflow} v${st.version}  ${st.status}${st.error ? `  (${st.error})` : ''}`);
          console.log(`started ${st.startedAt}${st.finishedAt ? `  finished ${st.finishedAt}` : ''}  trace ${st.traceId ?? '-'}  spent $${st.spentUsd.toFixed(6)}${st.customer ? `  customer ${st.customer}` : ''}\n`);
          table(['STEP', 'STATUS', 'ATTEMPT', 'AGENT', 'DURATION', 'COST', 'ERROR'], stepRows(st));
          for (const [id, s] of Object.entries(st.steps)) {
            if (s.deadLetter) console.log(`\n${id}: its task was dead-lettered (${s.deadLetter.reason})${s.deadLetter.seq !== undefined ? `: keel dlq show ${s.deadLetter.seq}` : ''}`);
            if (s.status === 'superseded') console.log(`\n${id}: approval ${s.approvalId ?? ''} superseded by run ${s.supersededBy ?? '?'}${s.reason ? ` (${s.reason})` : ''}`);
          }
          if (st.lane) console.log(`\nconcurrency key ${st.lane.key}: ${st.lane.status}${st.lane.holder ? ` (waiting for run ${st.lane.holder})` : ''}`);
          if (st.compensations.length) {
            console.log('\ncompensations (reverse order):');
            table(['STEP', 'STATUS', 'AT'], st.compensations.map((x) => [x.step, x.status, x.at]));
          }
          console.log('\nhistory:');
          for (const h of history) console.log(`  v${h.version} ${h.time} ${h.type}${(h.data as { step?: string })?.step ? ` ${(h.data as { step: string }).step}` : ''} by ${h.meta.actor.kind}:${h.meta.actor.id}`);
        });
      } finally {
        await c.close();
      }
    });

  run
    .command('retry')
    .argument('<runId>', 'run id, or a unique prefix of it')
    .requiredOption('--from <step>', 'step to re-drive from (it and everything after it run again)')
    .option('--input <json>', 'replace that step\'s input')
    .option('--json', 'print JSON')
    .description('Re-drive a run from a checkpoint, optionally with edited input.')
    .action(async (runIdArg: string, o: { from: string; input?: string; json?: boolean }) => {
      const c = await openCli({ bus: true });
      try {
        const runId = await resolveRunId(c.store, runIdArg);
        await c.workflows!.retryFrom(runId, o.from, parseJsonOption('--input', o.input));
        print(o.json, { runId, from: o.from, retried: true }, () => console.log(`re-driving ${runId} from ${o.from}`));
      } finally {
        await c.close();
      }
    });

  run
    .command('cancel')
    .argument('<runId>', 'run id, or a unique prefix of it')
    .option('--json', 'print JSON')
    .description('Cancel a running workflow run.')
    .action(async (runIdArg: string, o: { json?: boolean }) => {
      const c = await openCli({ bus: true });
      try {
        const runId = await resolveRunId(c.store, runIdArg);
        const did = await c.workflows!.cancel(runId, 'operator');
        print(o.json, { runId, cancelled: did }, () => console.log(did ? `cancelled ${runId}` : `${runId} was not running`));
      } finally {
        await c.close();
      }
    });

  program
    .command('runs')
    .addOption(enumOption('--status <status>', 'only runs in this status', RUN_STATUSES))
    .option('--workflow <name>', 'only runs of this workflow')
    .option('--customer <who>', 'only runs for this customer: a customer id (cus-…), an email address or a chat handle')
    .option('--since <when>', 'only runs started since: a duration (15m, 2h, 7d) or an ISO time')
    .option('--limit <n>', 'at most this many', intArg('--limit', 1), 50)
    .option('--json', 'print JSON: { runs: [...], total, customer? }')
    .description('List workflow runs, newest first.')
    .action(async (o: { status?: string; workflow?: string; customer?: string; since?: string; limit: number; json?: boolean }) => {
      const since = o.since !== undefined ? parseSince(o.since) : undefined;
      const c = await openCli();
      try {
        const filter: Record<string, string | { $gte: string }> = {};
        if (o.status) filter.status = o.status;
        if (o.workflow) {
          const known = new Set(c.features.flatMap((f) => f.workflows.map((w) => w.name)));
          // a workflow may come from KEEL_WORKFLOWS or be gone while its runs remain: name the known ones only when nothing ran under it
          if (!known.has(o.workflow) && (await c.store.query('workflow_run', { filter: { workflow: o.workflow }, limit: 1 })).total === 0) {
            throw new CliError('CLI_BAD_ARGUMENT', `--workflow: no runs of a workflow '${o.workflow}'; known workflows: ${[...known].join(', ') || '(none)'}`, { details: { option: '--workflow', value: o.workflow, valid: [...known] } });
          }
          filter.workflow = o.workflow;
        }
        const who = o.customer !== undefined ? await resolveCustomer(c.store, o.customer) : undefined;
        if (who) filter.customer = who.id;
        if (since) filter.startedAt = { $gte: since };
        const page = await c.store.query<RunState>('workflow_run', { filter, sort: { startedAt: 'desc' }, limit: o.limit });
        const runs = page.items.map((e) => ({
          id: e.entityId,
          workflow: e.state.workflow,
          version: e.state.version,
          status: e.state.status,
          startedAt: e.state.startedAt,
          finishedAt: e.state.finishedAt ?? null,
          spentUsd: e.state.spentUsd,
          customer: e.state.customer ?? null,
          traceId: e.state.traceId ?? null,
          error: e.state.error ?? null,
        }));
        print(o.json, { runs, total: page.total, ...(who ? { customer: { query: o.customer, ...who } } : {}) }, () =>
          runs.length === 0 ? console.log(`no runs${who ? ` for ${o.customer}` : ''}`) : table(['RUN', 'WORKFLOW', 'STATUS', 'STARTED', 'FINISHED', 'COST'], runs.map((r) => [r.id, `${r.workflow} v${r.version}`, r.status, r.startedAt, r.finishedAt ?? '', `$${r.spentUsd.toFixed(6)}`])),
        );
      } finally {
        await c.close();
      }
    });
}
