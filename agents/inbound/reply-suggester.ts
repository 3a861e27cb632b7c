/**
 * `reply-suggester` — capability `ticket.suggest-reply`: drafts the reply to the ticket's latest
 * inbound message, for the operator to approve (nothing is sent here). Tier 0 fills the intent's
 * template (heuristics.ts `draftReply`) with the customer's first name (from the customer record)
 * and the order/invoice it concerns; its confidence follows the triage's. Below 0.6 a configured
 * model drafts from the whole thread. Writes `reply_suggested`.
 */
import { customerType, ticketType } from './entities.ts';
import { z } from 'zod';
import { defineAgent, defineCapability, PermanentError } from '../../runtime/index.ts';
import { cleanText, draftReply, triageText } from './heuristics.ts';
import { climb } from './models.ts';
import { buildContext, contextSpanAttributes } from '../../memory/index.ts';
import { CUSTOMER, TICKET, earlierTicketPhrase, getTicket, latestInbound, recallEarlierTickets, unansweredInbound, updateTicket, type CustomerState, type EarlierTicket } from './ticket.ts';

/**
 * The tier-0 sentence naming an earlier ticket (English drafts only: the other tier-0 languages
 * have no sentence for it yet, so their drafts stay as they were).
 */
export function earlierTicketSentence(e: EarlierTicket, now = new Date()): string {
  return `As in ${earlierTicketPhrase(e, now)}, we have that history at hand and will take it into account.`;
}

/** The draft with the sentence after its first paragraph of substance (the greeting stays first). */
function withSentence(draft: string, sentence: string): string {
  const parts = draft.split('\n\n');
  if (parts.length < 3) return `${draft}\n\n${sentence}`;
  return [...parts.slice(0, 2), sentence, ...parts.slice(2)].join('\n\n');
}

export const SuggestReplyInput = z.object({ ticketId: z.string().min(1) });
export const SuggestReplyOutput = z.object({
  ticketId: z.string(),
  text: z.string(),
  tier: z.number().int().min(0).max(2),
  confidence: z.number().min(0).max(1),
  /** the customer's messages this reply answers: every one not answered yet, oldest first */
  answers: z.array(z.object({ id: z.string(), from: z.string(), at: z.string(), subject: z.string().optional(), text: z.string() })).optional(),
  /** the long-term memories the draft rests on: shown to the model (tier 1+), or referred to (tier 0) */
  memories: z.array(z.string()).optional(),
  /** earlier tickets of the customer the draft refers to */
  earlierTickets: z.array(z.string()).optional(),
});
export type SuggestReplyInput = z.infer<typeof SuggestReplyInput>;
export type SuggestReplyOutput = z.infer<typeof SuggestReplyOutput>;

