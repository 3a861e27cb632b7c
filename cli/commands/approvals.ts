import type { Command } from 'commander';
import { openCli, print, table } from '../context.ts';

export function registerApprovals(program: Command): void {
  program
    .command('approvals')
    .option('--state <state>', 'pending | approved | rejected | expired', 'pending')
    .option('--json', 'print JSON: { approvals: [...] }')
    .description('List approvals waiting for the operator (or decided ones with --state).')
    .action(async (o: { state: string; json?: boolean }) => {
      const c = await openCli();
      try {
        const approvals = await c.store.listApprovals({ state: o.state as 'pending' });
        print(o.json, { approvals }, () => {
          if (approvals.length === 0) return console.log(`no ${o.state} approvals`);
          table(['ID', 'ACTION', 'SUBJECT', 'DEADLINE', 'PAYLOAD'], approvals.map((a) => [a.id, a.action, a.subject, a.deadline, JSON.stringify(a.payload).slice(0, 80)]));
        });
      } finally {
        await c.close();
      }
    });

  program
    .command('approve')
    .argument('<id>', 'approval id (from `keel approvals`)')
    .option('--text <text>', 'approve with this edited text instead of the suggestion')
    .option('--json', 'print JSON')
    .description('Approve a pending action; the workflow carries on (e.g. the reply is sent).')
    .action(async (id: string, o: { text?: string; json?: boolean }) => {
      const c = await openCli({ bus: true });
      try {
        const r = await c.workflows!.decideApproval(id, 'approved', c.workflows!.actor, o.text);
        print(o.json, { id, decision: 'approved', ...r }, () => console.log(r.applied ? `approved ${id}` : `${id} was already decided`));
        if (!r.applied) process.exitCode = 1;
      } finally {
        await c.close();
      }
    });

  program
    .command('reject')
    .argument('<id>', 'approval id')
    .requiredOption('--reason <reason>', 'why (recorded)')
    .option('--json', 'print JSON')
    .description('Reject a pending action; nothing is sent.')
    .action(async (id: string, o: { reason: string; json?: boolean }) => {
      const c = await openCli({ bus: true });
      try {
        const r = await c.workflows!.decideApproval(id, 'rejected', c.workflows!.actor, undefined, o.reason);
        print(o.json, { id, decision: 'rejected', ...r }, () => console.log(r.applied ? `rejected ${id}` : `${id} was already decided`));
        if (!r.applied) process.exitCode = 1;
      } finally {
        await c.close();
      }
    });
}
