/**
 * Reading and writing the canonical ticket from a task: typed state, optimistic concurrency
 * with retries, and provenance (the run and trace that wrote it) on every write.
 */
import { createHash } from 'node:crypto';
import { trace } from '@opentelemetry/api';
import { PermanentError, type MemoryRule, type TaskContext } from '../../runtime/index.ts';
import { isStateError, type Entity, type EventInput } from '../../shared-state/index.ts';
import type { RecallHit } from '../../memory/index.ts';

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

// ---- long-term memory ------------------------------------------------------------------------

const clip = (s: string, n: number) => (s.length > n ? `${s.slice(0, n - 1)}…` : s);
const stateOf = (entity: Entity | null) => (entity && !entity.deleted ? (entity.state as unknown as TicketState) : undefined);

/**
 * What the inbound feature remembers (the memory agent writes it, agents/memory/): every inbound
 * message (with the ticket's subject), the ticket's latest summary (replacing the previous one),
 * and its event history once a reply is sent or it is escalated (replacing the previous one).
 */
export const TICKET_MEMORY: readonly MemoryRule[] = [
  {
    event: 'ticket.message_added',
    toMemory(e, entity) {
      const m = e.data as TicketMessage;
      const t = stateOf(entity);
      if (m.direction !== 'in' || !m.text.trim()) return [];
      const subject = m.subject ?? t?.subject;
      return [{
        kind: 'message',
        text: clip(`${subject ? `${subject}\n` : ''}${m.text.trim()}`, 8_000),
        ...(t?.customerId ? { customerId: t.customerId } : {}),
        entityType: TICKET,
        entityId: e.entityId,
        createdAt: m.at,
        importance: 0.5,
        meta: { ...(subject ? { subject: clip(subject, 300) } : {}), channel: m.channel, from: m.from, messageId: m.id },
      }];
    },
  },
  {
    event: 'ticket.summarized',
    toMemory(e, entity) {
      const t = stateOf(entity);
      const summary = (e.data as { summary: string }).summary.trim();
      if (!summary) return [];
      return [{
        kind: 'summary',
        text: clip(`${t?.subject ? `${t.subject}\n` : ''}${summary}`, 8_000),
        ...(t?.customerId ? { customerId: t.customerId } : {}),
        entityType: TICKET,
        entityId: e.entityId,
        importance: 0.6,
        replacesPrevious: true,
        meta: t?.subject ? { subject: clip(t.subject, 300) } : {},
      }];
    },
  },
  ...(['reply_sent', 'escalated'] as const).map((type): MemoryRule => ({
    event: `ticket.${type}`,
    needsHistory: true,
    toMemory(e, entity, history = []) {
      const t = stateOf(entity);
      if (!t) return [];
      const day = (iso: string) => iso.slice(0, 10);
      const lines = [`Ticket "${t.subject}" (${t.channel ?? 'unknown channel'}), opened ${day(history[0]?.time ?? e.time)}.`];
      for (const h of history) {
        if (h.type === 'triaged') {
          const g = h.data as TicketTriage;
          lines.push(`${day(h.time)}: triaged as ${g.intent}, urgency ${g.urgency}, sentiment ${g.sentiment}${g.escalate ? ', escalated' : ''}.`);
        } else if (h.type === 'escalated') lines.push(`${day(h.time)}: escalated to the operator (${clip((h.data as { reason: string }).reason, 200)}).`);
        else if (h.type === 'reply_sent') lines.push(`${day(h.time)}: reply sent: ${clip((h.data as TicketMessage).text.replace(/\s+/g, ' ').trim(), 300)}`);
        else if (h.type === 'message_added' && (h.data as TicketMessage).direction === 'in') lines.push(`${day(h.time)}: the customer wrote.`);
      }
      return [{
        kind: 'history',
        text: clip(lines.join('\n'), 8_000),
        ...(t.customerId ? { customerId: t.customerId } : {}),
        entityType: TICKET,
        entityId: e.entityId,
        importance: 0.4,
        replacesPrevious: true,
        meta: { subject: clip(t.subject, 300), status: t.status },
      }];
    },
  })),
];

/**
 * Recall refers to an earlier ticket only when its best memory scores at least this (the fused
 * score of memory/fusion.ts, 0..1, under the default weights). Measured with the default
 * embedder (all-MiniLM-L6-v2): a paraphrase of an earlier request with no word in common scores
 * about 0.4, one sharing words 0.55–0.6; an unrelated earlier ticket of the same customer
 * 0.14–0.2 (a recent memory's recency and importance alone give ≈ 0.13).
 */
