import type { Command } from 'commander';
import type { StateStore, CostRecord } from '../../shared-state/index.ts';
import type { RunState } from '../../workflows/index.ts';
import { openCli, print, table } from '../context.ts';
import { CliError } from '../errors.ts';

interface TicketMessage { id: string; direction: 'in' | 'out'; channel: string; from: string; to?: string; subject?: string; text: string; at: string; messageId?: string }
interface TicketState {
  subject: string; status: string; priority: string; channel?: string; customerId?: string; customerEmail?: string; customerHandle?: string;
  messages: TicketMessage[]; triage?: Record<string, unknown>; summary?: string; suggestion?: { text: string; tier: number; confidence: number };
  escalated?: boolean; lastRunId?: string; traceIds: string[];
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
  const approvals = (await Promise.all(runs.map((r) => store.getApproval(`${r.id}_approve`)))).filter((a) => a !== null);
  const costs: CostRecord[] = [];
  for (const r of runs) costs.push(...(await store.costs({ runId: r.id, records: 1000 })).records);
  const total = costs.reduce((s, c) => ({ usd: s.usd + c.costUsd, ms: s.ms + c.computeMs, tokensIn: s.tokensIn + c.tokensIn, tokensOut: s.tokensOut + c.tokensOut }), { usd: 0, ms: 0, tokensIn: 0, tokensOut: 0 });
  return {
    id,
    version: t.version,
    ...t.state,
    approvals: approvals.map((a) => ({ id: a.id, state: a.state, decidedBy: a.decidedBy, decidedAt: a.decidedAt, deadline: a.deadline })),
    runs: runs.map((r) => ({ id: r.id, status: r.state.status, traceId: r.state.traceId ?? null, startedAt: r.state.startedAt })),
    cost: { usd: Math.round(total.usd * 1e9) / 1e9, computeMs: Math.round(total.ms * 1000) / 1000, tokensIn: total.tokensIn, tokensOut: total.tokensOut, records: costs.length },
  };
}

