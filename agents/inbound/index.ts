/**
 * The inbound-customers feature: email and chat messages become canonical tickets that agents
 * triage, summarize and answer, with the operator approving what is sent. Everything the feature
 * owns lives in this folder: its entity types (customer, ticket, conversation), the
 * `inbound-message` workflow, the ingress (SMTP and chat channels feeding the bus) and six
 * agents, each its own process.
 *
 * ```ts
 * import { runAgent, loadAgent } from './runtime/index.ts';
 * import { inbound } from './agents/inbound/index.ts';
 * const triage = await loadAgent(inbound.agents.triage!.module);
 * await runAgent(triage, { natsUrl, state: 'sqlite:.keel/keel.db' });
 * // or: keel agent start intake | triage | summarizer | reply-suggester | sender | escalation
 * ```
 *
 * | capability | agent | input | output |
 * | --- | --- | --- | --- |
 * | `inbound.intake` | intake | `{ message: InboundMessage }` | `{ ticketId, customerId, messageId, isNew, text, subject?, channel }` |
 * | `ticket.triage` | triage | `{ ticketId, messageId? }` | `{ ticketId, intent, urgency, sentiment, entities, confidence, tier, escalate, reasons }` |
 * | `triage.learn` | triage | `{ reason? }` | `{ trained, examples?, operatorExamples?, featurizer?, temperature?, eceAfter?, trainMs?, note? }` |
 * | `ticket.summarize` | summarizer | `{ ticketId }` | `{ ticketId, summary, tier }` |
 * | `ticket.suggest-reply` | reply-suggester | `{ ticketId }` | `{ ticketId, text, tier, confidence }` |
 * | `message.send` | sender | `{ ticketId, text, approvalId?, approvedBy? }` | `{ ticketId, channel, messageId, to, path? }` |
 * | `operator.escalate` | escalation | `{ ticketId, reason }` | `{ ticketId, notified, messages }` |
 *
 * See docs/inbound.md.
 */
import { defineFeature } from '../../runtime/index.ts';
import { INBOUND_ENTITY_TYPES } from './entities.ts';
import { inboundMessage } from './workflow.ts';
import { triageExampleType } from './learned.ts';
import { TICKET_MEMORY } from './ticket.ts';

const agent = (file: string, description: string) => ({ module: new URL(file, import.meta.url).href, default: true, description });

export const inbound = defineFeature({
  name: 'inbound',
  description: 'Inbound customers: email and chat → canonical tickets → triage, summary, suggested reply → approval → send; escalation.',
  // the operator's triage decisions (learned.ts) are the feature's too
  entities: [...INBOUND_ENTITY_TYPES, triageExampleType],
  workflows: [inboundMessage],
  agents: {
    intake: agent('./intake.ts', 'inbound.intake: puts each inbound email/chat message on the canonical ticket of its thread'),
    triage: agent('./triage.ts', 'ticket.triage: intent, urgency, sentiment, entities, escalate (rules, the learned tier, a model when unsure); triage.learn'),
    summarizer: agent('./summarizer.ts', 'ticket.summarize: summary of the whole ticket thread'),
    'reply-suggester': agent('./reply-suggester.ts', 'ticket.suggest-reply: reply draft for approval'),
    sender: agent('./sender.ts', 'message.send: sends an approved reply once (email threaded, chat recorded)'),
    escalation: agent('./escalation.ts', 'operator.escalate: notifies the operator with the whole ticket history'),
  },
  // what the memory agent remembers of tickets: inbound messages, summaries, histories
  memory: TICKET_MEMORY,
  ingress: () => import('./ingress.ts'),
});
export default inbound;

export { customerType, ticketType, conversationType, INBOUND_ENTITY_TYPES } from './entities.ts';
export { inboundMessage, INBOUND_WORKFLOW } from './workflow.ts';
export { TRIAGE_EXAMPLE, triageExampleType, recordExample, forgetExample, listExamples, exampleIdFor, LearnedTriage, corpusEmbeddingsCache, loadTriageCorpus, corpusExamples, defaultFeaturizer, ngramFeaturizer, exampleText, expectedCalibrationError } from './learned.ts';
export type { TriageExampleState, CorpusItem, Featurizer, LabeledExample, LearnedPrediction } from './learned.ts';
export { INTENTS, URGENCIES, cleanText, triageText, ESCALATION_RULES } from './heuristics.ts';
export type { Intent, Urgency } from './heuristics.ts';
export { customerIdFor, ticketIdFor, TICKET, CUSTOMER, TICKET_MEMORY, RECALL_THRESHOLD } from './ticket.ts';
export { resolveCustomer } from './customers.ts';
export type { ResolvedCustomer } from './customers.ts';
export type { TicketState, TicketMessage, TicketTriage, TicketAttachment, CustomerState } from './ticket.ts';
export { planCustomerErasure, eraseCustomer, compactSqliteFile, CUSTOMER_PERSONAL_FIELDS, TICKET_PERSONAL_FIELDS, CONVERSATION_PERSONAL_FIELDS, RUN_PERSONAL_FIELDS } from './erase.ts';
export type { ErasurePlan, ErasureReport, ErasureTarget, EraseDeps } from './erase.ts';