export const suggestReply = defineCapability({
  name: 'ticket.suggest-reply',
  version: '1',
  description: 'Draft reply to the latest inbound message of a ticket, for approval.',
  input: SuggestReplyInput,
  output: SuggestReplyOutput,
  permissions: { entityTypes: [TICKET, CUSTOMER], memory: 'read' },
  costClass: 'heuristic',
  timeoutMs: 120_000,
  async handler(ctx): Promise<SuggestReplyOutput> {
    const { ticketId } = ctx.input;
    const ticket = await getTicket(ctx, ticketId);
    const msg = latestInbound(ticket.state);
    if (!msg) throw new PermanentError(`ticket '${ticketId}' has no inbound message to reply to`, { code: 'INBOUND_NOTHING_TO_ANSWER' });
    const customer = ticket.state.customerId ? await ctx.state.get<CustomerState>(CUSTOMER, ticket.state.customerId) : null;
    // triage normally ran first (the workflow orders it so); without it, tier-0 triage here
    const t = ticket.state.triage ?? triageText(cleanText(msg.text), { subject: msg.subject });
    const d0 = draftReply({
      intent: t.intent,
      customerName: customer?.state.name,
      escalate: t.escalate,
      urgency: t.urgency,
      entities: t.entities,
      triageConfidence: t.confidence,
      language: t.language,
      signature: ctx.config.supportSignature,
    });
    // the customer's earlier tickets on the same matter: tier 0 names the best one (only above
    // RECALL_THRESHOLD, in English drafts); a model sees them in its context
    const recall = await recallEarlierTickets(ctx, ticket, `${ticket.state.subject}\n${msg.text}`);
    const referred = d0.language === 'en' ? recall.earlier.slice(0, 1) : [];
    const start = referred.length ? withSentence(d0.text, earlierTicketSentence(referred[0]!)) : d0.text;
    const context = buildContext({
      system: [
        'You draft replies to customers for a small business; the operator approves them before they are sent.',
        'Be brief, warm and concrete. Do not promise refunds, dates or fixes that the thread does not confirm.',
        'If long-term memory below shows an earlier ticket of this customer on the same matter, refer to it by its date.',
        `Address the customer by first name if known, sign as "${ctx.config.supportSignature}". Answer with the reply text only.`,
      ].join(' '),
      summary: ticket.state.summary,
      recent: ticket.state.messages.map((m) => ({ role: m.direction === 'in' ? 'user' : 'assistant', content: m.text, at: m.at, label: `${m.direction === 'in' ? `FROM ${m.from}` : `TO ${m.to ?? m.from}`} via ${m.channel}${m.subject ? ` — ${m.subject}` : ''}` })),
      recentAs: 'text',
      recalled: recall.hits,
      instruction: `Customer: ${customer?.state.name ?? msg.from}\nTriage: intent ${t.intent}, urgency ${t.urgency}, sentiment ${t.sentiment}${t.escalate ? ', escalated to the operator' : ''}\n\nDraft the reply to the customer's latest message. A template draft, for tone:\n${start}`,
      budgetTokens: 5_000,
    });
    const rung = await climb<string>({
      ctx,
      start: { value: start, confidence: d0.confidence },
      // with a small model configured it drafts every reply; an escalated or urgent ticket is
      // high-value and goes to the large model when there is one (models/router.ts)
      force: ctx.hasModel('small'),
      value: t.escalate || t.urgency === 'high' ? 'high' : 'normal',
      // the same customer asking the same thing again (a paraphrase; entities and polarity must
      // match) may get the draft they got before: cached per customer, for a thread's first message
      call: { intent: t.intent, entities: t.entities, cacheable: ticket.state.messages.length <= 1, cacheScope: 'customer', cacheText: msg.text },
      ask: async (call) => {
        ctx.span.setAttributes(contextSpanAttributes(context));
        const answer = (await call(context.messages as { role: 'system' | 'user'; content: string }[])).trim();
        return answer ? { value: answer, confidence: 0.8 } : undefined;
      },
    });
    const memories = rung.tier > 0 ? context.memoryIds : referred.map((e) => e.memoryId);
    const text = rung.value.slice(0, 50_000);
    // a message that arrived while drafting makes this draft stale: the newer message's run drafts
    // the live suggestion, so this one is not recorded as the ticket's
    await updateTicket(ctx, ticketId, (t) => (latestInbound(t.state)?.id !== msg.id ? undefined : [{ type: 'reply_suggested', data: { text, tier: rung.tier, confidence: rung.confidence } }]));
    ctx.logger.info({ ticketId, tier: rung.tier, confidence: rung.confidence, memories, ...(rung.note ? { note: rung.note } : {}), ...(recall.note ? { memoryNote: recall.note } : {}) }, 'reply suggested');
    const answers = unansweredInbound(ticket.state).map((m) => ({ id: m.id, from: m.from, at: m.at, ...(m.subject ? { subject: m.subject } : {}), text: m.text.slice(0, 20_000) }));
    return { ticketId, text, tier: rung.tier, confidence: rung.confidence, answers, memories, earlierTickets: (rung.tier > 0 ? recall.earlier : referred).map((e) => e.ticketId) };
  },
});

export default defineAgent({
  name: 'reply-suggester',
  entities: [customerType, ticketType],
  version: '1.0.0',
  description: 'Reply drafts per intent from templates at tier 0; a model when unsure and configured.',
  capabilities: [suggestReply],
});
