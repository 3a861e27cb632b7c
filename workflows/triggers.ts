import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { Bus, EventConsumerHandle } from '../bus/index.ts';
import type { CommittedEvent } from '../shared-state/index.ts';
import type { WorkflowEngine } from './engine.ts';
import type { WorkflowDef } from './definition.ts';
import { evaluate } from './expr.ts';

/**
 * Entity-event triggers: a workflow declaring `trigger: { event: 'ticket.created' }` gets a run
 * for every such event on the bus (from the state's outbox). One durable consumer per workflow;
 * the run id is derived from the event id, so a redelivered event starts nothing new. With
 * `trigger.when`, the condition is read from `{ input: { event } }` (`$.input.event.data.x`,
 * `$.input.event.entityId`, ...) and an event for which it is false is acked without a run.
 */
export async function startTriggers(o: { bus: Bus; workflows: WorkflowEngine; catalog: Record<string, WorkflowDef>; log: Logger }): Promise<{ stop(): Promise<void> }> {
  const consumers: EventConsumerHandle[] = [];
  for (const def of Object.values(o.catalog)) {
    if (!def.trigger) continue;
    const [entityType, eventType] = def.trigger.event.split('.') as [string, string];
    // new triggers fire for events from now on, not for the whole history
    const consumer = await o.bus.consumeEvents({
      durable: `trigger_${def.name.replace(/[^A-Za-z0-9_]/g, '_')}`,
      entityType,
      maxDeliver: 10,
      ackWaitMs: 30_000,
      retryDelayMs: 1_000,
      handler: async (m) => {
        const e = m.json<CommittedEvent>();
        if (e.type !== eventType) return;
        const when = def.trigger?.when;
        if (when && !evaluate(when, { input: { event: e }, steps: {}, run: { id: '' } })) {
          o.log.debug({ workflow: def.name, event: `${e.entityType}.${e.type}`, entity: e.entityId, eventId: e.eventId }, 'trigger condition false; no run');
          return;
        }
        const runId = `trg-${createHash('sha256').update(`${def.name}\n${e.eventId}`).digest('hex').slice(0, 24)}`;
        const r = await o.workflows.start(def, { event: e }, { runId, causationId: e.eventId });
        if (r.created) o.log.info({ workflow: def.name, runId, event: `${e.entityType}.${e.type}`, entity: e.entityId }, 'workflow triggered by entity event');
      },
      onError: (err) => o.log.warn({ err, workflow: def.name }, 'trigger failed; will retry'),
    });
    consumers.push(consumer);
    o.log.info({ workflow: def.name, event: def.trigger.event }, 'workflow trigger armed');
  }
  return {
    stop: async () => {
      await Promise.all(consumers.map((c) => c.stop()));
    },
  };
}
