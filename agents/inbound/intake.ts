/**
 * `intake` — capability `inbound.intake`: puts one inbound message (email or chat) on the
 * canonical ticket of its thread, creating the customer and the ticket when they are new.
 *
 * Ids are derived, so concurrent intakes of one thread converge on one ticket: the customer is
 * `cus-<sha256(lowercased email | handle:<handle>)>`, the ticket `tkt-<sha256(channel:threadKey)>`
 * where the thread key is the email's thread root Message-ID (channels' `threadRootOf`) or the
 * chat conversation id. The message is appended once: a message whose id (or Message-ID) is
 * already on the ticket is not added again.
 */
import { customerType, ticketType } from './entities.ts';
import { z } from 'zod';
import { InboundMessageSchema, normalizeMessageId, replySubject, threadRootOf, type InboundMessage } from '../../channels/index.ts';
import { defineAgent, defineCapability, PermanentError, type TaskContext } from '../../runtime/index.ts';
import type { EventInput } from '../../shared-state/index.ts';
import { cleanText } from './heuristics.ts';
import {
  CUSTOMER, TICKET, customerIdFor, pendingSuggestion, provenance, ticketIdFor, withConflictRetry,
  type CustomerState, type TicketMessage, type TicketState,
} from './ticket.ts';

export const IntakeInput = z.object({ message: InboundMessageSchema });
export const IntakeOutput = z.object({
  ticketId: z.string(),
  customerId: z.string(),
  /** the message's id on the ticket (the first delivery's, for a duplicate) */
  messageId: z.string(),
  /** true when this message opened the ticket */
  isNew: z.boolean(),
  /** the customer's words (HTML stripped, quoted history cut) */
  text: z.string(),
  subject: z.string().optional(),
  channel: z.enum(['email', 'chat']),
  /** who wrote it: the address or handle recorded on the message */
  from: z.string().optional(),
  /** the ticket's subject (the thread's, without `Re:`) */
  ticketSubject: z.string().optional(),
  receivedAt: z.string().optional(),
});
export type IntakeInput = z.infer<typeof IntakeInput>;
export type IntakeOutput = z.infer<typeof IntakeOutput>;

const emailOk = (s: string | undefined) => s !== undefined && z.email().safeParse(s).success;

/** The thread key: the email's thread root Message-ID, or the chat conversation id. */
export function threadKeyOf(msg: InboundMessage): string {
  if (msg.channel === 'email') return threadRootOf(msg) ?? msg.conversationId ?? `<${msg.id}@keel.invalid>`;
  return msg.conversationId ?? msg.id;
}

/** The ticket's subject: the email's subject without `Re:` chains, or the chat's opening words. */
function subjectOf(msg: InboundMessage, text: string): string {
  const s = msg.subject ? replySubject(msg.subject).replace(/^Re:\s*/, '').trim() : '';
  if (s) return s.slice(0, 500);
  const words = text.replace(/\s+/g, ' ').trim();
  if (words) return words.length > 80 ? `${words.slice(0, 77)}...` : words;
  return msg.channel === 'chat' ? 'Chat conversation' : '(no subject)';
}

function nameOf(msg: InboundMessage): string {
  const n = msg.customer.name?.trim();
  if (n) return n.slice(0, 200);
  return (msg.customer.email ?? msg.customer.handle ?? 'unknown customer').slice(0, 200);
}

async function ensureCustomer(ctx: TaskContext<IntakeInput>, customerId: string, msg: InboundMessage): Promise<void> {
  await withConflictRetry(async () => {
    const cur = await ctx.state.get<CustomerState>(CUSTOMER, customerId);
    const name = nameOf(msg);
    if (!cur) {
      const tags = [msg.channel, ...(msg.customer.handle ? [`handle:${msg.customer.handle}`.slice(0, 64)] : [])];
      const data: Record<string, unknown> = { name, status: 'lead', tags };
      if (emailOk(msg.customer.email)) data.email = msg.customer.email!.toLowerCase();
      await ctx.state.append(CUSTOMER, customerId, 0, [{ type: 'created', data }]);
      return;
    }
    // learn what the record lacks: a real name (it was created from an address), a channel
    const patch: Record<string, unknown> = {};
    const tags = cur.state.tags ?? [];
    if (msg.customer.name?.trim() && cur.state.name !== name && cur.state.name === (msg.customer.email ?? msg.customer.handle)) patch.name = name;
    if (!tags.includes(msg.channel)) patch.tags = [...tags, msg.channel].slice(0, 100);
    if (!cur.state.email && emailOk(msg.customer.email)) patch.email = msg.customer.email!.toLowerCase();
    if (Object.keys(patch).length) await ctx.state.append(CUSTOMER, customerId, cur.version, [{ type: 'updated', data: patch }]);
  });
}

