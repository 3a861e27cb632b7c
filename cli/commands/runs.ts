import type { Command } from 'commander';
import { WorkflowError, type RunState } from '../../workflows/index.ts';
import { openCli, print, table, parseJsonOption } from '../context.ts';

function stepRows(st: RunState): string[][] {
  return Object.entries(st.steps).map(([id, s]) => [
    id,
    s.status,
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
    .argument('<runId>')
    .option('--json', 'print JSON: { run, steps, history }')
    .description('A run\'s page: steps, attempts, durations, cost, compensations, trace id, and its event history.')
    .action(async (runId: string, o: { json?: boolean }) => {
      const c = await openCli();
      try {
        const e = await c.store.get<RunState>('workflow_run', runId);
        if (!e) throw new WorkflowError('WORKFLOW_RUN_NOT_FOUND', `no workflow run '${runId}'`);
        const history = await c.store.history('workflow_run', runId);
        const st = e.state;
        const { definition: _d, ...summary } = st;
        print(o.json, { run: { id: runId, ...summary, entityVersion: e.version }, history: history.map((h) => ({ version: h.version, type: h.type, time: h.time, actor: h.meta.actor, data: h.data })) }, () => {
          console.log(`run ${runId}  ${st.workflow} v${st.version}  ${st.status}${st.error ? `  (${st.error})` : ''}`);
          console.log(`started ${st.startedAt}${st.finishedAt ? `  finished ${st.finishedAt}` : ''}  trace ${st.traceId ?? '-'}  spent $${st.spentUsd.toFixed(6)}${st.customer ? `  customer ${st.customer}` : ''}\n`);
          table(['STEP', 'STATUS', 'ATTEMPT', 'AGENT', 'DURATION', 'COST', 'ERROR'], stepRows(st));
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
    .argument('<runId>')
    .requiredOption('--from <step>', 'step to re-drive from (it and everything after it run again)')
    .option('--input <json>', 'replace that step\'s input')
    .option('--json', 'print JSON')
    .description('Re-drive a run from a checkpoint, optionally with edited input.')
    .action(async (runId: string, o: { from: string; input?: string; json?: boolean }) => {
      const c = await openCli({ bus: true });
      try {
        await c.workflows!.retryFrom(runId, o.from, parseJsonOption('--input', o.input));
        print(o.json, { runId, from: o.from, retried: true }, () => console.log(`re-driving ${runId} from ${o.from}`));
      } finally {
        await c.close();
      }
    });

  run
    .command('cancel')
    .argument('<runId>')
    .option('--json', 'print JSON')
    .description('Cancel a running workflow run.')
    .action(async (runId: string, o: { json?: boolean }) => {
      const c = await openCli({ bus: true });
      try {
        const did = await c.workflows!.cancel(runId, 'operator');
        print(o.json, { runId, cancelled: did }, () => console.log(did ? `cancelled ${runId}` : `${runId} was not running`));
      } finally {
        await c.close();
      }
    });

  program
    .command('runs')
    .option('--status <status>', 'running | completed | failed | compensating | cancelled')
    .option('--workflow <name>')
    .option('--customer <id>')
    .option('--limit <n>', 'at most this many', '50')
    .option('--json', 'print JSON: { runs: [...] }')
    .description('List workflow runs, newest first.')
    .action(async (o: { status?: string; workflow?: string; customer?: string; limit: string; json?: boolean }) => {
      const c = await openCli();
      try {
        const filter: Record<string, string> = {};
        if (o.status) filter.status = o.status;
        if (o.workflow) filter.workflow = o.workflow;
        if (o.customer) filter.customer = o.customer;
        const page = await c.store.query<RunState>('workflow_run', { filter, sort: { startedAt: 'desc' }, limit: Number(o.limit) });
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
        print(o.json, { runs, total: page.total }, () =>
          table(['RUN', 'WORKFLOW', 'STATUS', 'STARTED', 'FINISHED', 'COST'], runs.map((r) => [r.id, `${r.workflow} v${r.version}`, r.status, r.startedAt, r.finishedAt ?? '', `$${r.spentUsd.toFixed(6)}`])),
        );
      } finally {
        await c.close();
      }
    });
}
