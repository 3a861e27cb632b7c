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
import { CUSTOMER, TICKET, getTicket, latestInbound, renderThread, unansweredInbound, updateTicket, type CustomerState } from './ticket.ts';

export const SuggestReplyInput = z.object({ ticketId: z.string().min(1) });
export const SuggestReplyOutput = z.object({
  ticketId: z.string(),
  text: z.string(),
  tier: z.number().int().min(0).max(2),
  confidence: z.number().min(0).max(1),
  /** the customer's messages this reply answers: every one not answered yet, oldest first */
  answers: z.array(z.object({ id: z.string(), from: z.string(), at: z.string(), subject: z.string().optional(), text: z.string() })).optional(),
});
export type SuggestReplyInput = z.infer<typeof SuggestReplyInput>;
export type SuggestReplyOutput = z.infer<typeof SuggestReplyOutput>;

export const suggestReply = defineCapability({
  name: 'ticket.suggest-reply',
  version: '1',
  description: 'Draft reply to the latest inbound message of a ticket, for approval.',
  input: SuggestReplyInput,
  output: SuggestReplyOutput,
  permissions: { entityTypes: [TICKET, CUSTOMER] },
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
    const rung = await climb<string>({
      ctx,
      start: { value: d0.text, confidence: d0.confidence },
      ask: async (call) => {
        const answer = (await call([
          {
            role: 'system',
            content: [
              'You draft replies to customers for a small business; the operator approves them before they are sent.',
              'Be brief, warm and concrete. Do not promise refunds, dates or fixes that the thread does not confirm.',
              `Address the customer by first name if known, sign as "${ctx.config.supportSignature}". Answer with the reply text only.`,
            ].join(' '),
          },
          {
            role: 'user',
            content: `Customer: ${customer?.state.name ?? msg.from}\nTriage: intent ${t.intent}, urgency ${t.urgency}, sentiment ${t.sentiment}${t.escalate ? ', escalated to the operator' : ''}\n\nThread:\n${renderThread(ticket.state, { maxChars: 16_000 })}\n\nA template draft, for tone:\n${d0.text}`,
          },
        ])).trim();
        return answer ? { value: answer, confidence: 0.8 } : undefined;
      },
    });
    const text = rung.value.slice(0, 50_000);
    // a message that arrived while drafting makes this draft stale: the newer message's run drafts
    // the live suggestion, so this one is not recorded as the ticket's
    await updateTicket(ctx, ticketId, (t) => (latestInbound(t.state)?.id !== msg.id ? undefined : [{ type: 'reply_suggested', data: { text, tier: rung.tier, confidence: rung.confidence } }]));
    ctx.logger.info({ ticketId, tier: rung.tier, confidence: rung.confidence, ...(rung.note ? { note: rung.note } : {}) }, 'reply suggested');
    const answers = unansweredInbound(ticket.state).map((m) => ({ id: m.id, from: m.from, at: m.at, ...(m.subject ? { subject: m.subject } : {}), text: m.text.slice(0, 20_000) }));
    return { ticketId, text, tier: rung.tier, confidence: rung.confidence, answers };
  },
});

export default defineAgent({
  name: 'reply-suggester',
  entities: [customerType, ticketType],
  version: '1.0.0',
  description: 'Reply drafts per intent from templates at tier 0; a model when unsure and configured.',
  capabilities: [suggestReply],
});
