import type { Command } from 'commander';
import type { StateStore, CostRecord } from '../../shared-state/index.ts';
import type { RunState } from '../../workflows/index.ts';
import { resolveCustomer, type TicketState as InboundTicketState } from '../../agents/index.ts';
import { openCli, print, table } from '../context.ts';
import { CliError } from '../errors.ts';
import { enumOption, intArg, parseSince } from '../args.ts';
import { addRetriageCommand } from './triage.ts';

interface Attachment { filename: string; contentType: string; size: number; sha256: string; stored: boolean; path?: string }
interface TicketMessage { id: string; direction: 'in' | 'out'; channel: string; from: string; to?: string; subject?: string; text: string; at: string; messageId?: string; attachments?: Attachment[] }
interface TicketState {
  subject: string; status: string; priority: string; channel?: string; customerId?: string; customerEmail?: string; customerHandle?: string;
  messages: TicketMessage[]; triage?: Record<string, unknown>; summary?: string; suggestion?: { text: string; tier: number; confidence: number; supersededAt?: string; supersededReason?: string };
  escalated?: boolean; lastRunId?: string; traceIds: string[];
}

/** `keel tickets --status` values: every ticket status (tsc fails here when the ticket gains one). */
const TICKET_STATUSES = ['open', 'pending', 'escalated', 'resolved', 'closed'] as const satisfies readonly InboundTicketState['status'][];
const everyStatus: Exclude<InboundTicketState['status'], (typeof TICKET_STATUSES)[number]> extends never ? true : never = true;
void everyStatus;

