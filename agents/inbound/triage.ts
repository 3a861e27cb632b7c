/**
 * `triage` — capability `ticket.triage`: intent, urgency, sentiment, entities and whether to
 * escalate, for the ticket's latest inbound message (or the one named). Tier 0 heuristics
 * (heuristics.ts `triageText`); below confidence 0.6 the small model (then the large one), when
 * configured, answers in JSON. Writes `triaged` to the ticket (which sets its priority, and its
 * status to `escalated` when it escalates).
 */
import { ticketType } from './entities.ts';
import { z } from 'zod';
import { defineAgent, defineCapability, PermanentError } from '../../runtime/index.ts';
import { INTENTS, SENTIMENTS, TriageSchema, URGENCIES, cleanText, parseModelTriage, triageText, type Triage } from './heuristics.ts';
import { climb } from './models.ts';
import { TICKET, getTicket, latestInbound, renderThread, unansweredInbound, updateTicket } from './ticket.ts';

export const TriageInput = z.object({ ticketId: z.string().min(1), messageId: z.string().min(1).optional() });
export const TriageOutput = TriageSchema.extend({ ticketId: z.string() });
export type TriageInput = z.infer<typeof TriageInput>;
export type TriageOutput = z.infer<typeof TriageOutput>;

export const TRIAGE_SYSTEM_PROMPT = [
  'You triage customer support messages for a small business.',
  'Answer with ONE JSON object and nothing else:',
  `{"intent": one of ${INTENTS.map((i) => `"${i}"`).join('|')}, "urgency": ${URGENCIES.map((u) => `"${u}"`).join('|')},`,
  ` "sentiment": ${SENTIMENTS.map((s) => `"${s}"`).join('|')}, "entities": [strings like "ORDER:123", "MONEY:$40"],`,
  ' "confidence": number 0..1, "escalate": true when urgent or the customer is angry, "reasons": [short strings]}',
].join('\n');

export const triage = defineCapability({
  name: 'ticket.triage',
  version: '1',
  description: 'Triage of the latest inbound message on a ticket: intent, urgency, sentiment, entities, escalate.',
  input: TriageInput,
  output: TriageOutput,
  permissions: { entityTypes: [TICKET] },
  costClass: 'heuristic',
  timeoutMs: 120_000,
  async handler(ctx): Promise<TriageOutput> {
    const { ticketId, messageId } = ctx.input;
    const ticket = await getTicket(ctx, ticketId);
    const msg = latestInbound(ticket.state, messageId);
    if (!msg) throw new PermanentError(`ticket '${ticketId}' has no inbound message to triage`, { code: 'INBOUND_NOTHING_TO_TRIAGE' });
    // every customer message not answered yet (this one among them): the reply answers all of
    // them, and an urgent one among them still escalates when a later message superseded its run
    const pending = unansweredInbound(ticket.state);
    const text = (pending.some((m) => m.id === msg.id) ? pending : [msg]).map((m) => cleanText(m.text)).join('\n\n');
    const t0 = triageText(text, { subject: msg.subject });

    const rung = await climb<Triage>({
      ctx,
      start: { value: t0, confidence: t0.confidence },
      ask: async (call, tier) => {
        const history = ticket.state.messages.length > 1 ? `\n\nEarlier in the thread:\n${renderThread({ ...ticket.state, messages: ticket.state.messages.filter((m) => m.id !== msg.id) }, { maxChars: 4_000 })}` : '';
        const answer = await call([
          { role: 'system', content: TRIAGE_SYSTEM_PROMPT },
          { role: 'user', content: `Subject: ${msg.subject ?? '(none)'}\n\n${text.slice(0, 8_000)}${history}` },
        ]);
        const m = parseModelTriage(answer);
        if (!m) return undefined;
        // tier 0's alarms stand: a model does not talk an outage or a legal threat down
        const escalate = m.escalate || t0.escalate;
        const reasons = [...m.reasons, ...(t0.escalate && !m.escalate ? t0.reasons.filter((r) => r.startsWith('urgency') || r.startsWith('escalate')) : [])];
        const entities = [...new Set([...t0.entities, ...m.entities])].slice(0, 20);
        const urgency = t0.urgency === 'high' ? 'high' : m.urgency;
        return { value: { ...m, urgency, entities, escalate, reasons: [`tier ${tier} model`, ...reasons], tier, language: t0.language }, confidence: m.confidence };
      },
    });
    const result: Triage = { ...rung.value, tier: rung.tier, confidence: rung.confidence };
    if (rung.note) result.reasons = [...result.reasons, rung.note];
    result.reasons = result.reasons.map((r) => r.slice(0, 500)).slice(0, 50);
    result.entities = result.entities.map((e) => e.slice(0, 200)).slice(0, 100);

    await updateTicket(ctx, ticketId, () => [{ type: 'triaged', data: { ...result, messageId: msg.id } }]);
    ctx.logger.info({ ticketId, intent: result.intent, urgency: result.urgency, escalate: result.escalate, tier: result.tier, confidence: result.confidence }, 'triaged');
    return { ...result, ticketId };
  },
});

export default defineAgent({
  name: 'triage',
  entities: [ticketType],
  version: '1.0.0',
  description: 'Ticket triage: heuristics first (wink-nlp), a model only when unsure and configured.',
  capabilities: [triage],
});