function ticketMessageOf(msg: InboundMessage, text: string): TicketMessage {
  const m: TicketMessage = {
    id: msg.id,
    direction: 'in',
    channel: msg.channel,
    from: (msg.customer.email ?? msg.customer.handle ?? msg.customer.name ?? 'unknown').slice(0, 500),
    text: text.slice(0, 200_000),
    at: msg.receivedAt,
  };
  const to = msg.envelope?.rcptTo.join(', ');
  if (to) m.to = to.slice(0, 2000);
  if (msg.subject) m.subject = msg.subject.slice(0, 1000);
  const mid = normalizeMessageId(msg.messageId);
  if (mid) m.messageId = mid;
  const irt = normalizeMessageId(msg.inReplyTo);
  if (irt) m.inReplyTo = irt;
  if (msg.references.length) m.references = msg.references.slice(-100);
  if (msg.attachments.length) m.attachments = msg.attachments.slice(0, 100).map((a) => ({ filename: a.filename.slice(0, 255), contentType: a.contentType.slice(0, 200), size: a.size, sha256: a.sha256, stored: a.stored, ...(a.path ? { path: a.path } : {}) }));
  return m;
}

export const intake = defineCapability({
  name: 'inbound.intake',
  version: '1',
  description: 'Puts an inbound email or chat message on the canonical ticket of its thread (find-or-create customer and ticket).',
  input: IntakeInput,
  output: IntakeOutput,
  permissions: { entityTypes: [CUSTOMER, TICKET] },
  costClass: 'none',
  timeoutMs: 30_000,
  async handler(ctx): Promise<IntakeOutput> {
    const msg = ctx.input.message;
    const customerId = customerIdFor(msg.customer) ?? (msg.conversationId ? customerIdFor({ handle: `conversation:${msg.conversationId}` }) : undefined);
    if (!customerId) throw new PermanentError(`message ${msg.id} names no customer (no email, handle or conversation)`, { code: 'INBOUND_NO_CUSTOMER' });
    // the customer's own words; an HTML-only mail may carry its text only in `html`
    const text = cleanText(msg.text.trim() ? msg.text : (msg.html ?? ''));
    const threadKey = threadKeyOf(msg);
    const ticketId = ticketIdFor(msg.channel, threadKey);
    const message = ticketMessageOf(msg, text);
    ctx.span?.setAttributes({ 'keel.ticket': ticketId, 'keel.customer': customerId });

    await ensureCustomer(ctx, customerId, msg);

    const result = await withConflictRetry(async () => {
      const cur = await ctx.state.get<TicketState>(TICKET, ticketId);
      if (!cur) {
        const created: Record<string, unknown> = {
          subject: subjectOf(msg, text),
          status: 'open',
          channel: msg.channel,
          customerId,
          conversationId: threadKey,
          threadKey,
          messages: [],
        };
        if (msg.customer.email) created.customerEmail = msg.customer.email.toLowerCase().slice(0, 320);
        if (msg.customer.handle) created.customerHandle = msg.customer.handle.slice(0, 200);
        const events: EventInput[] = [{ type: 'created', data: created }, { type: 'message_added', data: message }, ...provenance(ctx, undefined)];
        await ctx.state.append(TICKET, ticketId, 0, events);
        return { isNew: true, messageId: message.id, subject: created.subject as string };
      }
      const dup = cur.state.messages.find((m) => m.id === message.id || (message.messageId !== undefined && m.messageId === message.messageId));
      if (dup) {
        ctx.logger.info({ ticketId, messageId: dup.id }, 'message already on the ticket: not adding it again');
        return { isNew: false, messageId: dup.id, subject: cur.state.subject };
      }
      const events: EventInput[] = [{ type: 'message_added', data: message }];
      // the suggestion still waiting for the operator no longer answers the thread: this message's run drafts the one that does
      if (pendingSuggestion(cur.state)) events.push({ type: 'suggestion_superseded', data: { reason: `new message from ${message.from}`, messageId: message.id, at: new Date().toISOString() } });
      await ctx.state.append(TICKET, ticketId, cur.version, [...events, ...provenance(ctx, cur.state)]);
      return { isNew: false, messageId: message.id, subject: cur.state.subject };
    });

    return {
      ticketId,
      customerId,
      messageId: result.messageId,
      isNew: result.isNew,
      text,
      ...(msg.subject !== undefined ? { subject: msg.subject } : {}),
      channel: msg.channel,
      from: message.from,
      ticketSubject: result.subject,
      receivedAt: message.at,
    };
  },
});

export default defineAgent({
  name: 'intake',
  entities: [customerType, ticketType],
  version: '1.0.0',
  description: 'Inbound intake: every email and chat message lands on the canonical ticket of its thread.',
  capabilities: [intake],
});
