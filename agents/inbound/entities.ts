/**
 * The inbound feature's entity types: the customer, the canonical ticket of a thread, and the
 * conversation. Declared here, with the feature that owns them; the agents list them in
 * `defineAgent({ entities })` and the engine opens the store with them.
 */
import { z } from 'zod';
import { defineEntityType, type EntityTypeDef, type State } from '../../shared-state/index.ts';

const tags = z.array(z.string().min(1).max(64)).max(100).default([]);
const isoTime = z.iso.datetime({ offset: true });
const priority = z.enum(['low', 'normal', 'high', 'urgent']).default('normal');

export const customerType = defineEntityType({
  name: 'customer',
  schemaVersion: 1,
  schema: z.strictObject({
    name: z.string().min(1).max(200),
    email: z.email().optional(),
    phone: z.string().max(50).optional(),
    company: z.string().max(200).optional(),
    status: z.enum(['lead', 'active', 'churned']).default('lead'),
    tags,
    notes: z.string().max(20_000).optional(),
  }),
  searchFields: ['name', 'email', 'company', 'tags', 'notes'],
  // redacted from prompts to cloud models (docs/data-protection.md)
  sensitive: ['email', 'phone'],
});

/**
 * The ticket is the canonical record of an inbound-customer thread: every message in and out,
 * and every agent's contribution (triage, summary, suggested reply, approval, escalation) as a
 * semantic event, so its history reads as what happened. Schema version 2 (v1 had no thread).
 */
/** One file of a message: what it is and where its content is stored (`KEEL_DATA_DIR/attachments/<sha256>`). */
const ticketAttachment = z.strictObject({
  /** the sender's file name, reduced to its last path segment */
  filename: z.string().max(255),
  contentType: z.string().max(200),
  size: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  /** false when the content was not kept (over the size limit, or no attachments dir) */
  stored: z.boolean(),
  /** absolute path of the stored content, when stored */
  path: z.string().max(4096).optional(),
});
const ticketMessage = z.strictObject({
  /** unique within the ticket: the inbound message's id, or the outbound message's */
  id: z.string().min(1).max(200),
  direction: z.enum(['in', 'out']),
  channel: z.enum(['email', 'chat']),
  from: z.string().min(1).max(500),
  to: z.string().max(2000).optional(),
  subject: z.string().max(1000).optional(),
  text: z.string().max(200_000),
  at: isoTime,
  /** RFC 5322 Message-ID, `<...>` */
  messageId: z.string().max(1000).optional(),
  inReplyTo: z.string().max(1000).optional(),
  references: z.array(z.string().max(1000)).max(100).optional(),
  /** the files that came with the message (email); contents stay in the attachments store */
  attachments: z.array(ticketAttachment).max(100).optional(),
});
const ticketTriage = z.strictObject({
  intent: z.string().min(1).max(64),
  urgency: z.enum(['low', 'normal', 'high']),
  sentiment: z.enum(['negative', 'neutral', 'positive']),
  entities: z.array(z.string().max(200)).max(100),
  confidence: z.number().min(0).max(1),
  /** 0 heuristics, 1 small model, 2 large model */
  tier: z.number().int().min(0).max(2),
  escalate: z.boolean(),
  reasons: z.array(z.string().max(500)).max(50),
  /** the message it triaged */
  messageId: z.string().max(200).optional(),
  /** the message's language as detected at tier 0 (ISO 639-1, e.g. `de`; `und` when unknown) */
  language: z.string().min(2).max(16).optional(),
});
const ticketSuggestion = z.strictObject({
  text: z.string().max(50_000),
  tier: z.number().int().min(0).max(2),
  confidence: z.number().min(0).max(1),
  /** a newer message made it stale: never sent; the run of that message drafts the next one */
  supersededAt: isoTime.optional(),
  supersededReason: z.string().max(2000).optional(),
});
const suggestionSuperseded = z.strictObject({ reason: z.string().max(2000), messageId: z.string().max(200).optional(), at: isoTime });
const ticketApproval = z.strictObject({
  id: z.string().min(1),
  state: z.enum(['pending', 'approved', 'rejected', 'expired']),
  decidedBy: z.string().optional(),
  at: isoTime.optional(),
});
const ticketEscalation = z.strictObject({
  reason: z.string().max(2000),
  /** who was told (e.g. the operator's address) */
  notified: z.string().max(500).optional(),
  at: isoTime,
});
type TicketMessage = z.infer<typeof ticketMessage>;
type TicketTriage = z.infer<typeof ticketTriage>;

const withMessage = (state: State, m: TicketMessage): State => {
  const messages = (Array.isArray(state.messages) ? state.messages : []) as TicketMessage[];
  if (messages.some((x) => x.id === m.id)) return state; // replays and redeliveries add a message once
  return { ...state, messages: [...messages, m] };
};
const urgencyPriority = { low: 'low', normal: 'normal', high: 'high' } as const;

