import type { Command } from 'commander';
import { openCli, print, table } from '../context.ts';
import { enumOption } from '../args.ts';
import { CliError } from '../errors.ts';
import { INTENTS, URGENCIES, type Intent, type Urgency } from '../../agents/inbound/index.ts';
import type { Approval, ApprovalState } from '../../shared-state/index.ts';
import type { RunState } from '../../workflows/index.ts';

/** `keel approvals --state` values: every approval state (tsc fails here when one is added). */
const APPROVAL_STATES = ['pending', 'approved', 'rejected', 'expired', 'superseded'] as const satisfies readonly ApprovalState[];
const everyState: Exclude<ApprovalState, (typeof APPROVAL_STATES)[number]> extends never ? true : never = true;
void everyState;

interface ReplyPayload {
  ticketId?: string;
  text?: string;
  customer?: string;
  subject?: string;
  summary?: string;
  message?: { id?: string; from?: string; subject?: string; text?: string; at?: string };
  /** every message the reply answers, oldest first */
  answers?: Array<{ id?: string; from?: string; subject?: string; text?: string; at?: string }>;
}

/** `42s`, `17m`, `3h`, `2d`. */
export function age(fromIso: string, now = Date.now()): string {
  const s = Math.max(0, Math.round((now - Date.parse(fromIso)) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86_400)}d`;
}

/** The reply's first line that says something: a bare salutation (`Hi Ada,`) is skipped. */
const firstLine = (t: string | undefined | null) => {
  const lines = (t ?? '').split('\n').map((l) => l.trim()).filter((l) => l);
  return lines.find((l) => !/^(hi|hello|hey|dear|good (morning|afternoon|evening))\b[^.!?]{0,60},$/i.test(l)) ?? lines[0] ?? '';
};
const who = (a: Approval['decidedBy']) => (a ? `${a.kind}:${a.id}` : null);
const cut = (t: string, n: number) => (t.length > n ? `${t.slice(0, n - 1)}…` : t);

/**
 * What the operator needs to decide from a list: who, about what, how long it has waited, and
 * the first line of what would be sent; with the decision's facts once decided. Read from the
 * approval's payload (`customer`, `subject`, `text`, as workflows such as inbound-message map it).
 */
function viewOf(a: Approval) {
  const p = (a.payload && typeof a.payload === 'object' ? a.payload : {}) as ReplyPayload;
  return {
    ...a,
    customer: p.customer ?? null,
    about: p.subject ?? null,
    ageS: Math.max(0, Math.round((Date.now() - Date.parse(a.createdAt)) / 1000)),
    firstLine: firstLine(a.text ?? p.text) || null,
  };
}

export function registerApprovals(program: Command): void {
  program
    .command('approvals')
    .addOption(enumOption('--state <state>', 'approvals in this state', APPROVAL_STATES).default('pending'))
    .option('--json', 'print JSON: { approvals: [{ ...approval, customer, about, ageS, firstLine }] }')
    .description('The approval queue: customer, subject, age and the first line of the reply (decided ones with --state: who, when, why).')
    .action(async (o: { state: string; json?: boolean }) => {
      const c = await openCli();
      try {
        const approvals = (await c.store.listApprovals({ state: o.state as 'pending' })).map(viewOf);
        print(o.json, { approvals }, () => {
          if (approvals.length === 0) return console.log(`no ${o.state} approvals`);
          if (o.state === 'pending') {
            table(['ID', 'AGE', 'CUSTOMER', 'SUBJECT', 'REPLY'], approvals.map((a) => [a.id, age(a.createdAt), a.customer ?? '', cut(a.about ?? a.subject, 40), cut(a.firstLine ?? '', 60)]));
          } else {
            table(['ID', 'DECIDED', 'BY', 'CUSTOMER', 'SUBJECT', 'NOTE'], approvals.map((a) => [a.id, a.decidedAt ?? '', who(a.decidedBy) ?? '', a.customer ?? '', cut(a.about ?? a.subject, 40), cut(a.reason ?? (a.text !== null ? `edited: ${a.firstLine ?? ''}` : ''), 60)]));
          }
          console.log(`\n${approvals.length} ${o.state}. keel approval show ID (a unique prefix is enough)`);
        });
      } finally {
        await c.close();
      }
    });

  program
    .command('approval')
    .description('One approval.')
    .command('show')
    .argument('<id>', 'approval id, or a unique prefix of it')
    .option('--json', 'print JSON: { approval, reply, sent, message, answers, current? }')
    .description('An approval with the whole reply and the message it answers; once decided, who decided, when, the edited text and the reason.')
    .action(async (idOrPrefix: string, o: { json?: boolean }) => {
      const c = await openCli();
      try {
        const { currentApprovalOf, resolveApprovalId } = await import('../../workflows/index.ts');
        const id = await resolveApprovalId(c.store, idOrPrefix);
        const a = (await c.store.getApproval(id))!;
        const p = (a.payload && typeof a.payload === 'object' ? a.payload : {}) as ReplyPayload;
        const run = a.correlationId ? (await c.store.get<RunState>('workflow_run', a.correlationId))?.state : undefined;
        // the message it answers: from the payload, else the message that started the run
        const m = (run?.input as { message?: { id?: string; customer?: { email?: string; handle?: string }; subject?: string; text?: string; receivedAt?: string } } | undefined)?.message;
        const message = p.message ?? (m ? { id: m.id, from: m.customer?.email ?? m.customer?.handle, subject: m.subject, text: m.text, at: m.receivedAt } : null);
        const answers = p.answers?.length ? p.answers : message ? [message] : [];
        const current = a.state === 'superseded' && a.correlationId ? await currentApprovalOf(c.store, a.correlationId, run) : undefined;
        const out = { approval: viewOf(a), reply: p.text ?? null, sent: a.text ?? (a.state === 'approved' ? (p.text ?? null) : null), message, answers, ...(current ? { current } : {}) };
        print(o.json, out, () => {
          console.log(`approval ${a.id}  ${a.action}  ${a.state}${a.state === 'pending' ? ` (waiting ${age(a.createdAt)}, deadline ${a.deadline})` : ''}`);
          if (p.customer || p.subject) console.log(`customer ${p.customer ?? '-'}  subject ${p.subject ?? '-'}${p.ticketId ? `  ticket ${p.ticketId}` : ''}`);
          console.log(`requested ${a.createdAt} by ${who(a.requestedBy)}${a.correlationId ? `  run ${a.correlationId}` : ''}`);
          if (a.state !== 'pending') console.log(`${a.state} ${a.decidedAt ?? ''}${a.decidedBy ? ` by ${who(a.decidedBy)}` : ''}${a.reason ? `\nreason: ${a.reason}` : ''}`);
          if (current) console.log(current.approvalId ? `current approval: ${current.approvalId}` : current.runId ? `the current suggestion is being prepared by run ${current.runId}` : 'no current approval');
          if (answers.length) console.log(`\nanswers ${answers.length === 1 ? 'the message' : `${answers.length} messages`}:`);
          for (const x of answers) console.log(`  from ${x.from ?? '?'}${x.at ? ` (${x.at})` : ''}${x.subject ? `, "${x.subject}"` : ''}:\n    ${(x.text ?? '').replace(/\n/g, '\n    ')}`);
          console.log(`\nreply${a.text !== null ? ' as proposed (not sent: the operator edited it)' : ''}:\n  ${(p.text ?? JSON.stringify(a.payload, null, 2)).replace(/\n/g, '\n  ')}`);
          if (a.text !== null) console.log(`\nreply as approved (edited):\n  ${a.text.replace(/\n/g, '\n  ')}`);
        });
      } finally {
        await c.close();
      }
    });

  program
    .command('approve')
    .argument('<id>', 'approval id (from `keel approvals`), or a unique prefix of it')
    .option('--text <text>', 'approve with this edited text instead of the suggestion (checked against what the sending step accepts)')
    .addOption(enumOption('--intent <intent>', "correct the ticket's triage while deciding: its message becomes a labeled example triage learns from", INTENTS))
    .addOption(enumOption('--urgency <urgency>', 'with --intent: the right urgency', URGENCIES))
    .option('--json', 'print JSON')
    .description('Approve a pending action; the workflow carries on (e.g. the reply is sent). Recorded as decided by KEEL_OPERATOR.')
    .action(async (id: string, o: { text?: string; intent?: Intent; urgency?: Urgency; json?: boolean }) => {
      if (o.urgency && !o.intent) throw new CliError('CLI_BAD_ARGUMENT', '--urgency corrects the triage together with --intent');
      const c = await openCli({ bus: true });
      try {
        const r = await c.workflows!.decideApproval(id, 'approved', c.workflows!.actor, o.text);
        const retriaged = r.applied && o.intent ? await correctTriage(c, r.id, o.intent, o.urgency) : undefined;
        print(o.json, { decision: 'approved', by: `${c.workflows!.actor.kind}:${c.workflows!.actor.id}`, ...r, ...(retriaged ? { retriaged } : {}) }, () => {
          console.log(r.applied ? `approved ${r.id}` : `${r.id} was already decided`);
          if (retriaged) console.log(`ticket ${retriaged.ticketId} retriaged: ${retriaged.triage.intent}; example ${retriaged.example.id} (keel triage examples)`);
        });
        if (!r.applied) process.exitCode = 1;
      } finally {
        await c.close();
      }
    });

  program
    .command('reject')
    .argument('<id>', 'approval id, or a unique prefix of it')
    .requiredOption('--reason <reason>', 'why (recorded on the approval and the run)')
    .addOption(enumOption('--intent <intent>', "correct the ticket's triage while deciding: its message becomes a labeled example triage learns from", INTENTS))
    .addOption(enumOption('--urgency <urgency>', 'with --intent: the right urgency', URGENCIES))
    .option('--json', 'print JSON')
    .description('Reject a pending action; nothing is sent. Recorded as decided by KEEL_OPERATOR, with the reason.')
    .action(async (id: string, o: { reason: string; intent?: Intent; urgency?: Urgency; json?: boolean }) => {
      if (o.urgency && !o.intent) throw new CliError('CLI_BAD_ARGUMENT', '--urgency corrects the triage together with --intent');
      const c = await openCli({ bus: true });
      try {
        const r = await c.workflows!.decideApproval(id, 'rejected', c.workflows!.actor, undefined, o.reason);
        const retriaged = r.applied && o.intent ? await correctTriage(c, r.id, o.intent, o.urgency) : undefined;
        print(o.json, { decision: 'rejected', by: `${c.workflows!.actor.kind}:${c.workflows!.actor.id}`, reason: o.reason, ...r, ...(retriaged ? { retriaged } : {}) }, () => {
          console.log(r.applied ? `rejected ${r.id}` : `${r.id} was already decided`);
          if (retriaged) console.log(`ticket ${retriaged.ticketId} retriaged: ${retriaged.triage.intent}; example ${retriaged.example.id} (keel triage examples)`);
        });
        if (!r.applied) process.exitCode = 1;
      } finally {
        await c.close();
      }
    });
}

/** An approval's ticket (`payload.ticketId`) relabeled by the operator as they decide it; the example records the approval. */
async function correctTriage(c: Awaited<ReturnType<typeof openCli>>, approvalId: string, intent: Intent, urgency: Urgency | undefined) {
  const a = await c.store.getApproval(approvalId);
  const ticketId = (a?.payload as { ticketId?: unknown } | undefined)?.ticketId;
  if (typeof ticketId !== 'string') throw new CliError('CLI_BAD_ARGUMENT', `approval ${approvalId} is not about a ticket: --intent corrects a ticket's triage`);
  const { retriageTicket, requestRetrain } = await import('./triage.ts');
  const out = await retriageTicket(c, ticketId, { intent, ...(urgency ? { urgency } : {}), source: 'approval', approvalId });
  const retrain = await requestRetrain(`approval ${out.example.id}@${Date.now()}`);
  return { ...out, retrain };
}
