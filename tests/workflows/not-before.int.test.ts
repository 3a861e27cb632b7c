/**
 * `notBefore` and `trigger.when` on a real nats-server and SQLite store with an in-process agent:
 * a step held until its time is dispatched by the agent's timer sweep only once the time has
 * come, and a trigger starts runs only for the events its condition accepts.
 */
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { z } from 'zod';
import { connectBus, createBus, natsEventPublisher } from '../../bus/index.ts';
import { openStore, startOutboxRelay } from '../../shared-state/index.ts';
import { WorkflowEngine, defineWorkflow, startTriggers, type RunState } from '../../workflows/index.ts';
import { defineAgent, defineCapability, runAgent } from '../../runtime/index.ts';
import { createLogger } from '../../observability/index.ts';
import { natsSuite, uniqueName, waitFor } from '../helpers/index.ts';
import { ALL_ENTITY_TYPES } from '../helpers/types.ts';

const suite = natsSuite('notbefore');

/** when each task of each run reached its handler (ms since the epoch) */
const ran: Array<{ run?: string; capability: string; at: number; input: unknown }> = [];
const cap = (name: string) =>
  defineCapability({
    name,
    version: '1',
    input: z.record(z.string(), z.unknown()),
    output: z.object({ ok: z.boolean() }),
    async handler(ctx) {
      ran.push({ run: ctx.envelope.correlationId, capability: name, at: Date.now(), input: ctx.input });
      return { ok: true };
    },
  });
const agent = defineAgent({ name: 'pager', version: '1.0.0', capabilities: [cap('nb.prepare'), cap('nb.page'), cap('nb.greet')] });

const paging = defineWorkflow({
  name: 'paging',
  version: 1,
  steps: {
    prepare: { capability: 'nb.prepare', input: { who: '$.input.who' } },
    page: { capability: 'nb.page', after: ['prepare'], notBefore: '$.input.at', input: { who: '$.input.who' } },
  },
});

const vipOnly = defineWorkflow({
  name: 'greet-vip',
  version: 1,
  trigger: { event: 'customer.created', when: { path: '$.input.event.data.name', matches: '^VIP ' } },
  steps: { greet: { capability: 'nb.greet', input: { name: '$.input.event.data.name', customer: '$.input.event.entityId' } } },
});

async function world() {
  const prefix = uniqueName('nb');
  const nc = await connectBus({ servers: suite.nats!.url });
  suite.defer(() => nc.close());
  const bus = createBus(nc, { prefix });
  await bus.provision();
  const store = await openStore(`sqlite:${join(suite.dir, `${prefix}.db`)}`, { types: ALL_ENTITY_TYPES });
  suite.defer(() => store.close());
  const a = await runAgent(agent, { natsUrl: suite.nats!.url, state: store, prefix, sweepMs: 200, logger: createLogger('pager', { level: 'silent' }) });
  suite.defer(() => a.stop(1_000));
  const engine = new WorkflowEngine({ store, bus, actor: { kind: 'system', id: 'test' }, catalog: { paging, 'greet-vip': vipOnly } });
  return { prefix, nc, bus, store, engine };
}

describe('notBefore and trigger conditions (engine + one agent)', () => {
  it('a step with notBefore ~1.5 s ahead is dispatched only after its time, by the timer sweep, and the run completes', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const w = await world();
    const at = new Date(Date.now() + 1_500).toISOString();
    const { runId } = await w.engine.start('paging', { who: 'ada', at });

    // prepare ran; page waits for its time with the run's next wake set to it
    await waitFor(async () => (await w.store.get<RunState>('workflow_run', runId))?.state.steps.page?.status === 'waiting', { what: 'the page step to wait' });
    const waiting = (await w.store.get<RunState>('workflow_run', runId))!.state;
    expect(waiting.steps.page!.waitUntil).toBe(at);
    expect(waiting.nextWakeAt).toBe(at);
    expect(ran.filter((r) => r.run === runId).map((r) => r.capability)).toEqual(['nb.prepare']);

    await waitFor(async () => (await w.store.get<RunState>('workflow_run', runId))?.state.status === 'completed', { timeoutMs: 15_000, what: 'the run to complete' });
    const run = (await w.engine.get(runId))!;
    const page = run.state.steps.page!;
    expect(Date.parse(page.scheduledAt!)).toBeGreaterThanOrEqual(Date.parse(at));
    const handled = ran.find((r) => r.run === runId && r.capability === 'nb.page')!;
    expect(handled.at).toBeGreaterThanOrEqual(Date.parse(at));
    expect(handled.input).toEqual({ who: 'ada' });
    // the order of the history, and who scheduled the page: the agent's timer sweep, not the starter
    const types = run.history.map((h) => `${h.type}${(h.data as { step?: string }).step ? `:${(h.data as { step: string }).step}` : ''}`);
    expect(types.indexOf('step_waiting:page')).toBeGreaterThan(types.indexOf('step_completed:prepare'));
    expect(types.indexOf('step_scheduled:page')).toBeGreaterThan(types.indexOf('step_waiting:page'));
    const scheduled = run.history.find((h) => h.type === 'step_scheduled' && (h.data as { step: string }).step === 'page')!;
    expect(scheduled.meta.actor).toEqual({ kind: 'agent', id: 'pager' });
    console.log(`[notBefore] page due ${at}, scheduled ${page.scheduledAt} (+${Date.parse(page.scheduledAt!) - Date.parse(at)} ms, sweep every 200 ms)`);
  }, 30_000);

  it('a trigger with `when` starts a run for a matching event and none for another', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const w = await world();
    const relay = startOutboxRelay(w.store, natsEventPublisher(w.nc), { prefix: w.prefix, intervalMs: 50 });
    suite.defer(() => relay.stop());
    const lines: string[] = [];
    const destination = new Writable({ write: (chunk: Buffer, _enc, cb) => { lines.push(chunk.toString()); cb(); } });
    const triggers = await startTriggers({ bus: w.bus, workflows: w.engine, catalog: { 'greet-vip': vipOnly, paging }, log: createLogger('triggers', { level: 'debug', destination }) });
    suite.defer(() => triggers.stop());

    const actor = { actor: { kind: 'human' as const, id: 'test' } };
    await w.store.append('customer', 'cus-vip', 0, [{ type: 'created', data: { name: 'VIP Ada' } }], actor);
    await w.store.append('customer', 'cus-bob', 0, [{ type: 'created', data: { name: 'Bob' } }], actor);
    // events are handled in order: once the run of a later matching event exists, Bob's was handled
    await w.store.append('customer', 'cus-vip2', 0, [{ type: 'created', data: { name: 'VIP Cy' } }], actor);
    const runs = async () => (await w.store.query<RunState>('workflow_run', { filter: { workflow: 'greet-vip' } })).items;
    await waitFor(async () => (await runs()).filter((r) => r.state.status === 'completed').length === 2, { timeoutMs: 15_000, what: 'two triggered runs to complete' });
    const greeted = (await runs()).map((r) => (r.state.steps.greet!.input as { customer: string }).customer).sort();
    expect(greeted).toEqual(['cus-vip', 'cus-vip2']);
    expect(ran.filter((r) => r.capability === 'nb.greet').map((r) => (r.input as { name: string }).name).sort()).toEqual(['VIP Ada', 'VIP Cy']);
    const skipped = lines.map((l) => JSON.parse(l) as { msg: string; entity?: string; level: number }).filter((l) => l.msg === 'trigger condition false; no run');
    expect(skipped.map((l) => l.entity)).toEqual(['cus-bob']);
    expect(skipped[0]!.level).toBe(20); // debug
  }, 30_000);
});
