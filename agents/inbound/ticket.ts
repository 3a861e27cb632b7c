/**
 * Reading and writing the canonical ticket from a task: typed state, optimistic concurrency
 * with retries, and provenance (the run and trace that wrote it) on every write.
 */
import { createHash } from 'node:crypto';
import { PermanentError, type TaskContext } from '../../runtime/index.ts';
import { isStateError, type Entity, type EventInput } from '../../shared-state/index.ts';

export const TICKET = 'ticket';
export const CUSTOMER = 'customer';

export interface TicketMessage {
  id: string;
  direction: 'in' | 'out';
  channel: 'email' | 'chat';
  from: string;
  to?: string;
  subject?: string;
  text: string;
  at: string;
  messageId?: string;
  inReplyTo?: string;
  references?: string[];
  attachments?: TicketAttachment[];
}

/** A file that came with a message; its content is in the attachments store (`path`) when `stored`. */
export interface TicketAttachment {
  filename: string;
  contentType: string;
  size: number;
  sha256: string;
  stored: boolean;
  path?: string;
}

export interface TicketTriage {
  intent: string;
  urgency: 'low' | 'normal' | 'high';
  sentiment: 'negative' | 'neutral' | 'positive';
  entities: string[];
  confidence: number;
  tier: number;
  escalate: boolean;
  reasons: string[];
  messageId?: string;
  language?: string;
}

/** The ticket's state (shared-state/entity-types.ts `ticketType`, schema version 2). */
export interface TicketState {
  subject: string;
  status: 'open' | 'pending' | 'escalated' | 'resolved' | 'closed';
  priority: 'low' | 'normal' | 'high' | 'urgent';
  channel?: 'email' | 'chat' | 'phone' | 'other';
  customerId?: string;
  customerEmail?: string;
  customerHandle?: string;
  conversationId?: string;
  threadKey?: string;
  assignee?: string;
  messages: TicketMessage[];
  triage?: TicketTriage;
  summary?: string;
  suggestion?: { text: string; tier: number; confidence: number; supersededAt?: string; supersededReason?: string };
  approval?: { id: string; state: 'pending' | 'approved' | 'rejected' | 'expired'; decidedBy?: string; at?: string };
  escalated?: boolean;
  lastRunId?: string;
  traceIds: string[];
  tags: string[];
}

export interface CustomerState {
  name: string;
  email?: string;
  status: 'lead' | 'active' | 'churned';
  tags: string[];
  notes?: string;
}

const MAX_ATTEMPTS = 10;
const MAX_TRACE_IDS = 200;

export const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

/** `cus-` + 16 hex of sha256 of the lowercased address, or of `handle:<handle>` for chat handles. */
export function customerIdFor(c: { email?: string | undefined; handle?: string | undefined }): string | undefined {
  if (c.email) return `cus-${sha256(c.email.trim().toLowerCase()).slice(0, 16)}`;
  if (c.handle) return `cus-${sha256(`handle:${c.handle.trim().toLowerCase()}`).slice(0, 16)}`;
  return undefined;
}

/** `tkt-` + 16 hex of sha256 of `<channel>:<thread key>`: every intake of one thread names the same ticket. */
export function ticketIdFor(channel: 'email' | 'chat', threadKey: string): string {
  return `tkt-${sha256(`${channel}:${threadKey}`).slice(0, 16)}`;
}

/** The ticket, or a permanent error (a task for a ticket that does not exist is never retried). */
export async function getTicket(ctx: TaskContext<unknown>, ticketId: string): Promise<Entity<TicketState>> {
  const t = await ctx.state.get<TicketState>(TICKET, ticketId);
  if (!t || t.deleted) throw new PermanentError(`ticket '${ticketId}' does not exist`, { code: 'INBOUND_TICKET_NOT_FOUND' });
  return t;
}