export const RECALL_THRESHOLD = 0.35;

/** An earlier ticket of the same customer that recall found relevant. */
export interface EarlierTicket {
  ticketId: string;
  subject: string | undefined;
  /** when the recalled memory happened (ISO) */
  at: string;
  text: string;
  score: number;
  memoryId: string;
}

export interface TicketRecall {
  /** every hit above the threshold from other tickets of the customer, best first */
  hits: RecallHit[];
  /** the best hit per earlier ticket, best first */
  earlier: EarlierTicket[];
  /** why nothing was recalled (no customer, no memory, the store failed) */
  note?: string;
}

/**
 * What long-term memory holds about this customer's OTHER tickets that is relevant to `query`
 * (a `search_memory` span records it). Never fails the task: without memory (no permission, the
 * model not provisioned, the store down) it returns nothing and says why.
 */
export async function recallEarlierTickets(ctx: TaskContext<unknown>, t: Entity<TicketState>, query: string, opts: { limit?: number; threshold?: number } = {}): Promise<TicketRecall> {
  const customerId = t.state.customerId;
  if (!customerId) return { hits: [], earlier: [], note: 'the ticket has no customer' };
  const threshold = opts.threshold ?? RECALL_THRESHOLD;
  const asOf = t.state.messages.filter((m) => m.direction === 'in').at(-1)?.at;
  const span = trace.getTracer('keel.inbound').startSpan('search_memory', { attributes: { 'gen_ai.operation.name': 'search_memory', 'keel.customer': customerId } });
  try {
    // recorded like a side effect: a retried task recalls the same, and a replay reads it back
    const found = await ctx.effect('memory-recall', async () => {
      const memory = await ctx.memory();
      span.setAttribute('gen_ai.memory.store.id', memory.info.url);
      // a customer with nothing remembered from another ticket (a first contact) has nothing to
      // recall: no query is embedded, and this process never loads the embedding model for it
      const others = await memory.list({ customerId, limit: 500 });
      if (!others.some((m) => (m.entityId ?? m.source.entityId) !== t.entityId && (!asOf || m.createdAt <= asOf))) return [];
      // only what happened before this ticket's latest message: a task run late (a retry, a
      // redelivery) must not call a ticket opened after this one "earlier"
      return memory.search({ text: clip(query, 4_000), customerId, kind: ['message', 'summary', 'history'], limit: opts.limit ?? 20, ...(asOf ? { until: asOf } : {}) });
    });
    const hits = found.filter((h) => h.memory.entityId !== t.entityId && h.memory.source.entityId !== t.entityId && h.score >= threshold && (!asOf || h.memory.createdAt <= asOf));
    const best = new Map<string, RecallHit>();
    for (const h of hits) {
      const id = h.memory.entityId ?? h.memory.source.entityId ?? h.memory.id;
      if (!best.has(id)) best.set(id, h);
    }
    const earlier = [...best.entries()].map(([ticketId, h]) => ({
      ticketId,
      subject: typeof h.memory.meta?.subject === 'string' ? h.memory.meta.subject : undefined,
      at: h.memory.createdAt,
      text: h.memory.text,
      score: Math.round(h.score * 1000) / 1000,
      memoryId: h.memory.id,
    }));
    span.setAttributes({ 'gen_ai.memory.record.count': hits.length, 'keel.memory.ids': hits.map((h) => h.memory.id), 'keel.memory.threshold': threshold });
    return { hits, earlier };
  } catch (err) {
    ctx.logger.warn({ err }, 'long-term memory unavailable: no earlier tickets recalled');
    span.setAttribute('error.type', (err as { code?: string }).code ?? 'memory_unavailable');
    return { hits: [], earlier: [], note: `memory unavailable: ${(err as Error).message}` };
  } finally {
    span.end();
  }
}

/** "May 3" (this year) or "May 3, 2023", in UTC. */
export function ticketDate(iso: string, now = new Date()): string {
  const d = new Date(iso);
  const sameYear = d.getUTCFullYear() === now.getUTCFullYear();
  return d.toLocaleDateString('en-US', { month: 'long', day: 'numeric', ...(sameYear ? {} : { year: 'numeric' }), timeZone: 'UTC' });
}

/** One line naming an earlier ticket: `your ticket of May 3 about "Refund for order 1234"`. */
export function earlierTicketPhrase(e: EarlierTicket, now = new Date()): string {
  return `your ticket of ${ticketDate(e.at, now)}${e.subject ? ` about "${clip(e.subject, 120)}"` : ''}`;
}
