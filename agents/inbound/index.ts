/**
 * The inbound-customer agents (issue #7): one module and one OS process each.
 *
 * ```ts
 * import { runAgent } from './agents/runtime/index.ts';
 * import { intakeAgent, triageAgent } from './agents/inbound/index.ts';
 * await runAgent(intakeAgent, { natsUrl, state: 'sqlite:.keel/keel.db' });
 * await runAgent(triageAgent, { natsUrl, state: 'sqlite:.keel/keel.db', models: createModelRegistry() }); // tiers 1-2 when unsure
 * // or: keel agent start intake | triage | summarizer | reply-suggester | sender | escalation
 * ```
 *
 * | capability | agent | input | output |
 * | --- | --- | --- | --- |
 * | `inbound.intake` | intake | `{ message: InboundMessage }` | `{ ticketId, customerId, messageId, isNew, text, subject?, channel }` |
 * | `ticket.triage` | triage | `{ ticketId, messageId? }` | `{ ticketId, intent, urgency, sentiment, entities, confidence, tier, escalate, reasons }` |
 * | `ticket.summarize` | summarizer | `{ ticketId }` | `{ ticketId, summary, tier }` |
 * | `ticket.suggest-reply` | reply-suggester | `{ ticketId }` | `{ ticketId, text, tier, confidence }` |
 * | `message.send` | sender | `{ ticketId, text, approvalId?, approvedBy? }` | `{ ticketId, channel, messageId, to, path? }` |
 * | `operator.escalate` | escalation | `{ ticketId, reason }` | `{ ticketId, notified, messages }` |
 *
 * See docs/inbound.md.
 */
export { default as intakeAgent, intake, IntakeInput, IntakeOutput, threadKeyOf } from './intake.ts';
export { default as triageAgent, triage, TriageInput, TriageOutput, TRIAGE_SYSTEM_PROMPT } from './triage.ts';
export { default as summarizerAgent, summarize, SummarizeInput, SummarizeOutput } from './summarizer.ts';
export { default as replySuggesterAgent, suggestReply, SuggestReplyInput, SuggestReplyOutput } from './reply-suggester.ts';
export { default as senderAgent, send, SendInput, SendOutput } from './sender.ts';
export { default as escalationAgent, escalate, EscalateInput, EscalateOutput, operatorNotification } from './escalation.ts';

export {
  INTENTS, URGENCIES, SENTIMENTS, CONFIDENCE_THRESHOLD, TriageSchema,
  cleanText, htmlToText, triageText, extractEntities, summarizeThread, draftReply, firstName, extractJson, parseModelTriage,
} from './heuristics.ts';
export type { Intent, Urgency, Sentiment, Triage, TriageOptions, ThreadMessage, SummaryOptions, DraftInput } from './heuristics.ts';

export { climb } from './models.ts';
export type { Rung, LadderOptions, ModelTier } from './models.ts';
export { mailConfig, mailSender, closeMailSenders } from './mail.ts';
export type { MailConfig } from './mail.ts';
export { customerIdFor, ticketIdFor, latestInbound, renderThread, updateTicket, TICKET, CUSTOMER } from './ticket.ts';
export type { TicketState, TicketMessage, TicketTriage, CustomerState } from './ticket.ts';