/** The inbound message to work on: the one named, else the latest from the customer. */
export function latestInbound(t: TicketState, messageId?: string): TicketMessage | undefined {
  if (messageId) {
    const m = t.messages.find((x) => x.id === messageId || x.messageId === messageId);
    if (m) return m;
  }
  return [...t.messages].reverse().find((m) => m.direction === 'in');
}

/**
 * The suggested reply still waiting for the operator: there is one, it was not superseded, and
 * nothing was sent since the customer last wrote (the last message is theirs).
 */
export function pendingSuggestion(t: TicketState): boolean {
  return !!t.suggestion && !t.suggestion.supersededAt && t.messages.at(-1)?.direction === 'in';
}

/** The customer's messages not answered yet, oldest first, up to `upTo` (default: all): a reply answers all of them. */
export function unansweredInbound(t: TicketState, upTo?: TicketMessage): TicketMessage[] {
  const end = upTo ? t.messages.findIndex((m) => m.id === upTo.id) : t.messages.length - 1;
  const out: TicketMessage[] = [];
  for (let i = end; i >= 0; i--) {
    const m = t.messages[i]!;
    if (m.direction === 'out') break;
    out.unshift(m);
  }
  return out;
}

/** The `updated` event that records which run and trace wrote to the ticket, when that changed. */
export function provenance(ctx: TaskContext<unknown>, t: Pick<TicketState, 'lastRunId' | 'traceIds'> | undefined): EventInput[] {
  const runId = ctx.envelope.correlationId;
  const traceId = ctx.span?.spanContext().traceId;
  const patch: Record<string, unknown> = {};
  if (runId && t?.lastRunId !== runId) patch.lastRunId = runId;
  const ids = t?.traceIds ?? [];
  if (traceId && /^[0-9a-f]{32}$/.test(traceId) && !/^0+$/.test(traceId) && !ids.includes(traceId)) patch.traceIds = [...ids, traceId].slice(-MAX_TRACE_IDS);
  return Object.keys(patch).length ? [{ type: 'updated', data: patch }] : [];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Read-modify-append with optimistic concurrency: `build` sees the current ticket and returns
 * the events to append (none: nothing to do); on a version conflict it runs again on the fresh
 * ticket. Provenance is appended with the events.
 */
export async function updateTicket(
  ctx: TaskContext<unknown>,
  ticketId: string,
  build: (t: Entity<TicketState>) => EventInput[] | undefined,
): Promise<Entity<TicketState>> {
  for (let attempt = 1; ; attempt++) {
    const t = await getTicket(ctx, ticketId);
    const events = build(t);
    if (!events || events.length === 0) return t;
    try {
      const r = await ctx.state.append<TicketState>(TICKET, ticketId, t.version, [...events, ...provenance(ctx, t.state)]);
      return r.entity;
    } catch (err) {
      if (isStateError(err, 'STATE_VERSION_CONFLICT') && attempt < MAX_ATTEMPTS) {
        await sleep(Math.random() * 20 * attempt);
        continue;
      }
      throw err;
    }
  }
}

/** Retries `fn` on version conflicts (for create-or-append flows that are not a plain update). */
export async function withConflictRetry<T>(fn: (attempt: number) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (isStateError(err, 'STATE_VERSION_CONFLICT') && attempt < MAX_ATTEMPTS) {
        await sleep(Math.random() * 20 * attempt);
        continue;
      }
      throw err;
    }
  }
}

/** The whole thread as readable text, oldest first (for operators and models). */
export function renderThread(t: TicketState, opts: { maxChars?: number } = {}): string {
  const parts = t.messages.map((m) => {
    const head = `[${m.at}] ${m.direction === 'in' ? 'FROM' : 'TO'} ${m.direction === 'in' ? m.from : (m.to ?? m.from)} via ${m.channel}${m.subject ? ` — ${m.subject}` : ''}`;
    return `${head}\n${m.text.trim()}`;
  });
  const text = parts.join('\n\n---\n\n');
  const max = opts.maxChars ?? Infinity;
  return text.length > max ? `...${text.slice(text.length - max + 3)}` : text;
}