export function registerTickets(program: Command): void {
  program
    .command('tickets')
    .option('--status <status>', 'open | pending | escalated | resolved | closed')
    .option('--customer <id>')
    .option('--limit <n>', 'at most this many', '50')
    .option('--json', 'print JSON: { tickets: [...] }')
    .description('List tickets, most recently updated first.')
    .action(async (o: { status?: string; customer?: string; limit: string; json?: boolean }) => {
      const c = await openCli();
      try {
        const filter: Record<string, string> = {};
        if (o.status) filter.status = o.status;
        if (o.customer) filter.customerId = o.customer;
        const page = await c.store.query<TicketState>('ticket', { filter, sort: { updatedAt: 'desc' }, limit: Number(o.limit) });
        const tickets = page.items.map((e) => ({
          id: e.entityId, subject: e.state.subject, status: e.state.status, priority: e.state.priority, channel: e.state.channel ?? null,
          customer: e.state.customerEmail ?? e.state.customerHandle ?? e.state.customerId ?? null, messages: e.state.messages.length,
          intent: (e.state.triage?.intent as string | undefined) ?? null, updatedAt: e.updatedAt,
        }));
        print(o.json, { tickets, total: page.total }, () =>
          tickets.length === 0 ? console.log('no tickets') : table(['TICKET', 'STATUS', 'PRIORITY', 'CHANNEL', 'CUSTOMER', 'MSGS', 'INTENT', 'SUBJECT'], tickets.map((t) => [t.id, t.status, t.priority, t.channel ?? '', t.customer ?? '', String(t.messages), t.intent ?? '', t.subject.slice(0, 50)])),
        );
      } finally {
        await c.close();
      }
    });

  const ticket = program.command('ticket').description('One ticket.');
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
          for (const m of d.messages) console.log(`  ${m.at} ${m.direction === 'in' ? '<-' : '->'} ${m.direction === 'in' ? m.from : m.to ?? ''}\n    ${m.text.replace(/\s+/g, ' ').slice(0, 200)}`);
          if (d.triage) console.log(`\ntriage: ${JSON.stringify(d.triage)}`);
          if (d.summary) console.log(`\nsummary: ${d.summary}`);
          if (d.suggestion) console.log(`\nsuggested reply (tier ${d.suggestion.tier}):\n  ${d.suggestion.text.replace(/\n/g, '\n  ')}`);
          console.log(`\napprovals: ${d.approvals.map((a) => `${a.id} ${a.state}`).join(', ') || 'none'}`);
          console.log(`runs: ${d.runs.map((r) => `${r.id} ${r.status} trace ${r.traceId}`).join('\n      ') || 'none'}`);
        });
      } finally {
        await c.close();
      }
    });

  program
    .command('why')
    .argument('<id>', 'a ticket id or a workflow run id')
    .option('--json', 'print JSON: { subject, chain: [...] }')
    .description('The causal chain: which message caused which step, by which agent, at what cost, in which trace.')
    .action(async (id: string, o: { json?: boolean }) => {
      const c = await openCli();
      try {
        const runs = id.startsWith('tkt-') ? await runsOf(c.store, id) : [{ id, state: (await c.store.get<RunState>('workflow_run', id))?.state }].filter((r): r is { id: string; state: RunState } => !!r.state);
        if (runs.length === 0) throw new CliError('NOT_FOUND', `nothing found for '${id}': give a ticket id (tkt-...) or a run id`);
        const chain: Array<{ runId: string; workflow: string; status: string; traceId: string | null; cause: { channel?: string; messageId: string | null; from: string | null; subject: string | null } | null; steps: Array<{ at: string; event: string; step: string | null; by: string; causedBy: string | null; decision: string | null; error: string | null; status: string | null; costUsd: number; computeMs: number; traceId: string | null }> }> = [];
        for (const r of runs) {
          const history = await c.store.history('workflow_run', r.id);
          const costs = (await c.store.costs({ runId: r.id, records: 1000 })).records;
          const msg = (r.state.input as { message?: { channel?: string; messageId?: string; customer?: { email?: string; handle?: string }; subject?: string } }).message;
          const steps = history
            .filter((h) => ['step_completed', 'step_failed', 'approval_requested', 'approval_decided', 'approval_escalated', 'step_skipped', 'compensation_completed', 'run_finished'].includes(h.type))
            .map((h) => {
              const d = h.data as { step?: string; decision?: string; by?: string; error?: string; durationMs?: number; status?: string };
              const stepCosts = costs.filter((x) => x.capability && (r.state.definition as { steps: Record<string, { capability?: string }> }).steps[d.step ?? '']?.capability === x.capability);
              return {
                at: h.time, event: h.type, step: d.step ?? null, by: `${h.meta.actor.kind}:${h.meta.actor.id}`,
                causedBy: h.meta.causationId ?? null, decision: d.decision ?? null, error: d.error ?? null, status: d.status ?? null,
                costUsd: stepCosts.reduce((s, x) => s + x.costUsd, 0), computeMs: stepCosts.reduce((s, x) => s + x.computeMs, 0), traceId: h.meta.traceId ?? null,
              };
            });
          chain.push({ runId: r.id, workflow: r.state.workflow, status: r.state.status, traceId: r.state.traceId ?? null, cause: msg ? { channel: msg.channel, messageId: msg.messageId ?? null, from: msg.customer?.email ?? msg.customer?.handle ?? null, subject: msg.subject ?? null } : null, steps });
        }
        print(o.json, { subject: id, chain }, () => {
          for (const r of chain) {
            console.log(`${r.cause ? `${r.cause.channel} message ${r.cause.messageId ?? ''} from ${r.cause.from ?? '?'}${r.cause.subject ? ` "${r.cause.subject}"` : ''}` : 'run'}\n└─ run ${r.runId} (${r.workflow}, ${r.status}) trace ${r.traceId}`);
            for (const s of r.steps) console.log(`   ├─ ${s.at} ${s.event}${s.step ? ` ${s.step}` : ''}${s.decision ? ` ${s.decision}` : ''} by ${s.by}${s.costUsd || s.computeMs ? ` — $${s.costUsd.toFixed(6)}, ${s.computeMs.toFixed(1)} ms` : ''}${s.error ? ` — ${s.error}` : ''}`);
          }
        });
      } finally {
        await c.close();
      }
    });
}