export const ticketType = defineEntityType({
  name: 'ticket',
  schemaVersion: 2,
  schema: z.strictObject({
    subject: z.string().min(1).max(500),
    status: z.enum(['open', 'pending', 'escalated', 'resolved', 'closed']).default('open'),
    priority,
    channel: z.enum(['email', 'chat', 'phone', 'other']).optional(),
    customerId: z.string().optional(),
    customerEmail: z.string().max(320).optional(),
    customerHandle: z.string().max(200).optional(),
    conversationId: z.string().optional(),
    /** email: the thread root's Message-ID; chat: the conversation id */
    threadKey: z.string().max(1000).optional(),
    assignee: z.string().optional(),
    messages: z.array(ticketMessage).max(5000).default([]),
    triage: ticketTriage.optional(),
    summary: z.string().max(20_000).optional(),
    suggestion: ticketSuggestion.optional(),
    approval: ticketApproval.optional(),
    escalated: z.boolean().optional(),
    /** the workflow run that last touched the ticket */
    lastRunId: z.string().optional(),
    /** trace ids of the tasks that wrote to it, oldest first */
    traceIds: z.array(z.string().max(64)).max(1000).default([]),
    tags,
  }),
  searchFields: ['subject', 'summary', 'tags', 'customerId', 'customerEmail', 'customerHandle', 'threadKey'],
  // redacted from prompts to cloud models (docs/data-protection.md)
  sensitive: ['customerEmail'],
  events: {
    /** data = one message; an id already on the ticket is ignored */
    message_added: ticketMessage,
    /** data = the triage; sets priority from urgency, and status `escalated` when it escalates */
    triaged: ticketTriage,
    summarized: z.strictObject({ summary: z.string().max(20_000), tier: z.number().int().min(0).max(2) }),
    reply_suggested: ticketSuggestion,
    /** a new message arrived while the suggestion waited for the operator: it is marked superseded (data: why, the message, when) */
    suggestion_superseded: suggestionSuperseded,
    /** data = the outbound message; the ticket then waits on the customer (`pending`) */
    reply_sent: ticketMessage.extend({ direction: z.literal('out') }),
    escalated: ticketEscalation,
  },
  reduce: (state, e) => {
    switch (e.type) {
      case 'message_added': {
        const m = e.data as TicketMessage;
        const next = withMessage(state, m);
        // a customer writing again reopens a ticket that was waiting on them or done
        if (next !== state && m.direction === 'in' && ['pending', 'resolved', 'closed'].includes(String(state.status))) return { ...next, status: 'open' };
        return next;
      }
      case 'triaged': {
        const t = e.data as TicketTriage;
        const next: State = { ...state, triage: t, priority: t.escalate ? 'urgent' : urgencyPriority[t.urgency] };
        if (t.escalate) next.status = 'escalated';
        return next;
      }
      case 'summarized':
        return { ...state, summary: (e.data as { summary: string }).summary };
      case 'reply_suggested':
        return { ...state, suggestion: e.data };
      case 'suggestion_superseded': {
        if (!state.suggestion) return state;
        const d = e.data as z.infer<typeof suggestionSuperseded>;
        return { ...state, suggestion: { ...(state.suggestion as object), supersededAt: d.at, supersededReason: d.reason } };
      }
      case 'reply_sent':
        return { ...withMessage(state, e.data as TicketMessage), status: 'pending' };
      case 'escalated':
        return { ...state, escalated: true, status: 'escalated' };
      default:
        return state;
    }
  },
});

const message = z.strictObject({
  id: z.string().optional(),
  from: z.string().min(1),
  direction: z.enum(['in', 'out']),
  text: z.string().max(200_000),
  at: isoTime,
});

export const conversationType = defineEntityType({
  name: 'conversation',
  schemaVersion: 1,
  schema: z.strictObject({
    channel: z.enum(['email', 'chat', 'phone', 'other']),
    subject: z.string().max(500).optional(),
    customerId: z.string().optional(),
    participants: z.array(z.string()).default([]),
    status: z.enum(['open', 'closed']).default('open'),
    messages: z.array(message).default([]),
  }),
  searchFields: ['subject', 'participants', 'messages'],
  events: { message_added: message },
  reduce: (state, e) => {
    if (e.type === 'message_added') {
      const messages = Array.isArray(state.messages) ? state.messages : [];
      return { ...state, messages: [...messages, e.data] };
    }
    return state;
  },
});


/** Every entity type the inbound feature owns. */
export const INBOUND_ENTITY_TYPES: readonly EntityTypeDef[] = [customerType, ticketType, conversationType];
