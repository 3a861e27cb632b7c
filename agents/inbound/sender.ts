/**
 * `sender` — capability `message.send`: sends an (approved) reply to the ticket's latest inbound
 * message and records it on the ticket as `reply_sent` (status `pending`: waiting on the
 * customer). The workflow's approval gate decides whether this task exists at all; this agent
 * only sends what it is given.
 *
 * Email: `buildReply` threads it (To the customer, `Re:` subject, In-Reply-To = the message's
 * Message-ID, References = its References + its Message-ID), and the mail is sent inside
 * `ctx.effect('send')` with the effect's key as the mail's idempotency key, so a redelivered or
 * republished task never sends twice (the outbox file and Message-ID derive from the key).
 * Chat: the reply is recorded on the ticket only; pushing it to the customer's socket is the
 * chat channel's job (it follows the ticket's `reply_sent` events).
 */
import { ticketType } from './entities.ts';
import { z } from 'zod';
import { buildReply } from '../../channels/index.ts';
import { defineAgent, defineCapability, PermanentError } from '../../runtime/index.ts';
import type { EventInput } from '../../shared-state/index.ts';
import { mailConfig, mailSender } from './mail.ts';
import { TICKET, getTicket, latestInbound, sha256, updateTicket, type TicketMessage } from './ticket.ts';

export const SendInput = z.object({
  ticketId: z.string().min(1),
  text: z.string().min(1).max(50_000),
  /** the approval that allowed it (recorded on the ticket) */
  approvalId: z.string().min(1).optional(),
  /** who approved it; a human-approved mail is not marked Auto-Submitted */
  approvedBy: z.string().min(1).optional(),
});
export const SendOutput = z.object({
  ticketId: z.string(),
  channel: z.enum(['email', 'chat']),
  /** email: the RFC 5322 Message-ID of the sent mail; chat: the message's id on the ticket */
  messageId: z.string(),
  to: z.string(),
  /** email: the `.eml` in the outbox */
  path: z.string().optional(),
});
export type SendInput = z.infer<typeof SendInput>;
export type SendOutput = z.infer<typeof SendOutput>;

