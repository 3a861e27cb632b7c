/**
 * `escalation` — capability `operator.escalate`: tells the operator about a ticket that needs a
 * person, with the WHOLE history (every message in and out, the triage, the summary, the
 * suggested reply and the ticket's change log), as an email to `KEEL_OPERATOR_EMAIL` (default
 * `operator@keel.local`) through the same mail sender as replies, sent once per task inside
 * `ctx.effect('notify')`. Appends `escalated` to the ticket.
 */
import { customerType, ticketType } from './entities.ts';
import { z } from 'zod';
import { defineAgent, defineCapability } from '../../runtime/index.ts';
import type { CommittedEvent, Entity } from '../../shared-state/index.ts';
import { mailConfig, mailSender } from './mail.ts';
import { CUSTOMER, TICKET, getTicket, latestInbound, recallEarlierTickets, renderThread, ticketDate, updateTicket, type CustomerState, type EarlierTicket, type TicketState } from './ticket.ts';

export const EscalateInput = z.object({
  /** the ticket; absent when a run failed before it had one (e.g. intake) */
  ticketId: z.string().min(1).optional(),
  reason: z.string().min(1).max(20_000),
  /** the workflow run concerned (a failed run's escalation names it) */
  runId: z.string().min(1).optional(),
  /** the run failed: the operator is told so (subject `[Keel] Run failed: ...`) */
  failed: z.boolean().optional(),
});
export const EscalateOutput = z.object({
  /** absent for a failed run without a ticket */
  ticketId: z.string().optional(),
  /** who was told: the operator's address */
  notified: z.string(),
  /** how many messages of the thread the notification carried */
  messages: z.number().int().nonnegative(),
  /** the long-term memories (earlier tickets of the customer) the notification lists */
  memories: z.array(z.string()).optional(),
});
export type EscalateInput = z.infer<typeof EscalateInput>;
export type EscalateOutput = z.infer<typeof EscalateOutput>;

/** The operator notification: reason, customer, triage, summary, suggestion, the full thread and the change log. */
export function operatorNotification(
  ticket: Entity<TicketState>,
  reason: string,
  customer: CustomerState | undefined,
  history: readonly CommittedEvent[],
  earlier: readonly EarlierTicket[] = [],
): { subject: string; text: string } {
  const t = ticket.state;
  const lines: string[] = [];
  lines.push(`Ticket ${ticket.entityId} needs you: ${reason}`);
  // why triage escalated it: the escalation rules that fired (heuristics.ts ESCALATION_RULES), or the features
  const why = (t.triage?.escalate ? t.triage.reasons : []).filter((r) => r.startsWith('escalate: '));
  for (const w of why) lines.push(`  because: ${w.slice('escalate: '.length)}`);
  lines.push('');
  lines.push(`Subject:   ${t.subject}`);
  lines.push(`Customer:  ${customer?.name ?? '(unknown)'} <${t.customerEmail ?? t.customerHandle ?? t.customerId ?? '?'}>${t.customerId ? ` (${t.customerId})` : ''}`);
  lines.push(`Channel:   ${t.channel ?? '?'}    Status: ${t.status}    Priority: ${t.priority}`);
  if (t.lastRunId) lines.push(`Run:       ${t.lastRunId}`);
  if (t.traceIds.length) lines.push(`Traces:    ${t.traceIds.join(', ')}`);
  if (t.triage) {
    const g = t.triage;
    lines.push('', `Triage (tier ${g.tier}, confidence ${g.confidence}): intent ${g.intent}, urgency ${g.urgency}, sentiment ${g.sentiment}${g.escalate ? ', ESCALATE' : ''}`);
    if (g.entities.length) lines.push(`  entities: ${g.entities.join(', ')}`);
    for (const r of g.reasons) lines.push(`  - ${r}`);
  }
  if (t.summary) lines.push('', 'Summary:', t.summary);
  if (earlier.length) {
    lines.push('', 'Earlier tickets of this customer (recalled from long-term memory):');
    for (const e of earlier) lines.push(`  - ${ticketDate(e.at)} ${e.ticketId}${e.subject ? ` "${e.subject}"` : ''} (score ${e.score}, memory ${e.memoryId}): ${e.text.replace(/\s+/g, ' ').slice(0, 300)}`);
  }
  if (t.suggestion) lines.push('', `Suggested reply (tier ${t.suggestion.tier}, confidence ${t.suggestion.confidence}, not sent):`, t.suggestion.text);
  lines.push('', `Thread (${t.messages.length} message${t.messages.length === 1 ? '' : 's'}, oldest first):`, '', renderThread(t) || '(no messages)');
  lines.push('', 'Change log:');
  for (const e of history) lines.push(`  v${e.version} ${e.time} ${e.type} by ${e.meta.actor.kind}:${e.meta.actor.id}${e.meta.correlationId ? ` run ${e.meta.correlationId}` : ''}${e.meta.traceId ? ` trace ${e.meta.traceId}` : ''}`);
  const tag = /^run .*failed: /.test(reason) ? 'Run failed' : t.triage?.urgency === 'high' ? 'URGENT' : 'Escalated';
  return { subject: `[Keel] ${tag}: ${t.subject} (${ticket.entityId})`, text: lines.join('\n') };
}