/** `12.3 KiB`. */
function size(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/**
 * The attachments of each message: those recorded on the ticket, else (tickets from before
 * attachments were recorded there) those of the inbound message that started the run.
 */
function attachmentsOf(messages: TicketMessage[], runs: Array<{ state: RunState }>): Array<Attachment & { messageId: string }> {
  const fromRuns = new Map<string, Attachment[]>();
  for (const r of runs) {
    const m = (r.state.input as { message?: { id?: string; attachments?: Attachment[] } } | undefined)?.message;
    if (m?.id && m.attachments?.length) fromRuns.set(m.id, m.attachments);
  }
  return messages.flatMap((m) => (m.attachments ?? fromRuns.get(m.id) ?? []).map((a) => ({ messageId: m.id, ...a })));
}

/** The workflow runs that worked on a ticket (the inbound run's intake names it). */
async function runsOf(store: StateStore, ticketId: string): Promise<Array<{ id: string; state: RunState }>> {
  const page = await store.query<RunState>('workflow_run', { filter: { 'steps.intake.output.ticketId': ticketId }, sort: { startedAt: 'asc' }, limit: 1000 });
  return page.items.map((e) => ({ id: e.entityId, state: e.state }));
}

async function ticketDetails(store: StateStore, id: string) {
  const t = await store.get<TicketState>('ticket', id);
  if (!t) throw new CliError('TICKET_NOT_FOUND', `no ticket '${id}' (see \`keel tickets\`)`);
  const runs = await runsOf(store, id);
  // every approval the runs asked for (a run's approval step names it), oldest run first
  const approvalIds = runs.flatMap((r) => Object.values(r.state.steps).flatMap((s) => (s.approvalId ? [s.approvalId] : [])));
  const approvals = (await Promise.all(approvalIds.map((a) => store.getApproval(a)))).filter((a) => a !== null);
  const costs: CostRecord[] = [];
  for (const r of runs) costs.push(...(await store.costs({ runId: r.id, records: 1000 })).records);
  const total = costs.reduce((s, c) => ({ usd: s.usd + c.costUsd, ms: s.ms + c.computeMs, tokensIn: s.tokensIn + c.tokensIn, tokensOut: s.tokensOut + c.tokensOut }), { usd: 0, ms: 0, tokensIn: 0, tokensOut: 0 });
  return {
    id,
    version: t.version,
    ...t.state,
    /** every message's files: name, type, size, and where the content is stored */
    attachments: attachmentsOf(t.state.messages, runs),
    // the decision's facts: who decided, when, the edited text that was sent, the reason
    approvals: approvals.map((a) => ({
      id: a.id, state: a.state, decidedBy: a.decidedBy, decidedAt: a.decidedAt, deadline: a.deadline,
      by: a.decidedBy ? `${a.decidedBy.kind}:${a.decidedBy.id}` : null, reason: a.reason, text: a.text, runId: a.correlationId, createdAt: a.createdAt,
    })),
    runs: runs.map((r) => ({ id: r.id, status: r.state.status, traceId: r.state.traceId ?? null, startedAt: r.state.startedAt, error: r.state.error ?? null, supersededBy: r.state.supersededBy ?? null })),
    // steps that failed for good, with the dead letter when that is how (keel dlq show SEQ)
    failures: runs.flatMap((r) =>
      Object.entries(r.state.steps)
        .filter(([, s]) => s.status === 'failed' && !s.retryAt)
        .map(([step, s]) => ({ runId: r.id, step, error: s.error ?? null, deadLetter: s.deadLetter ?? null, runStatus: r.state.status })),
    ),
    cost: { usd: Math.round(total.usd * 1e9) / 1e9, computeMs: Math.round(total.ms * 1000) / 1000, tokensIn: total.tokensIn, tokensOut: total.tokensOut, records: costs.length },
    // the long-term memories each step was shown or referred to (`keel memory show ID`)
    memoriesShown: runs.flatMap((r) =>
      Object.entries(r.state.steps).flatMap(([step, st]) => {
        const ids = (st.output as { memories?: unknown } | undefined)?.memories;
        return Array.isArray(ids) && ids.length ? [{ runId: r.id, step, memories: ids.map(String) }] : [];
      }),
    ),
  };
}

export function registerTickets(program: Command): void {
  program
    .command('tickets')
    .addOption(enumOption('--status <status>', 'only tickets in this status', TICKET_STATUSES))
    .option('--customer <who>', 'only this customer: a customer id (cus-…), an email address or a chat handle')
    .option('--since <when>', 'only tickets updated since: a duration (15m, 2h, 7d) or an ISO time')
    .option('--limit <n>', 'at most this many', intArg('--limit', 1), 50)
    .option('--json', 'print JSON: { tickets: [...], total, customer? }')
    .description('List tickets, most recently updated first.')
    .action(async (o: { status?: string; customer?: string; since?: string; limit: number; json?: boolean }) => {
      const since = o.since !== undefined ? parseSince(o.since) : undefined;
      const c = await openCli();
      try {
        const filter: Record<string, string | { $gte: string }> = {};
        if (o.status) filter.status = o.status;
        const who = o.customer !== undefined ? await resolveCustomer(c.store, o.customer) : undefined;
        if (who) filter.customerId = who.id;
        if (since) filter.updatedAt = { $gte: since };
        const page = await c.store.query<TicketState>('ticket', { filter, sort: { updatedAt: 'desc' }, limit: o.limit });
        const tickets = page.items.map((e) => ({
          id: e.entityId, subject: e.state.subject, status: e.state.status, priority: e.state.priority, channel: e.state.channel ?? null,
          customer: e.state.customerEmail ?? e.state.customerHandle ?? e.state.customerId ?? null, messages: e.state.messages.length,
          intent: (e.state.triage?.intent as string | undefined) ?? null, updatedAt: e.updatedAt,
        }));
        print(o.json, { tickets, total: page.total, ...(who ? { customer: { query: o.customer, ...who } } : {}) }, () =>
          tickets.length === 0
            ? console.log(`no tickets${who ? ` for ${o.customer}${who.found ? ` (${who.id})` : ` (no customer has that ${who.by === 'id' ? 'id' : who.by}; give a customer id, email or chat handle)`}` : ''}`)
            : table(['TICKET', 'STATUS', 'PRIORITY', 'CHANNEL', 'CUSTOMER', 'MSGS', 'INTENT', 'SUBJECT'], tickets.map((t) => [t.id, t.status, t.priority, t.channel ?? '', t.customer ?? '', String(t.messages), t.intent ?? '', t.subject.slice(0, 50)])),
        );
      } finally {
        await c.close();
      }
    });

  const ticket = program.command('ticket').description('One ticket.');
  // keel ticket retriage: the operator's triage, learned from (issue 18; cli/commands/triage.ts)
  addRetriageCommand(ticket);
  ticket
    .command('show')
    .argument('<id>')
    .option('--json', 'print JSON')
    .description('A ticket with its messages, triage, summary, suggested reply, approval state, cost and trace ids.')
    .action(async (id: string, o: { json?: boolean }) => {
      const c = await openCli();
      try {
        const d = await ticketDetails(c.store, id);
        print(o.json, d, () => {
          console.log(`${d.id}  ${d.subject}\nstatus ${d.status}  priority ${d.priority}  channel ${d.channel ?? '-'}  customer ${d.customerEmail ?? d.customerHandle ?? d.customerId ?? '-'}`);
          console.log(`cost $${d.cost.usd.toFixed(6)} over ${d.cost.records} record(s), ${d.cost.computeMs} ms compute, ${d.cost.tokensIn}/${d.cost.tokensOut} tokens`);
          console.log(`\nmessages:`);
          for (const m of d.messages) {
            console.log(`  ${m.at} ${m.direction === 'in' ? '<-' : '->'} ${m.direction === 'in' ? m.from : m.to ?? ''}\n    ${m.text.replace(/\s+/g, ' ').slice(0, 200)}`);
            for (const a of d.attachments.filter((x) => x.messageId === m.id)) console.log(`    attachment: ${a.filename} (${a.contentType}, ${size(a.size)}) ${a.stored && a.path ? `stored at ${a.path}` : 'not stored (over the size limit or no attachments dir); sha256 ' + a.sha256}`);
          }
          if (d.triage) console.log(`\ntriage: ${JSON.stringify(d.triage)}`);
          if (d.summary) console.log(`\nsummary: ${d.summary}`);
          if (d.suggestion) console.log(`\nsuggested reply (tier ${d.suggestion.tier})${d.suggestion.supersededAt ? ` — SUPERSEDED ${d.suggestion.supersededAt} (${d.suggestion.supersededReason ?? 'a newer message'}), never sent` : ''}:\n  ${d.suggestion.text.replace(/\n/g, '\n  ')}`);
          console.log(`\napprovals:${d.approvals.length ? '' : ' none'}`);
          for (const a of d.approvals) {
            console.log(`  ${a.id} ${a.state}${a.by ? ` by ${a.by}` : ''}${a.decidedAt ? ` at ${a.decidedAt}` : ''}${a.reason ? ` — ${a.reason}` : ''}`);
            if (a.text !== null) console.log(`    edited text sent: ${a.text.replace(/\s+/g, ' ').slice(0, 200)}`);
          }
          for (const m of d.memoriesShown) console.log(`\nmemories shown to ${m.step} (run ${m.runId}): ${m.memories.join(', ')} (keel memory show ID)`);
          for (const f of d.failures) console.log(`\nFAILED: run ${f.runId} step ${f.step}: ${f.error ?? 'failed'}${f.deadLetter?.seq !== undefined ? ` (dead letter ${f.deadLetter.seq}: keel dlq show ${f.deadLetter.seq})` : ''}`);
          console.log(`runs: ${d.runs.map((r) => `${r.id} ${r.status} trace ${r.traceId}${r.supersededBy ? ` (superseded by ${r.supersededBy})` : r.error && r.status !== 'completed' ? ` (${r.error})` : ''}`).join('\n      ') || 'none'}`);
        });
      } finally {
        await c.close();
      }
    });

  program
    .command('why')
    .argument('<id>', 'a ticket id, or a workflow run id (or a unique prefix of one)')
    .option('--json', 'print JSON: { subject, chain: [...] }')
    .description('The causal chain: which message caused which step, by which agent, at what cost, in which trace.')
    .action(async (id: string, o: { json?: boolean }) => {
      const c = await openCli();
      try {
        const { resolveRunId } = await import('../../workflows/index.ts');
        const runId = id.startsWith('tkt-') ? id : await resolveRunId(c.store, id).catch((err: unknown) => ((err as { code?: string }).code === 'WORKFLOW_RUN_NOT_FOUND' ? id : Promise.reject(err)));
        const runs = id.startsWith('tkt-') ? await runsOf(c.store, id) : [{ id: runId, state: (await c.store.get<RunState>('workflow_run', runId))?.state }].filter((r): r is { id: string; state: RunState } => !!r.state);
        if (runs.length === 0) throw new CliError('NOT_FOUND', `nothing found for '${id}': give a ticket id (tkt-...) or a run id`);
        const chain: Array<{ runId: string; workflow: string; status: string; traceId: string | null; cause: { channel?: string; messageId: string | null; from: string | null; subject: string | null } | null; steps: Array<{ at: string; event: string; step: string | null; by: string; causedBy: string | null; decision: string | null; error: string | null; status: string | null; costUsd: number; computeMs: number; traceId: string | null; text: string | null; reason: string | null; deadLetter: { reason: string; seq?: number } | null; supersededBy: string | null; memories: string[] | null }> }> = [];
        for (const r of runs) {
          const history = await c.store.history('workflow_run', r.id);
          const costs = (await c.store.costs({ runId: r.id, records: 1000 })).records;
          const msg = (r.state.input as { message?: { channel?: string; messageId?: string; customer?: { email?: string; handle?: string }; subject?: string } }).message;
          const steps = history
            .filter((h) => ['step_completed', 'step_failed', 'approval_requested', 'approval_decided', 'approval_superseded', 'approval_escalated', 'step_skipped', 'step_redriven', 'compensation_completed', 'run_finished'].includes(h.type))
            .map((h) => {
              const d = h.data as { step?: string; decision?: string; by?: string; error?: string; durationMs?: number; status?: string; text?: string; reason?: string; deadLetter?: { reason: string; seq?: number }; supersededBy?: string; output?: { memories?: unknown } };
              const shown = h.type === 'step_completed' && Array.isArray(d.output?.memories) ? d.output.memories.map(String) : null;
              const stepCosts = costs.filter((x) => x.capability && (r.state.definition as { steps: Record<string, { capability?: string }> }).steps[d.step ?? '']?.capability === x.capability);
              return {
                at: h.time, event: h.type, step: d.step ?? null, by: `${h.meta.actor.kind}:${h.meta.actor.id}`,
                causedBy: h.meta.causationId ?? null, decision: d.decision ?? null, error: d.error ?? null, status: d.status ?? null,
                costUsd: stepCosts.reduce((s, x) => s + x.costUsd, 0), computeMs: stepCosts.reduce((s, x) => s + x.computeMs, 0), traceId: h.meta.traceId ?? null,
                // the decision's facts (edited text, reason), a dead letter's reason, who superseded it
                text: d.text ?? null, reason: d.reason ?? null, deadLetter: d.deadLetter ?? null, supersededBy: d.supersededBy ?? (h.type === 'approval_superseded' ? (d.by ?? null) : null),
                // the long-term memories the step's model was shown (or its tier-0 text refers to)
                memories: shown,
              };
            });
          chain.push({ runId: r.id, workflow: r.state.workflow, status: r.state.status, traceId: r.state.traceId ?? null, cause: msg ? { channel: msg.channel, messageId: msg.messageId ?? null, from: msg.customer?.email ?? msg.customer?.handle ?? null, subject: msg.subject ?? null } : null, steps });
        }
        print(o.json, { subject: id, chain }, () => {
          for (const r of chain) {
            console.log(`${r.cause ? `${r.cause.channel} message ${r.cause.messageId ?? ''} from ${r.cause.from ?? '?'}${r.cause.subject ? ` "${r.cause.subject}"` : ''}` : 'run'}\n└─ run ${r.runId} (${r.workflow}, ${r.status}) trace ${r.traceId}`);
            for (const s of r.steps) {
              const facts = [s.reason ? `reason: ${s.reason}` : '', s.text !== null ? `edited text: ${s.text.replace(/\s+/g, ' ').slice(0, 80)}` : '', s.deadLetter ? `dead letter${s.deadLetter.seq !== undefined ? ` ${s.deadLetter.seq}` : ''} (${s.deadLetter.reason})` : '', s.supersededBy && s.event === 'approval_superseded' ? `superseded by run ${s.supersededBy}` : '', s.memories?.length ? `memories: ${s.memories.join(', ')}` : ''].filter(Boolean).join('; ');
              console.log(`   ├─ ${s.at} ${s.event}${s.step ? ` ${s.step}` : ''}${s.decision ? ` ${s.decision}` : ''}${s.status && s.event === 'run_finished' ? ` ${s.status}` : ''} by ${s.by}${s.costUsd || s.computeMs ? ` — $${s.costUsd.toFixed(6)}, ${s.computeMs.toFixed(1)} ms` : ''}${s.error && s.event !== 'approval_superseded' ? ` — ${s.error}` : ''}${facts ? ` — ${facts}` : ''}`);
            }
          }
        });
      } finally {
        await c.close();
      }
    });
}
