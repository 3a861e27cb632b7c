/**
 * The budget guard on a real SQLite store: soft budgets warn and record, unpriceable models are
 * refused under a hard budget only, windows roll over by UTC day and month, a refusal on one
 * scope reserves nothing on the others, an approved `budget.raise` lifts the window's limit; and
 * through the runtime's `callModel`: a run's budget is shared by its parallel steps, the refusal
 * policy (`cheaper`, `tier0`, `ask`) acts, the workflow name reaches the ledger.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { openStore, type StateStore } from '../../shared-state/index.ts';
import { createBudgetGuard, createModelRegistry, estimateCallUsd, invokeModel, raiseApprovalId, ScriptedChatModel, type BudgetGuard } from '../../models/index.ts';
import { callModel } from '../../runtime/task-parts.ts';
import { tempDir } from '../../testkit/index.ts';
import { ALL_ENTITY_TYPES } from '../helpers/types.ts';

const me = { kind: 'human', id: 'op' } as const;
let dir: ReturnType<typeof tempDir>;
let store: StateStore;
let clock: Date;
let guard: BudgetGuard;

beforeEach(async () => {
  dir = tempDir();
  store = await openStore(`sqlite:${dir.path}/s.db`, { types: ALL_ENTITY_TYPES });
  clock = new Date('2025-01-31T23:00:00Z');
  guard = createBudgetGuard(store, { now: () => clock });
});
afterEach(async () => {
  await store.close();
  dir.remove();
});

const statusOf = async (scope: string, key: string, period = 'day') => (await guard.list()).find((b) => b.scope === scope && b.key === key && b.period === period);

describe('estimateCallUsd', () => {
  it('is chars/4 of the serialized messages at the input price plus max output tokens at the output price; undefined without a price', () => {
    const price = { input: 4, cachedInput: 1, output: 8 };
    expect(estimateCallUsd({ price, messages: 'x'.repeat(400), maxOutputTokens: 50 })).toBeCloseTo((100 * 4 + 50 * 8) / 1e6, 12);
    const msgs = [{ role: 'user', content: 'hello there' }];
    expect(estimateCallUsd({ price, messages: msgs, maxOutputTokens: 0 })).toBeCloseTo((Math.ceil(JSON.stringify(msgs).length / 4) * 4) / 1e6, 12);
    expect(estimateCallUsd({ price: undefined, messages: 'x', maxOutputTokens: 10 })).toBeUndefined();
  });
});

describe('the budget guard', () => {
  it('a soft budget warns and records but admits', async () => {
    await guard.set({ scope: 'agent', key: 'writer', usd: 0.01, period: 'day', mode: 'soft' }, me);
    const a = await guard.admit({ callId: 'c1', scopes: { agent: 'writer' }, estimateUsd: 0.008 });
    expect(a.warnings).toEqual([]);
    const b = await guard.admit({ callId: 'c2', scopes: { agent: 'writer' }, estimateUsd: 0.008 });
    expect(b.warnings).toEqual([expect.stringContaining('soft budget agent:writer/day exceeded')]);
    await guard.settle(a, 0.007);
    await guard.settle(b, 0.007);
    expect(await statusOf('agent', 'writer')).toMatchObject({ mode: 'soft', spentUsd: 0.014, reservedUsd: 0, remainingUsd: 0, refusals: 0, warnings: 1 });
  });

  it('an unpriceable model is refused under a hard budget, admitted with a warning under a soft one or none', async () => {
    const none = await guard.admit({ callId: 'u0', scopes: { customerId: 'cus-free' }, estimateUsd: undefined });
    expect(none.warnings).toEqual([expect.stringContaining('cannot be priced')]);
    await guard.set({ scope: 'customer', key: 'cus-soft', usd: 1, period: 'month', mode: 'soft' }, me);
    await expect(guard.admit({ callId: 'u1', scopes: { customerId: 'cus-soft' }, estimateUsd: undefined })).resolves.toMatchObject({ scopes: ['customer:cus-soft/month'] });
    await guard.set({ scope: 'customer', key: 'cus-hard', usd: 1, period: 'month', mode: 'hard' }, me);
    const err = await guard.admit({ callId: 'u2', scopes: { customerId: 'cus-hard' }, estimateUsd: undefined }).catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'BudgetRefusedError', code: 'MODEL_BUDGET_REFUSED', retryable: false, scope: 'customer', key: 'cus-hard', askedUsd: undefined, refusal: { reason: 'unpriced' } });
    const ledger = await store.costs({ customerId: 'cus-hard', records: 5 });
    expect(ledger.records).toEqual([expect.objectContaining({ costUsd: 0, details: expect.objectContaining({ refused: expect.objectContaining({ reason: 'unpriced', askedUsd: null }) }) })]);
  });

  it('day and month windows roll over at UTC midnight and the month boundary', async () => {
    await guard.set({ scope: 'engine', usd: 0.01, period: 'day', mode: 'hard' }, me);
    await guard.set({ scope: 'engine', usd: 0.015, period: 'month', mode: 'hard' }, me);
    await guard.settle(await guard.admit({ callId: 'a', scopes: {}, estimateUsd: 0.009 }), 0.009);
    await expect(guard.admit({ callId: 'b', scopes: {}, estimateUsd: 0.002 })).rejects.toMatchObject({ scope: 'engine', refusal: { period: 'day', window: '2025-01-31' } });
    clock = new Date('2025-02-01T00:00:01Z'); // a new day and a new month
    const c = await guard.admit({ callId: 'c', scopes: {}, estimateUsd: 0.009 });
    expect(c.scopes).toEqual(['engine/day', 'engine/month']);
    await guard.settle(c, 0.009);
    clock = new Date('2025-02-02T08:00:00Z'); // a new day, the same month: the month's $0.015 holds
    await expect(guard.admit({ callId: 'd', scopes: {}, estimateUsd: 0.009 })).rejects.toMatchObject({ refusal: { period: 'month', window: '2025-02', spentUsd: 0.009 } });
    const list = await guard.list();
    expect(list.map((b) => [b.period, b.window, b.spentUsd, b.refusals])).toEqual([['day', '2025-02-02', 0, 0], ['month', '2025-02', 0.009, 1]]);
  });

  it('all or none: a refusal on one scope leaves nothing reserved on the others', async () => {
    await guard.set({ scope: 'customer', key: 'cus-1', usd: 1, period: 'day', mode: 'hard' }, me);
    await guard.set({ scope: 'workflow', key: 'reply', usd: 0.001, period: 'day', mode: 'hard' }, me);
    await expect(guard.admit({ callId: 'x', scopes: { customerId: 'cus-1', workflow: 'reply' }, estimateUsd: 0.002 })).rejects.toMatchObject({ scope: 'workflow' });
    expect(await statusOf('customer', 'cus-1')).toMatchObject({ reservedUsd: 0, spentUsd: 0 });
    expect(await statusOf('workflow', 'reply')).toMatchObject({ reservedUsd: 0, refusals: 1 });
    // released and settled twice: counted once
    const a = await guard.admit({ callId: 'y', scopes: { customerId: 'cus-1' }, estimateUsd: 0.5 });
    await guard.settle(a, 0.25);
    await guard.settle(a, 0.25);
    await guard.release(a);
    expect(await statusOf('customer', 'cus-1')).toMatchObject({ reservedUsd: 0, spentUsd: 0.25, remainingUsd: 0.75 });
  });

  it('an approved budget.raise lifts the refused window, once; clear removes a budget', async () => {
    await guard.set({ scope: 'customer', key: 'cus-r', usd: 0.01, period: 'day', mode: 'hard' }, me);
    await guard.settle(await guard.admit({ callId: 'a', scopes: { customerId: 'cus-r' }, estimateUsd: 0.01 }), 0.01);
    await expect(guard.admit({ callId: 'b', scopes: { customerId: 'cus-r' }, estimateUsd: 0.005 })).rejects.toMatchObject({ code: 'MODEL_BUDGET_REFUSED' });
    const id = raiseApprovalId('customer', 'cus-r', 'day', '2025-01-31');
    await store.createApproval({ id, action: 'budget.raise', subject: 'budget/customer:cus-r', payload: { raiseUsd: 0.01 }, requestedBy: { kind: 'agent', id: 't' }, deadline: '2099-01-01T00:00:00Z' });
    await expect(guard.admit({ callId: 'c', scopes: { customerId: 'cus-r' }, estimateUsd: 0.005 })).rejects.toMatchObject({ code: 'MODEL_BUDGET_REFUSED' }); // pending: no raise
    await store.decideApproval(id, { decision: 'approved', by: me });
    await guard.settle(await guard.admit({ callId: 'd', scopes: { customerId: 'cus-r' }, estimateUsd: 0.005 }), 0.005);
    expect(await statusOf('customer', 'cus-r')).toMatchObject({ limitUsd: 0.02, spentUsd: 0.015, refusals: 2 });
    await guard.settle(await guard.admit({ callId: 'e', scopes: { customerId: 'cus-r' }, estimateUsd: 0.005 }), 0.005);
    await expect(guard.admit({ callId: 'f', scopes: { customerId: 'cus-r' }, estimateUsd: 0.005 })).rejects.toMatchObject({ limitUsd: 0.02 }); // applied once
    expect(await guard.clear({ scope: 'customer', key: 'cus-r', period: 'day' }, me)).toBe(true);
    expect(await guard.clear({ scope: 'customer', key: 'cus-r', period: 'day' }, me)).toBe(false);
    await expect(guard.admit({ callId: 'g', scopes: { customerId: 'cus-r' }, estimateUsd: 5 })).resolves.toMatchObject({ scopes: [] });
  });
});

describe('model calls of tasks (runtime callModel)', () => {
  // scripted models priced $1 input / $2 output per 1M tokens; each reply reports 1000 in, 500 out = $0.002
  const reply = { content: 'answer', usage: { input_tokens: 1000, output_tokens: 500 } };
  const registry = (n: number) =>
    createModelRegistry({ KEEL_MODEL_SMALL: 'scripted:s', KEEL_MODEL_LARGE: 'scripted:l', KEEL_PRICE_SCRIPTED: '1,1,2' }, { scripts: { s: Array(n).fill(reply), l: Array(n).fill(reply) } });
  const base = (models: ReturnType<typeof registry>, over: Partial<Parameters<typeof callModel>[0]> = {}) => ({
    models, tier: 'small' as const, messages: [{ role: 'user', content: 'hi' }], capability: 'demo.ask', store, signal: new AbortController().signal,
    attribution: { agent: 'demo', runId: 'run-p', customerId: 'cus-p' }, ...over,
  });

  it('parallel steps of one run share its budget instead of each getting all of it; the workflow name is recorded', async () => {
    const models = registry(10);
    // reservation per call: ~ (chars/4 × $1 + 1024 × $2) / 1e6 ≈ $0.00206; two fit in $0.005, not three
    const run = { runId: 'run-p', workflow: 'support-reply', budgetUsd: 0.005 };
    const outcomes = await Promise.allSettled([1, 2, 3].map(() => callModel({ ...base(models), run, policy: 'tier0' })));
    expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(2);
    expect(outcomes.filter((o) => o.status === 'rejected').map((o) => (o as PromiseRejectedResult).reason)).toEqual([expect.objectContaining({ code: 'MODEL_BUDGET_REFUSED', scope: 'run', key: 'run-p' })]);
    expect((models.get('small').chat as ScriptedChatModel).played).toBe(2);
    const ledger = await store.costs({ runId: 'run-p', records: 10 });
    expect(ledger.records.every((r) => r.details?.workflow === 'support-reply')).toBe(true);
    expect(ledger.totals.costUsd).toBeCloseTo(0.004, 9);
    expect(await statusOf('run', 'run-p', 'month')).toMatchObject({ window: 'run', limitUsd: 0.005, spentUsd: 0.004, refusals: 1 });
  });

  it('policy cheaper: a refused large call goes to the small tier; tier0: refused at once; ask: an approval to raise the limit', async () => {
    const models = registry(10);
    // the large model alone costs more: $10 / $20 per 1M tokens
    const priced = createModelRegistry({ KEEL_MODEL_SMALL: 'scripted:s', KEEL_MODEL_LARGE: 'scripted:l', KEEL_PRICES: JSON.stringify({ 'scripted:l': { input: 10, output: 20 }, 'scripted:s': { input: 1, output: 2 } }) }, { scripts: { s: Array(5).fill(reply), l: Array(5).fill(reply) } });
    void models;
    await guard.set({ scope: 'customer', key: 'cus-p', usd: 0.01, period: 'day', mode: 'hard' }, me);
    const a = await callModel({ ...base(priced), tier: 'large', policy: 'cheaper' });
    expect(a.downgraded).toMatchObject({ from: 'large', to: 'small', reason: expect.stringContaining('budget refused at scope customer:cus-p') });
    expect((priced.get('large').chat as ScriptedChatModel).played).toBe(0);
    await expect(callModel({ ...base(priced), tier: 'large', policy: 'tier0' })).rejects.toMatchObject({ code: 'MODEL_BUDGET_REFUSED' });
    expect((priced.get('small').chat as ScriptedChatModel).played).toBe(1);

    await expect(callModel({ ...base(priced), tier: 'large', policy: 'ask' })).rejects.toMatchObject({ code: 'MODEL_BUDGET_REFUSED' });
    const approvals = await store.listApprovals({ state: 'pending' });
    expect(approvals).toEqual([expect.objectContaining({ action: 'budget.raise', subject: expect.stringContaining('customer:cus-p/day/'), payload: expect.objectContaining({ scope: 'customer', limitUsd: 0.01, raiseUsd: expect.any(Number) }) })]);
    await callModel({ ...base(priced), tier: 'large', policy: 'ask' }).catch(() => undefined);
    expect(await store.listApprovals({ state: 'pending' })).toHaveLength(1); // one per window
  });

  it('invokeModel without a budget guard behaves as before (no admission)', async () => {
    const models = registry(1);
    const r = await invokeModel({ model: models.get('small'), messages: 'hi', attribution: { agent: 'a', capability: 'c' }, costs: store });
    expect(r.admission).toBeUndefined();
    expect(r.costUsd).toBeCloseTo(0.002, 9);
  });

  it('the span carries the GenAI usage and cost attributes, with customer, workflow and run', async () => {
    const exporter = new InMemorySpanExporter();
    const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
    const tracer = provider.getTracer('t');
    const models = registry(1);
    const attribution = { agent: 'a', capability: 'c', customerId: 'cus-s', workflow: 'support-reply', runId: 'run-s' };
    await invokeModel({ model: models.get('small'), messages: 'hi', attribution, costs: store, tracer, budget: { guard, maxOutputTokens: 64 } });
    const unpriced = new ScriptedChatModel({ modelName: 'nameless', replies: [reply] });
    await invokeModel({ model: unpriced, messages: 'hi', attribution, costs: store, tracer, prices: {} });
    const [priced, free] = exporter.getFinishedSpans();
    expect(priced!.attributes).toMatchObject({
      'gen_ai.usage.input_tokens': 1000, 'gen_ai.usage.output_tokens': 500, 'gen_ai.usage.cache_read.input_tokens': 0, 'gen_ai.usage.reasoning.output_tokens': 0,
      'gen_ai.usage.cost.amount': 0.002, 'gen_ai.usage.cost.currency': 'USD', 'gen_ai.usage.cost.source': 'local', 'keel.cost.source': 'price_table', 'gen_ai.request.max_tokens': 64,
      'keel.customer_id': 'cus-s', 'keel.workflow': 'support-reply', 'keel.run_id': 'run-s', 'keel.cost.usd': 0.002,
    });
    expect(free!.attributes).toMatchObject({ 'keel.cost.source': 'unpriced', 'keel.cost.usd': 0 });
    expect(free!.attributes['gen_ai.usage.cost.amount']).toBeUndefined(); // no price, no claimed amount
    await provider.shutdown();
  });
});
