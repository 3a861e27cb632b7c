/**
 * One workflow per memory rule's event (`memory-ticket-message-added` …), triggered by that
 * change-log event: each event gets one durable run whose single step asks the memorizer to
 * write its memories. The trigger derives the run id from the event id, so a redelivered event
 * starts nothing new, and the memorizer writes with ids derived from the event id (idempotent).
 */
import { defineWorkflow, type WorkflowDef } from '../../workflows/index.ts';

/** `ticket.message_added` → `memory-ticket-message-added` */
export const memoryWorkflowName = (event: string) => `memory-${event.toLowerCase().replace(/[^a-z0-9]+/g, '-')}`.replace(/-+$/, '');

export function memoryWorkflows(events: readonly string[]): WorkflowDef[] {
  return [...new Set(events)].sort().map((event) =>
    defineWorkflow({
      name: memoryWorkflowName(event),
      version: 1,
      description: `remembers ${event} events (the memorizer writes what the owning feature's memory rule says)`,
      trigger: { event },
      steps: {
        record: { capability: 'memory.record', input: { event: '$.input.event' }, retry: { maxAttempts: 5, backoffMs: 2_000, factor: 2 } },
      },
    }),
  );
}
