import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createCapabilityTestKit, defineCapability, type CapabilityTestKit } from '../../runtime/index.ts';
import { createModelRegistry, type ScriptedChatModel } from '../../models/index.ts';
import { defineEntityType } from '../../shared-state/index.ts';

// plain unit tests: no nats-server, the kit's own SQLite store in a temp dir

const noteType = defineEntityType({ name: 'note', schemaVersion: 1, schema: z.object({ text: z.string(), charges: z.number().int().default(0) }), searchFields: ['text'] });
const secretType = defineEntityType({ name: 'secret_note', schemaVersion: 1, schema: z.object({ text: z.string() }), searchFields: [] });

const kits: CapabilityTestKit[] = [];
async function kit(o: Omit<Parameters<typeof createCapabilityTestKit>[0], 'entities'> = {}): Promise<CapabilityTestKit> {
  const k = await createCapabilityTestKit({ entities: [noteType, secretType], agent: 'demo', ...o });
  kits.push(k);
  return k;
}
afterEach(async () => {
  for (const k of kits.splice(0)) await k.close();
});

/** A payment provider that really counts: how often the effect's function ran, and with which keys. */
function provider() {
  const keys: string[] = [];
  return {
    keys,
    charge: async (key: string, failOnce = false) => {
      keys.push(key);
      if (failOnce && keys.length === 1) throw new Error('provider down');
      return { chargeId: `ch_${keys.length}` };
    },
  };
}

