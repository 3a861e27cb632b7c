import { createHash } from 'node:crypto';
import { jetstreamManager, AckPolicy, DeliverPolicy, type ConsumerMessages } from '@nats-io/jetstream';
import { nanos } from '@nats-io/nats-core';
import type { Logger } from 'pino';
import type { Bus } from '../bus/index.ts';
import type { CommittedEvent } from '../shared-state/index.ts';
import type { WorkflowEngine } from './engine.ts';
import type { WorkflowDef } from './definition.ts';

/**
 * Entity-event triggers: a workflow declaring `trigger: { event: 'ticket.created' }` gets a run
 * for every such event on the bus (from the state's outbox). One durable consumer per workflow;
 * the run id is derived from the event id, so a redelivered event starts nothing new.
 */
export async function startTriggers(o: { bus: Bus; workflows: WorkflowEngine; catalog: Record<string, WorkflowDef>; log: Logger }): Promise<{ stop(): Promise<void> }> {
  const jsm = await jetstreamManager(o.bus.nc);
  const loops: Array<{ msgs: ConsumerMessages; done: Promise<void> }> = [];
  for (const def of Object.values(o.catalog)) {
    if (!def.trigger) continue;
    const [entityType, eventType] = def.trigger.event.split('.') as [string, string];
    const durable = `trigger_${def.name.replace(/[^A-Za-z0-9_]/g, '_')}`;
    const stream = o.bus.subjects.streams.evt;
    try {
      await jsm.consumers.info(stream, durable);
    } catch {
      // new triggers fire for events from now on, not for the whole history
      await jsm.consumers.add(stream, { durable_name: durable, filter_subject: `${o.bus.subjects.prefix}.evt.${entityType}.*`, ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.New, max_deliver: 10, ack_wait: nanos(30_000) });
    }
    const consumer = await o.bus.js.consumers.get(stream, durable);
    const msgs = await consumer.consume({ max_messages: 64 });
    const done = (async () => {
      for await (const m of msgs) {
        try {
          const e = m.json<CommittedEvent>();
          if (e.type === eventType) {
            const runId = `trg-${createHash('sha256').update(`${def.name}\n${e.eventId}`).digest('hex').slice(0, 24)}`;
            const r = await o.workflows.start(def, { event: e }, { runId, causationId: e.eventId });
            if (r.created) o.log.info({ workflow: def.name, runId, event: `${e.entityType}.${e.type}`, entity: e.entityId }, 'workflow triggered by entity event');
          }
          m.ack();
        } catch (err) {
          o.log.warn({ err, workflow: def.name }, 'trigger failed; will retry');
          m.nak(1_000);
        }
      }
    })();
    loops.push({ msgs, done });
    o.log.info({ workflow: def.name, event: def.trigger.event }, 'workflow trigger armed');
  }
  return {
    stop: async () => {
      for (const l of loops) await l.msgs.close().catch(() => undefined);
      await Promise.all(loops.map((l) => l.done.catch(() => undefined)));
    },
  };
}
