/**
 * `summarizer` — capability `ticket.summarize`: a short summary of the whole thread, written to
 * the ticket as `summarized`. Tier 0 is extractive (heuristics.ts `summarizeThread`: wink-nlp
 * sentences scored by the thread's frequent content words and support cues). Its confidence is
 * how much of the thread it covers; below 0.6 (long threads) a configured model writes an
 * abstractive summary instead.
 */
import { ticketType } from './entities.ts';
import { z } from 'zod';
import { defineAgent, defineCapability } from '../../runtime/index.ts';
import { summarizeThread } from './heuristics.ts';
import { climb } from './models.ts';
import { buildContext, contextSpanAttributes } from '../../memory/index.ts';
import { TICKET, earlierTicketPhrase, getTicket, latestInbound, recallEarlierTickets, updateTicket } from './ticket.ts';

export const SummarizeInput = z.object({ ticketId: z.string().min(1) });
export const SummarizeOutput = z.object({
  ticketId: z.string(),
  summary: z.string(),
  tier: z.number().int().min(0).max(2),
  /** the long-term memories the summary rests on: shown to the model (tier 1+), or referred to (tier 0) */
  memories: z.array(z.string()).optional(),
  /** earlier tickets of the customer the summary mentions */
  earlierTickets: z.array(z.string()).optional(),
});
export type SummarizeInput = z.infer<typeof SummarizeInput>;
export type SummarizeOutput = z.infer<typeof SummarizeOutput>;

const MAX_SUMMARY = 20_000;

export const summarize = defineCapability({
  name: 'ticket.summarize',
  version: '1',
  description: 'Summary of the whole ticket thread (extractive at tier 0).',
  input: SummarizeInput,
  output: SummarizeOutput,
  permissions: { entityTypes: [TICKET], memory: 'read' },
  costClass: 'heuristic',
  timeoutMs: 120_000,
  async handler(ctx): Promise<SummarizeOutput> {
    const { ticketId } = ctx.input;
    const ticket = await getTicket(ctx, ticketId);
    const s0 = summarizeThread(ticket.state.messages, { triage: ticket.state.triage });
    // the customer's earlier tickets on the same matter (long-term memory, above RECALL_THRESHOLD)
    const latest = latestInbound(ticket.state);
    const recall = await recallEarlierTickets(ctx, ticket, `${ticket.state.subject}\n${latest?.text ?? ''}`);
    const earlier = recall.earlier.slice(0, 2);
    const start = earlier.length ? `${s0.summary} Earlier: ${earlier.map((e) => `${earlierTicketPhrase(e).replace(/^your /, '')} (${e.ticketId})`).join('; ')}.` : s0.summary;
    const context = buildContext({
      system: 'Summarize this customer support thread for the operator in at most 5 short sentences: what the customer wants, what was done, what is still open. If an earlier ticket of the customer from long-term memory is relevant, mention it with its date. Plain text only.',
      recent: ticket.state.messages.map((m) => ({ role: m.direction === 'in' ? 'user' : 'assistant', content: m.text, at: m.at, label: `${m.direction === 'in' ? `FROM ${m.from}` : `TO ${m.to ?? m.from}`} via ${m.channel}${m.subject ? ` — ${m.subject}` : ''}` })),
      recentAs: 'text',
      recalled: recall.hits,
      instruction: 'Write the summary of the thread now.',
      budgetTokens: 6_000,
    });
    const rung = await climb<string>({
      ctx,
      start: { value: start, confidence: s0.confidence },
      ask: async (call) => {
        ctx.span.setAttributes(contextSpanAttributes(context));
        const answer = (await call(context.messages as { role: 'system' | 'user'; content: string }[])).trim();
        return answer ? { value: answer, confidence: 0.85 } : undefined;
      },
    });
    const summary = rung.value.slice(0, MAX_SUMMARY);
    // what the summary rests on: the memories the model was shown, or those tier 0 refers to
    const memories = rung.tier > 0 ? context.memoryIds : earlier.map((e) => e.memoryId);
    await updateTicket(ctx, ticketId, () => [{ type: 'summarized', data: { summary, tier: rung.tier } }]);
    ctx.logger.info({ ticketId, tier: rung.tier, chars: summary.length, memories, ...(rung.note ? { note: rung.note } : {}), ...(recall.note ? { memoryNote: recall.note } : {}) }, 'summarized');
    return { ticketId, summary, tier: rung.tier, memories, earlierTickets: earlier.map((e) => e.ticketId) };
  },
});

export default defineAgent({
  name: 'summarizer',
  entities: [ticketType],
  version: '1.0.0',
  description: 'Ticket summaries: extractive at tier 0, a model for long threads when configured.',
  capabilities: [summarize],
});