describe('capability test kit', () => {
  it('ctx.effect runs once per idempotency key: a rerun reads the recorded result back; a failed effect is released and runs again', async () => {
    const k = await kit();
    const p = provider();
    let handlerRuns = 0;
    const charge = defineCapability({
      name: 'demo.charge',
      version: '1',
      input: z.object({ noteId: z.string(), failOnce: z.boolean().default(false) }),
      output: z.object({ chargeId: z.string(), version: z.number() }),
      permissions: { entityTypes: ['note'] },
      async handler(ctx) {
        handlerRuns++;
        const r = await ctx.effect('charge', (key) => p.charge(key, ctx.input.failOnce));
        const cur = await ctx.state.get<{ charges: number }>('note', ctx.input.noteId);
        const { entity } = cur
          ? await ctx.state.append('note', ctx.input.noteId, cur.version, [{ type: 'updated', data: { charges: cur.state.charges + 1 } }])
          : await ctx.state.append('note', ctx.input.noteId, 0, [{ type: 'created', data: { text: 'paid', charges: 1 } }]);
        return { chargeId: r.chargeId, version: entity.version };
      },
    });

    const first = await k.run(charge, { noteId: 'n1' }, { idempotencyKey: 'pay-1', envelope: { correlationId: 'run-7' } });
    expect(first.output).toEqual({ chargeId: 'ch_1', version: 1 });
    expect(first.effects).toEqual([{ name: 'charge', key: 'effect:demo.charge:pay-1:charge', result: { chargeId: 'ch_1' }, replayed: false }]);
    expect(p.keys).toEqual(['effect:demo.charge:pay-1:charge']);
    expect(await k.store.getIdempotency('effect:demo.charge:pay-1:charge')).toMatchObject({ status: 'completed', result: { chargeId: 'ch_1' } });
    // the events are the store's, stamped as the runtime stamps them
    expect(first.events.map((e) => `${e.entityType}/${e.entityId} v${e.version} ${e.type}`)).toEqual(['note/n1 v1 created']);
    expect(first.events[0]!.meta).toMatchObject({ actor: { kind: 'agent', id: 'demo' }, causationId: first.envelope.id, correlationId: 'run-7' });

    // a redelivery of the same task: the handler runs again, the provider is not called again
    const again = await k.run(charge, { noteId: 'n1' }, { idempotencyKey: 'pay-1' });
    expect(handlerRuns).toBe(2);
    expect(p.keys).toHaveLength(1);
    expect(again.effects).toEqual([{ name: 'charge', key: 'effect:demo.charge:pay-1:charge', result: { chargeId: 'ch_1' }, replayed: true }]);
    expect(again.output).toEqual({ chargeId: 'ch_1', version: 2 });
    expect(again.events.map((e) => e.type)).toEqual(['updated']);
    expect(again.envelope.id).not.toBe(first.envelope.id);

    // another task: another key, another charge
    const other = await k.run(charge, { noteId: 'n2' }, { idempotencyKey: 'pay-2' });
    expect(other.effects[0]).toMatchObject({ key: 'effect:demo.charge:pay-2:charge', replayed: false, result: { chargeId: 'ch_2' } });
    expect(p.keys).toHaveLength(2);

    // an effect that throws is released (not recorded): the retry runs it again
    const q = provider();
    const flaky = { ...charge, name: 'demo.flaky', handler: async (ctx: Parameters<typeof charge.handler>[0]) => ({ chargeId: (await ctx.effect('charge', (key) => q.charge(key, true))).chargeId, version: 0 }) };
    await expect(k.run(flaky, { noteId: 'n3' }, { idempotencyKey: 'pay-3' })).rejects.toThrow('provider down');
    expect(await k.store.getIdempotency('effect:demo.flaky:pay-3:charge')).toBeNull();
    const retried = await k.run(flaky, { noteId: 'n3' }, { idempotencyKey: 'pay-3' });
    expect(q.keys).toEqual(['effect:demo.flaky:pay-3:charge', 'effect:demo.flaky:pay-3:charge']);
    expect(retried.effects).toEqual([{ name: 'charge', key: 'effect:demo.flaky:pay-3:charge', result: { chargeId: 'ch_2' }, replayed: false }]);
  });

  it('ctx.enqueue: a declared capability is recorded (not published) with the task as its cause; another is refused; so is an undeclared entity type', async () => {
    const k = await kit();
    const fanout = defineCapability({
      name: 'demo.fanout',
      version: '1',
      input: z.object({ targets: z.array(z.string()), touch: z.string().optional() }),
      output: z.object({ ids: z.array(z.string()) }),
      permissions: { enqueue: ['demo.next'], entityTypes: ['note'] },
      async handler(ctx) {
        if (ctx.input.touch) await ctx.state.get(ctx.input.touch, 'x');
        const ids: string[] = [];
        for (const t of ctx.input.targets) ids.push((await ctx.enqueue(t, { from: ctx.capability, n: ids.length }, { idempotencyKey: `next-${ids.length}` })).id);
        return { ids };
      },
    });

    const r = await k.run(fanout, { targets: ['demo.next', 'demo.next'] }, { customer: 'C-9', budgetUsd: 0.5, envelope: { correlationId: 'run-1' } });
    expect(r.enqueued).toHaveLength(2);
    expect(r.enqueued.map((e) => e.id)).toEqual(r.output.ids);
    expect(r.enqueued[1]).toEqual({
      capability: 'demo.next',
      input: { from: 'demo.fanout', n: 1 },
      id: r.output.ids[1],
      idempotencyKey: 'next-1',
      correlationId: 'run-1',
      causationId: r.envelope.id,
      customer: 'C-9',
      budgetUsd: 0.5,
    });

    await expect(k.run(fanout, { targets: ['demo.next', 'demo.other'] })).rejects.toMatchObject({ code: 'AGENT_PERMISSION_DENIED', message: expect.stringContaining("'demo.other'") });
    await expect(k.run(fanout, { targets: [], touch: 'secret_note' })).rejects.toMatchObject({ code: 'AGENT_PERMISSION_DENIED', message: expect.stringContaining("entity type 'secret_note'") });
    // the store knows the type: only the capability's declaration refused it
    await k.store.append('secret_note', 'x', 0, [{ type: 'created', data: { text: 'hidden' } }], { actor: { kind: 'system', id: 'test' } });
    await expect(k.run(fanout, { targets: [], touch: 'secret_note' })).rejects.toMatchObject({ code: 'AGENT_PERMISSION_DENIED' });
    // and the workflow run type is there too, as in an agent's store
    expect(await k.store.get('workflow_run', 'nope')).toBeNull();
  });

  it('a bad input is refused like the bus refuses it (schema_mismatch) and the handler never runs', async () => {
    const k = await kit();
    let ran = 0;
    const cap = defineCapability({
      name: 'demo.strict',
      version: '1',
      input: z.object({ n: z.number().int(), when: z.string() }),
      output: z.object({ ok: z.boolean() }),
      async handler() {
        ran++;
        return { ok: true };
      },
    });
    const err = await k.run(cap, { n: 'one', when: 'now' }).catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'InvalidMessageError', code: 'BUS_INVALID_MESSAGE', reason: 'schema_mismatch', retryable: false });
    expect((err as { details: string[] }).details).toEqual([expect.stringMatching(/^n: /)]);
    await expect(k.run(cap, undefined)).rejects.toMatchObject({ reason: 'malformed_json' });
    // the input goes over the wire as JSON: a Date arrives as its ISO string
    const ok = await k.run(cap, { n: 1, when: new Date(0) });
    expect(ok.envelope.data).toEqual({ n: 1, when: '1970-01-01T00:00:00.000Z' });
    expect(ran).toBe(1);
  });

  it('a bad output fails with AGENT_BAD_OUTPUT naming the field', async () => {
    const k = await kit();
    const cap = defineCapability({
      name: 'demo.sloppy',
      version: '1',
      input: z.object({}),
      output: z.object({ count: z.number() }),
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      handler: async () => ({ count: 'many' }) as any,
    });
    await expect(k.run(cap, {})).rejects.toMatchObject({ name: 'AgentError', code: 'AGENT_BAD_OUTPUT', retryable: false, message: expect.stringContaining('count:') });
  });

  it('budget: the model is called through invokeModel (cost in the ledger); a second call after the budget is spent is refused before the model is called', async () => {
    const models = createModelRegistry(
      { KEEL_MODEL_SMALL: 'scripted:pricey', KEEL_PRICE_SCRIPTED: '1,0.5,2' },
      { scripts: { pricey: [{ content: 'first answer', usage: { input_tokens: 1000, output_tokens: 500 } }, { content: 'second answer', usage: { input_tokens: 10, output_tokens: 10 } }] } },
    );
    const model = models.get('small').chat as ScriptedChatModel;
    const k = await kit({ models });
    const cap = defineCapability({
      name: 'demo.think',
      version: '1',
      input: z.object({ q: z.string() }),
      output: z.object({ first: z.string(), second: z.string().optional(), refused: z.string().optional() }),
      async handler(ctx) {
        const first = (await ctx.llm('small', [{ role: 'user', content: ctx.input.q }])).text;
        try {
          return { first, second: (await ctx.llm('small', [{ role: 'user', content: 'and?' }])).text };
        } catch (err) {
          return { first, refused: (err as { code: string }).code };
        }
      },
    });

    const r = await k.run(cap, { q: 'why?' }, { budgetUsd: 0.003, customer: 'C-1', idempotencyKey: 'think-1', envelope: { correlationId: 'run-3' } });
    // the first call's reservation (a few input tokens + 1024 max output tokens ≈ $0.00205) fits
    // the $0.003 run budget; it settles at $0.002, and the second reservation no longer fits
    expect(r.output).toEqual({ first: 'first answer', refused: 'MODEL_BUDGET_REFUSED' });
    expect(model.played).toBe(1); // counted by the model itself: the second call never reached it
    expect(r.modelCalls).toEqual([
      { tier: 'small', messages: [{ role: 'user', content: 'why?' }], text: 'first answer', costUsd: 0.002, model: 'pricey', usage: { inputTokens: 1000, outputTokens: 500, cachedTokens: 0 }, key: 'effect:demo.think:think-1:model-1', replayed: false },
    ]);
    expect(r.failedModelCalls).toEqual([{ tier: 'small', messages: [{ role: 'user', content: 'and?' }], key: 'effect:demo.think:think-1:model-2', error: { code: 'MODEL_BUDGET_REFUSED', message: expect.stringContaining('run:run-3') } }]);
    const ledger = await k.store.costs({ capability: 'demo.think', records: 10 });
    // one record of the call, one of the refusal (no tokens, no cost)
    expect(ledger.totals).toMatchObject({ count: 2, tokensIn: 1000, tokensOut: 500, costUsd: 0.002 });
    const paid = ledger.records.filter((rec) => !(rec.details as { refused?: unknown } | undefined)?.refused);
    expect(paid).toHaveLength(1);
    expect(paid[0]).toMatchObject({ agent: 'demo', capability: 'demo.think', runId: 'run-3', customerId: 'C-1', model: 'pricey', details: expect.objectContaining({ tier: 1, provider: 'scripted' }) });
    expect(ledger.records.find((rec) => (rec.details as { refused?: unknown } | undefined)?.refused)).toMatchObject({ costUsd: 0, runId: 'run-3' });

    // the same task again (budget now spent): the answer is read back, no model call, no new cost
    const again = await k.run(cap, { q: 'why?' }, { budgetUsd: 0, idempotencyKey: 'think-1' });
    expect(again.output).toEqual({ first: 'first answer', refused: 'MODEL_BUDGET_REFUSED' });
    expect(again.modelCalls).toEqual([expect.objectContaining({ text: 'first answer', costUsd: 0.002, replayed: true })]);
    expect(model.played).toBe(1);
    // no new paid record; the second call was asked again and refused again (a second refusal record)
    const after = await k.store.costs({ capability: 'demo.think', records: 10 });
    expect(after.totals).toMatchObject({ count: 3, costUsd: 0.002 });
    expect(after.records.filter((rec) => (rec.details as { refused?: unknown } | undefined)?.refused)).toHaveLength(2);

    // no model at a tier: refused with the runtime's error
    const none = await kit();
    await expect(none.run(cap, { q: 'x' })).rejects.toMatchObject({ code: 'AGENT_UNKNOWN', message: 'no small model configured' });
  });

  it('the context: config overrides on the defaults, only declared secrets, captured logs, working(), a signal, a no-op span', async () => {
    const k = await kit({ config: { supportSignature: 'Kit Team' }, secrets: { API_KEY: 'k-1', OTHER: 'nope' } });
    const cap = defineCapability({
      name: 'demo.ctx',
      version: '1',
      input: z.object({}),
      output: z.record(z.string(), z.unknown()),
      permissions: { secrets: ['API_KEY'] },
      timeoutMs: 5_000,
      async handler(ctx) {
        ctx.working();
        ctx.working();
        ctx.logger.info({ step: 1 }, 'hello from the handler');
        ctx.span.setAttribute('demo', true);
        return { secrets: ctx.secrets, signature: ctx.config.supportSignature, dataDir: ctx.config.dataDir, aborted: ctx.signal.aborted, hasModel: ctx.hasModel('small'), agent: ctx.agent, subject: ctx.envelope.subject, type: ctx.envelope.type };
      },
    });
    const r = await k.run(cap, {});
    expect(r.output).toEqual({ secrets: { API_KEY: 'k-1' }, signature: 'Kit Team', dataDir: k.config.dataDir, aborted: false, hasModel: false, agent: 'demo', subject: 'keel.task.demo.ctx', type: 'task.demo.ctx' });
    expect(k.config.httpPort).toBe(8080); // the rest are loadConfig({}) defaults
    expect(r.workingCalls).toBe(2);
    expect(r.logs).toEqual([expect.objectContaining({ level: 'info', msg: 'hello from the handler', step: 1, agent: 'demo', capability: 'demo.ctx', task: r.envelope.id })]);
    expect(r.effects).toEqual([]);
    expect(r.events).toEqual([]);

    // a handler that ignores its signal still fails on its timeout
    const slow = defineCapability({ ...cap, name: 'demo.slow', timeoutMs: 50, handler: () => new Promise<Record<string, unknown>>((res) => setTimeout(() => res({}), 2_000)) });
    await expect(k.run(slow, {})).rejects.toThrow('timed out after 50 ms');
  });

  it('close() removes the temp store; a kit on a given store leaves it open', async () => {
    const k = await createCapabilityTestKit({ entities: [noteType] });
    const { existsSync } = await import('node:fs');
    const dir = k.config.dataDir;
    expect(existsSync(dir)).toBe(true);
    const on = await createCapabilityTestKit({ entities: [noteType], state: k.store });
    expect(on.store).toBe(k.store);
    await on.close();
    expect(await k.store.get('note', 'x')).toBeNull();
    await k.close();
    expect(existsSync(dir)).toBe(false);
  });
});
