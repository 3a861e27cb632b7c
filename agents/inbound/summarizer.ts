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
import { TICKET, getTicket, renderThread, updateTicket } from './ticket.ts';

export const SummarizeInput = z.object({ ticketId: z.string().min(1) });
export const SummarizeOutput = z.object({ ticketId: z.string(), summary: z.string(), tier: z.number().int().min(0).max(2) });
export type SummarizeInput = z.infer<typeof SummarizeInput>;
export type SummarizeOutput = z.infer<typeof SummarizeOutput>;

const MAX_SUMMARY = 20_000;

export const summarize = defineCapability({
  name: 'ticket.summarize',
  version: '1',
  description: 'Summary of the whole ticket thread (extractive at tier 0).',
  input: SummarizeInput,
  output: SummarizeOutput,
  permissions: { entityTypes: [TICKET] },
  costClass: 'heuristic',
  timeoutMs: 120_000,
  async handler(ctx): Promise<SummarizeOutput> {
    const { ticketId } = ctx.input;
    const ticket = await getTicket(ctx, ticketId);
    const s0 = summarizeThread(ticket.state.messages, { triage: ticket.state.triage });
    const rung = await climb<string>({
      ctx,
      start: { value: s0.summary, confidence: s0.confidence },
      ask: async (call) => {
        const answer = (await call([
          { role: 'system', content: 'Summarize this customer support thread for the operator in at most 5 short sentences: what the customer wants, what was done, what is still open. Plain text only.' },
          { role: 'user', content: renderThread(ticket.state, { maxChars: 24_000 }) },
        ])).trim();
        return answer ? { value: answer, confidence: 0.85 } : undefined;
      },
    });
    const summary = rung.value.slice(0, MAX_SUMMARY);
    await updateTicket(ctx, ticketId, () => [{ type: 'summarized', data: { summary, tier: rung.tier } }]);
    ctx.logger.info({ ticketId, tier: rung.tier, chars: summary.length, ...(rung.note ? { note: rung.note } : {}) }, 'summarized');
    return { ticketId, summary, tier: rung.tier };
  },
});

export default defineAgent({
  name: 'summarizer',
  entities: [ticketType],
  version: '1.0.0',
  description: 'Ticket summaries: extractive at tier 0, a model for long threads when configured.',
  capabilities: [summarize],
});
