import { defineWorkflow } from '../../workflows/index.ts';

/**
 * Managing inbound customers: every email or chat message becomes (or joins) a ticket; triage,
 * then a summary and a suggested reply in parallel; then the operator approves (default policy)
 * before the sender replies. Urgent or angry messages also escalate to the operator at once.
 */
/** The workflow every inbound message starts. */
export const INBOUND_WORKFLOW = 'inbound-message';

export const inboundMessage = defineWorkflow({
  name: INBOUND_WORKFLOW,
  version: 2,
  description: 'triage → summary ∥ suggested reply → approval → send; escalation for urgent/angry messages',
  // `{ message: InboundMessage }`, checked before a run is started (loaded only then)
  inputSchema: async () => (await import('./input.ts')).InboundRunInput,
  // one live suggestion per ticket: the runs of a ticket take turns once intake has named it, and
  // a new message supersedes the pending suggestion and approval (unless its reply is already
  // being sent: then the new run waits for it and answers the whole thread after it)
  concurrencyKey: '$.steps.intake.output.ticketId',
  supersede: { before: 'send', reason: { $coalesce: [{ $concat: ['new message from ', '$.steps.intake.output.from', ' on ticket ', '$.steps.intake.output.ticketId'] }, { $literal: 'new message on the ticket' }] } },
  // a run that fails (e.g. a task dead-lettered) is escalated to the operator at once
  onFailure: {
    escalate: 'operator.escalate',
    input: { ticketId: '$.steps.intake.output.ticketId', runId: '$.run.id', reason: { $coalesce: ['$.run.error', { $literal: 'the run failed' }] }, failed: { $literal: true } },
  },
  steps: {
    intake: { capability: 'inbound.intake', input: { message: '$.input.message' }, retry: { maxAttempts: 3, backoffMs: 1_000, factor: 2 } },
    triage: { capability: 'ticket.triage', after: ['intake'], input: { ticketId: '$.steps.intake.output.ticketId', messageId: '$.steps.intake.output.messageId' } },
    escalate: {
      capability: 'operator.escalate',
      after: ['triage'],
      when: { path: '$.steps.triage.output.escalate', equals: true },
      input: { ticketId: '$.steps.intake.output.ticketId', reason: { $literal: 'triage: urgent or angry message' } },
    },
    summarize: { capability: 'ticket.summarize', after: ['triage'], input: { ticketId: '$.steps.intake.output.ticketId' } },
    suggest: { capability: 'ticket.suggest-reply', after: ['triage'], input: { ticketId: '$.steps.intake.output.ticketId' } },
    approve: {
      after: ['summarize', 'suggest'],
      approval: {
        action: 'reply.send',
        // KEEL_POLICY_REPLY_EMAIL / KEEL_POLICY_REPLY_CHAT = approve (default) | audit | auto
        policy: { $coalesce: [{ $concat: ['reply.', '$.steps.intake.output.channel'] }, { $literal: 'reply.email' }] },
        subject: '$.steps.intake.output.ticketId',
        // `keel approvals` shows customer, subject and the reply's first line; `keel approval show` the reply and the message it answers
        payload: {
          ticketId: '$.steps.intake.output.ticketId',
          channel: '$.steps.intake.output.channel',
          text: '$.steps.suggest.output.text',
          summary: '$.steps.summarize.output.summary',
          customer: '$.steps.intake.output.from',
          subject: '$.steps.intake.output.ticketSubject',
          message: { id: '$.steps.intake.output.messageId', from: '$.steps.intake.output.from', subject: '$.steps.intake.output.subject', text: '$.steps.intake.output.text', at: '$.steps.intake.output.receivedAt' },
          // every customer message the reply answers (the whole unanswered part of the thread)
          answers: '$.steps.suggest.output.answers',
        },
        deadlineMs: 24 * 3_600_000,
        onTimeout: { escalate: 'operator.escalate', input: { ticketId: '$.steps.intake.output.ticketId', reason: { $literal: 'approval not answered in time' } } },
      },
    },
    send: {
      capability: 'message.send',
      after: ['approve'],
      when: { path: '$.steps.approve.output.decision', equals: 'approved' },
      input: {
        ticketId: '$.steps.intake.output.ticketId',
        text: { $coalesce: ['$.steps.approve.output.text', '$.steps.suggest.output.text'] },
        approvedBy: '$.steps.approve.output.by',
      },
    },
  },
});
