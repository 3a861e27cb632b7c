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
  version: 1,
  description: 'triage → summary ∥ suggested reply → approval → send; escalation for urgent/angry messages',
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
        payload: { ticketId: '$.steps.intake.output.ticketId', channel: '$.steps.intake.output.channel', text: '$.steps.suggest.output.text', summary: '$.steps.summarize.output.summary' },
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