export const send = defineCapability({
  name: 'message.send',
  version: '1',
  description: 'Sends the reply to the latest inbound message of a ticket (email threaded; chat recorded), exactly once per task.',
  input: SendInput,
  output: SendOutput,
  permissions: { entityTypes: [TICKET], secrets: ['SMTP_PASSWORD'] },
  costClass: 'none',
  timeoutMs: 60_000,
  maxDeliver: 10,
  async handler(ctx): Promise<SendOutput> {
    const { ticketId, text, approvalId, approvedBy } = ctx.input;
    const ticket = await getTicket(ctx, ticketId);
    const parent = latestInbound(ticket.state);
    if (!parent) throw new PermanentError(`ticket '${ticketId}' has no inbound message to reply to`, { code: 'INBOUND_NOTHING_TO_ANSWER' });
    const outId = `out-${sha256(`${ctx.capability}:${ctx.envelope.idempotencyKey}`).slice(0, 24)}`;
    const now = new Date().toISOString();
    let out: SendOutput;
    let recorded: TicketMessage;

    if (parent.channel === 'email') {
      const to = ticket.state.customerEmail ?? (parent.from.includes('@') ? parent.from : undefined);
      if (!to) throw new PermanentError(`ticket '${ticketId}' has no customer email to reply to`, { code: 'INBOUND_NO_ADDRESS' });
      const cfg = mailConfig(ctx.config, ctx.secrets.SMTP_PASSWORD);
      const mail = buildReply(
        { customer: { email: to }, subject: parent.subject ?? ticket.state.subject, ...(parent.messageId ? { messageId: parent.messageId } : {}), references: parent.references ?? [] },
        // approved by a person: a normal reply; let through by policy (policy:auto, policy:audit): auto-replied (RFC 3834)
        { text, autoSubmitted: !approvedBy || approvedBy.startsWith('policy:'), headers: { 'X-Keel-Ticket': ticketId } },
      );
      // only the ticket's own customer and thread participants may receive its reply
      assertRecipientsOnTicket(ticketId, ticket.state, mail);
      const sent = await ctx.effect('send', async (key) => {
        const r = await ctx.connector('smtp', () => mailSender(cfg).send({ ...mail, idempotencyKey: key }));
        // audited with the send (once: a redelivery reads the recorded effect); ids and a count, never the address
        await auditSent(ctx, 'email.sent', ticketId, { messageId: r.messageId, recipients: [mail.to, mail.cc ?? []].flat().length, customerId: ticket.state.customerId ?? null, approvalId: approvalId ?? null });
        return r;
      });
      ctx.logger.info({ ticketId, messageId: sent.messageId, path: sent.path, duplicate: sent.duplicate, relayed: sent.relayed }, 'reply sent');
      out = { ticketId, channel: 'email', messageId: sent.messageId, to, path: sent.path };
      recorded = { id: outId, direction: 'out', channel: 'email', from: cfg.from, to, subject: mail.subject, text, at: now, messageId: sent.messageId };
      if (mail.inReplyTo) recorded.inReplyTo = mail.inReplyTo;
      if (mail.references?.length) recorded.references = mail.references.slice(-100);
    } else {
      const to = ticket.state.customerHandle ?? ticket.state.customerEmail ?? parent.from;
      out = { ticketId, channel: 'chat', messageId: outId, to };
      recorded = { id: outId, direction: 'out', channel: 'chat', from: 'support', to, text, at: now };
    }

    let fresh = false;
    await updateTicket(ctx, ticketId, (t) => {
      fresh = false;
      if (t.state.messages.some((m) => m.id === outId)) return undefined; // recorded by an earlier delivery
      fresh = true;
      const events: EventInput[] = [];
      if (approvalId) events.push({ type: 'updated', data: { approval: { id: approvalId, state: 'approved', ...(approvedBy ? { decidedBy: approvedBy } : {}), at: now } } });
      events.push({ type: 'reply_sent', data: recorded });
      return events;
    });
    if (out.channel === 'chat' && fresh) await auditSent(ctx, 'chat.sent', ticketId, { messageId: outId, recipients: 1, customerId: ticket.state.customerId ?? null, approvalId: approvalId ?? null });
    return out;
  },
});

/** An outbound message in the audit log (a failure to audit is logged, never fails the send). */
async function auditSent(ctx: { state: { audit?: (action: string, subject: string, details?: Record<string, unknown>) => Promise<unknown> }; logger: { error(o: object, msg: string): void } }, action: 'email.sent' | 'chat.sent', ticketId: string, details: Record<string, unknown>): Promise<void> {
  await ctx.state.audit?.(action, `ticket/${ticketId}`, details).catch((err: unknown) => ctx.logger.error({ err, ticketId, action }, 'outbound message could not be audited'));
}

/**
 * A reply goes only to people on the ticket: its customer and the senders of its inbound messages.
 * Anyone else (a model's answer or an injected instruction cannot add one; this is the last check
 * before the mail leaves) fails the task permanently: INBOUND_RECIPIENT_NOT_ON_TICKET.
 */
export function assertRecipientsOnTicket(ticketId: string, t: { customerEmail?: string; messages: TicketMessage[] }, mail: { to: string | string[]; cc?: string | string[] }): void {
  const norm = (a: string) => (/<([^<>]+)>\s*$/.exec(a)?.[1] ?? a).trim().toLowerCase();
  const onTicket = new Set([t.customerEmail, ...t.messages.filter((m) => m.direction === 'in').map((m) => m.from)].filter((a): a is string => !!a && a.includes('@')).map(norm));
  const outside = [mail.to, mail.cc ?? []].flat().map(norm).filter((a) => !onTicket.has(a));
  if (outside.length) throw new PermanentError(`reply on ticket '${ticketId}' names recipients not on the ticket: ${outside.join(', ')} (only its customer and thread participants may get it)`, { code: 'INBOUND_RECIPIENT_NOT_ON_TICKET' });
}

export default defineAgent({
  name: 'sender',
  entities: [ticketType],
  version: '1.0.0',
  description: 'Sends approved replies: email threaded through the mail sender (once per task), chat recorded on the ticket.',
  capabilities: [send],
  connectors: { smtp: { failureThreshold: 5, resetMs: 30_000 } },
});