export const escalate = defineCapability({
  name: 'operator.escalate',
  version: '1',
  description: 'Notifies the operator with the whole ticket history and marks the ticket escalated.',
  input: EscalateInput,
  output: EscalateOutput,
  permissions: { entityTypes: [TICKET, CUSTOMER], secrets: ['SMTP_PASSWORD'], memory: 'read' },
  costClass: 'none',
  timeoutMs: 60_000,
  maxDeliver: 10,
  async handler(ctx): Promise<EscalateOutput> {
    const { ticketId, runId, failed } = ctx.input;
    const reason = failed ? `run ${runId ? `${runId} ` : ''}failed: ${ctx.input.reason}` : ctx.input.reason;
    const operator = ctx.config.operatorEmail;
    if (!ticketId) {
      // a run that failed before it knew its ticket: the run and the reason, and where to look
      const cfg = mailConfig(ctx.config, ctx.secrets.SMTP_PASSWORD);
      const text = [`A workflow run failed before it had a ticket: ${reason}`, '', `Run:  ${runId ?? '(unknown)'}`, '', `See \`keel run show ${runId ?? '<run>'}\` and \`keel dlq list\`.`].join('\n');
      const sent = await ctx.effect('notify', (key) =>
        ctx.connector('smtp', () => mailSender(cfg).send({ to: operator, subject: `[Keel] Run failed: ${runId ?? 'unknown run'}`, text, autoSubmitted: true, headers: runId ? { 'X-Keel-Run': runId } : {}, idempotencyKey: key })),
      );
      ctx.logger.warn({ runId, operator, messageId: sent.messageId, path: sent.path, reason }, 'failed run escalated to the operator');
      return { notified: operator, messages: 0 };
    }
    const ticket = await getTicket(ctx, ticketId);
    const customer = ticket.state.customerId ? await ctx.state.get<CustomerState>(CUSTOMER, ticket.state.customerId) : null;
    const history = await ctx.state.history(TICKET, ticketId);
    const cfg = mailConfig(ctx.config, ctx.secrets.SMTP_PASSWORD);
    const latest = latestInbound(ticket.state);
    const recall = await recallEarlierTickets(ctx, ticket, `${ticket.state.subject}\n${latest?.text ?? ''}`);
    const earlier = recall.earlier.slice(0, 5);
    const note = operatorNotification(ticket, reason, customer?.state, history, earlier);
    const sent = await ctx.effect('notify', (key) =>
      ctx.connector('smtp', () =>
        mailSender(cfg).send({ to: operator, subject: note.subject, text: note.text, autoSubmitted: true, headers: { 'X-Keel-Ticket': ticketId }, idempotencyKey: key }),
      ),
    );
    ctx.logger.warn({ ticketId, operator, messageId: sent.messageId, path: sent.path, reason }, 'escalated to the operator');
    // a redelivery after a crash between the mail and this append: the escalation is already recorded
    const recorded = history.some((e) => e.type === 'escalated' && e.meta.causationId === ctx.envelope.id);
    if (!recorded) {
      const at = new Date().toISOString();
      await updateTicket(ctx, ticketId, () => [{ type: 'escalated', data: { reason: reason.slice(0, 2_000), notified: operator, at } }]);
    }
    return { ticketId, notified: operator, messages: ticket.state.messages.length, ...(earlier.length ? { memories: earlier.map((e) => e.memoryId) } : {}) };
  },
});

export default defineAgent({
  name: 'escalation',
  entities: [customerType, ticketType],
  version: '1.0.0',
  description: 'Escalates tickets to the operator with the whole history.',
  capabilities: [escalate],
  connectors: { smtp: { failureThreshold: 5, resetMs: 30_000 } },
});
