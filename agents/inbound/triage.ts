/**
 * `triage` — capability `ticket.triage`: intent, urgency, sentiment, entities and whether to
 * escalate, for the ticket's latest inbound message (or the one named). Tier 0 heuristics
 * (heuristics.ts `triageText`); below confidence 0.6 the small model (then the large one), when
 * configured, answers in JSON. Writes `triaged` to the ticket (which sets its priority, and its
 * status to `escalated` when it escalates).
 */
import { ticketType } from './entities.ts';
import { z } from 'zod';
import { defineAgent, defineCapability, PermanentError, type TaskContext } from '../../runtime/index.ts';
import { CONFIDENCE_THRESHOLD, INTENTS, REPEAT_CONTACTS, SENTIMENTS, TriageSchema, URGENCIES, cleanText, parseModelTriage, triageText, type Triage } from './heuristics.ts';
import { TRIAGE_EXAMPLE, learnedTier, triageExampleType } from './learned.ts';
import { climb } from './models.ts';
import { TICKET, getTicket, latestInbound, renderThread, unansweredInbound, updateTicket, type TicketState } from './ticket.ts';

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
  permissions: { entityTypes: [TICKET, TRIAGE_EXAMPLE] },
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
    const priorContacts = await recentContacts(ctx, ticket.state, msg.at, new Set(pending.map((m) => m.id)));
    const rules = triageText(text, { subject: msg.subject, priorContacts });
    // the learned tier (issue 18): its intent when it is sure enough; the rules' escalation always stands
    const t0 = await withLearnedTier(ctx, rules, text, msg.subject);

    const rung = await climb<Triage>({
      ctx,
      start: { value: t0, confidence: t0.confidence },
      // a first message's triage is the same for anyone who asks the same thing (entities and
      // polarity must match): the intent cache may serve it; a thread's is not cached
      call: { intent: t0.intent, entities: t0.entities, cacheable: ticket.state.messages.length <= 1, cacheScope: 'global', cacheText: text },
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
    // the router's decisions (models/router.ts), e.g. "route: tier 1: heuristics unsure (confidence 0.45 < 0.6)"
    if (rung.route) result.reasons = [...result.reasons, ...rung.route.map((r) => `route: tier ${r.tier}: ${r.reason}`)];
    result.reasons = result.reasons.map((r) => r.slice(0, 500)).slice(0, 50);
    result.entities = result.entities.map((e) => e.slice(0, 200)).slice(0, 100);

    await updateTicket(ctx, ticketId, () => [{ type: 'triaged', data: { ...result, messageId: msg.id } }]);
    ctx.logger.info({ ticketId, intent: result.intent, urgency: result.urgency, escalate: result.escalate, tier: result.tier, confidence: result.confidence }, 'triaged');
    return { ...result, ticketId };
  },
});

/**
 * The customer's messages in the {@link REPEAT_CONTACTS} window before `at`, on any of their
 * tickets (their history), not counting the unanswered ones being triaged now.
 */
async function recentContacts(ctx: TaskContext<TriageInput>, t: TicketState, at: string, pending: Set<string>): Promise<number> {
  const end = Date.parse(at);
  const start = end - REPEAT_CONTACTS.windowDays * 86_400_000;
  const tickets = t.customerId ? (await ctx.state.query<TicketState>(TICKET, { filter: { customerId: t.customerId }, limit: 100 })).items.map((e) => e.state) : [t];
  let n = 0;
  for (const tk of tickets) for (const m of tk.messages) if (m.direction === 'in' && !pending.has(m.id) && Date.parse(m.at) >= start && Date.parse(m.at) < end) n++;
  return n;
}

/** The rules' triage with the learned tier's intent when it is sure (calibrated p ≥ 0.6); else why not. */
async function withLearnedTier(ctx: TaskContext<TriageInput>, rules: Triage, text: string, subject: string | undefined): Promise<Triage> {
  let lt;
  try {
    lt = await learnedTier(ctx.config).current(ctx.state);
  } catch (err) {
    ctx.logger.warn({ err }, 'learned tier unavailable: rules only');
    return { ...rules, reasons: [...rules.reasons, `learned tier unavailable (${(err as Error).message}); rules only`] };
  }
  if (!lt.model) return { ...rules, reasons: [...rules.reasons, lt.note ?? 'learned tier off; rules only'] };
  const p = await lt.model.predict(text, subject, rules.intent);
  const r = lt.model.report;
  const about = `${r.examples} examples, ${r.operatorExamples} from the operator`;
  const note = lt.note ? [lt.note] : [];
  if (p.confidence >= CONFIDENCE_THRESHOLD) {
    const agree = p.intent === rules.intent;
    const why = p.follows ? `like the operator's example ${p.follows.id} (similarity ${p.follows.similarity})` : `p ${p.confidence}; ${about}${p.fast ? '; n-gram model, no embedding needed' : ''}`;
    return { ...rules, intent: p.intent, confidence: Math.max(p.confidence, agree ? rules.confidence : 0), reasons: [...rules.reasons, `learned tier: intent ${p.intent} (${why})${agree ? '' : `, over the rules' ${rules.intent}`}`, ...note] };
  }
  // unsure: a configured model is asked (the ladder climbs below the threshold); without one, it says so
  return { ...rules, confidence: Math.min(rules.confidence, p.confidence), reasons: [...rules.reasons, `learned tier unsure: ${p.intent} at p ${p.confidence} (below ${CONFIDENCE_THRESHOLD}); kept the rules' ${rules.intent}`, ...note] };
}

/**
 * `triage.learn`: retrains this replica's learned tier on the corpus and the operator's active
 * examples now (warm, from the current model), and reports it. `keel ticket retriage` and
 * `keel triage forget` enqueue it; any triage replica can take it, and the others retrain in the
 * background on their next triage when they see the examples changed.
 */
export const learn = defineCapability({
  name: 'triage.learn',
  version: '1',
  description: 'Retrains the learned triage tier on the corpus plus the operator\'s examples.',
  input: z.object({ reason: z.string().max(500).optional() }),
  output: z.object({ trained: z.boolean(), note: z.string().optional(), examples: z.number().int().optional(), operatorExamples: z.number().int().optional(), featurizer: z.string().optional(), temperature: z.number().optional(), eceAfter: z.number().optional(), trainMs: z.number().optional() }),
  permissions: { entityTypes: [TRIAGE_EXAMPLE] },
  costClass: 'heuristic',
  timeoutMs: 900_000,
  async handler(ctx) {
    const lt = await learnedTier(ctx.config).current(ctx.state, { wait: true });
    if (!lt.model) return { trained: false, ...(lt.note ? { note: lt.note } : {}) };
    const r = lt.model.report;
    ctx.logger.info({ examples: r.examples, operatorExamples: r.operatorExamples, trainMs: r.trainMs }, 'learned tier trained');
    return { trained: true, examples: r.examples, operatorExamples: r.operatorExamples, featurizer: r.featurizer, temperature: r.temperature, eceAfter: r.eceAfter, trainMs: r.trainMs };
  },
});

export default defineAgent({
  name: 'triage',
  entities: [ticketType, triageExampleType],
  version: '1.0.0',
  description: 'Ticket triage: heuristics first (wink-nlp), then the learned tier, a model only when unsure and configured.',
  capabilities: [triage, learn],
  // the learned tier keeps the corpus's embeddings in the models cache's sibling folder (learned.ts, corpusEmbeddingsCache)
  sandbox: { fsWrite: ['$KEEL_MODELS_DIR/../cache'] },
});
