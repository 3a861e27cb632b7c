/**
 * The must-show of issue 13: budgets are admitted BEFORE the provider is called, atomically —
 * 50 concurrent calls through the real @langchain/openai client against testkit's
 * OpenAI-compatible server, a $0.05 hard customer budget, fixed prices and token counts: the
 * settled spend stays within the budget and every other call is refused without reaching the
 * server (counted by the server itself), each refusal counted on the budget and in the ledger.
 * Also: two processes admitting against one SQLite file, settle to actual, release on a 500.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openStore, type StateStore } from '../../shared-state/index.ts';
import { createBudgetGuard, createModelRegistry, estimateCallUsd, invokeModel, isModelError, type BudgetGuard } from '../../models/index.ts';
import { REPO_ROOT } from '../../config/index.ts';
import { startOpenAiServer, tempDir, type OpenAiServer } from '../../testkit/index.ts';
import { ALL_ENTITY_TYPES } from '../helpers/types.ts';

// $10 input / $20 output per 1M tokens; every answer reports 100 prompt + 50 completion tokens
const PRICES = JSON.stringify({ 'gpt-4o-mini': { input: 10, cachedInput: 10, output: 20 } });
const ACTUAL_USD = (100 * 10 + 50 * 20) / 1e6; // 0.002
const MAX_OUT = 100;
const me = { kind: 'human', id: 'operator' } as const;

let ai: OpenAiServer;
let dir: ReturnType<typeof tempDir>;
let state: string;
let store: StateStore;

function keel(args: string[]) {
  const r = spawnSync(process.execPath, [join(REPO_ROOT, 'cli', 'keel.ts'), ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, KEEL_STATE: state, KEEL_LOG_LEVEL: 'silent' },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

beforeAll(async () => {
  ai = await startOpenAiServer({
    usage: { prompt_tokens: 100, completion_tokens: 50 },
    delayMs: 20, // keeps the admitted calls in flight while the others ask
    status: (body) => (JSON.stringify(body.messages ?? '').includes('please-fail') ? 500 : 200),
  });
  dir = tempDir();
  state = `sqlite:${dir.path}/s.db`;
  store = await openStore(state, { types: ALL_ENTITY_TYPES });
});
afterAll(async () => {
  await store?.close();
  await ai?.stop();
  dir?.remove();
});

const registry = () =>
  createModelRegistry({ KEEL_MODEL_SMALL: 'openai:gpt-4o-mini', KEEL_OPENAI_BASE_URL: ai.url, OPENAI_API_KEY: 'sk-local-test', KEEL_MODEL_MAX_RETRIES: '0', KEEL_PRICES: PRICES });

describe('budgets admitted before the call', () => {
  it('50 concurrent calls against a $0.05 hard customer budget: spend within it, the rest refused before the provider', async () => {
    const guard = createBudgetGuard(store);
    await guard.set({ scope: 'customer', key: 'cus-acme', usd: 0.05, period: 'day', mode: 'hard' }, me);
    const models = registry();
    const before = ai.requests.length;
    const outcomes = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        invokeModel({
          model: models.get('small'),
          messages: [{ role: 'user', content: `Where is my refund? (${i})` }],
          attribution: { agent: 'support', capability: 'ticket.reply', customerId: 'cus-acme', runId: `run-${i}` },
          costs: store,
          budget: { guard, maxOutputTokens: MAX_OUT },
        }).then((r) => ({ ok: true as const, r }), (e: unknown) => ({ ok: false as const, e })),
      ),
    );
    const admitted = outcomes.filter((o) => o.ok);
    const refused = outcomes.filter((o) => !o.ok);
    for (const o of refused) expect(isModelError(o.e, 'MODEL_BUDGET_REFUSED')).toBe(true);
    expect(refused[0]).toMatchObject({ e: { scope: 'customer', key: 'cus-acme', limitUsd: 0.05, retryable: false } });

    // the reservation is a real bound: the estimate for one call exceeds its actual cost
    const reserve = estimateCallUsd({ price: { input: 10, cachedInput: 10, output: 20 }, messages: [{ role: 'user', content: 'Where is my refund? (10)' }], maxOutputTokens: MAX_OUT })!;
    expect(reserve).toBeGreaterThan(ACTUAL_USD);
    // the bound holds at every moment, not only at the end: replaying the customer's window event
    // by event, what is spent plus what is reserved never exceeds $0.05 (a call that settles below
    // its reservation frees room for a later one, so the admitted calls' reservations together may)
    const windows = (await store.query<{ reservedUsd: number; spentUsd: number }>('model_budget_window', { limit: 100 })).items.filter((w) => w.entityId.startsWith('customer_'));
    expect(windows).toHaveLength(1);
    let peak = 0;
    for (let v = 1; v <= windows[0]!.version; v++) {
      const at = (await store.getAt<{ reservedUsd: number; spentUsd: number }>('model_budget_window', windows[0]!.entityId, v))!.state;
      peak = Math.max(peak, at.reservedUsd + at.spentUsd);
    }
    expect(peak).toBeLessThanOrEqual(0.05 + 1e-12);
    expect(peak).toBeGreaterThan(0.05 - reserve); // and it was full: the refusals were needed
    expect(admitted.length).toBeGreaterThan(0);
    expect(refused.length).toBe(50 - admitted.length);

    // the provider saw exactly the admitted calls, each bounded to MAX_OUT output tokens
    const seen = ai.requests.slice(before);
    expect(seen).toHaveLength(admitted.length);
    for (const r of seen) expect(r.body.max_tokens).toBe(MAX_OUT);

    const ledger = await store.costs({ customerId: 'cus-acme', records: 1000 });
    const paid = ledger.records.filter((r) => !r.details?.refused);
    const refusals = ledger.records.filter((r) => r.details?.refused);
    expect(paid).toHaveLength(admitted.length);
    expect(refusals).toHaveLength(refused.length);
    for (const r of refusals) expect(r).toMatchObject({ costUsd: 0, agent: 'support', capability: 'ticket.reply', details: { refused: { scope: 'customer', key: 'cus-acme', limitUsd: 0.05, reason: 'over_limit' } } });
    expect(ledger.totals.costUsd).toBeLessThanOrEqual(0.05);
    expect(ledger.totals.costUsd).toBeCloseTo(admitted.length * ACTUAL_USD, 9);

    const [status] = (await guard.list()).filter((b) => b.scope === 'customer' && b.key === 'cus-acme');
    expect(status).toMatchObject({ mode: 'hard', period: 'day', limitUsd: 0.05, reservedUsd: 0, refusals: refused.length });
    expect(status!.spentUsd).toBeCloseTo(admitted.length * ACTUAL_USD, 9);

    // and the operator sees the same through the CLI (a real process)
    const out = keel(['budgets', '--json']);
    expect(out.stderr).toBe('');
    expect(out.code).toBe(0);
    const listed = (JSON.parse(out.stdout) as { budgets: { scope: string; key: string; refusals: number; spentUsd: number }[] }).budgets.find((b) => b.scope === 'customer' && b.key === 'cus-acme');
    expect(listed).toMatchObject({ refusals: refused.length });
    expect(listed!.spentUsd).toBeCloseTo(status!.spentUsd, 9);
  });

  it('settles to the actual cost and releases the reservation when the provider fails (500)', async () => {
    const guard = createBudgetGuard(store);
    await guard.set({ scope: 'agent', key: 'settler', usd: 1, period: 'month', mode: 'hard' }, me);
    const models = registry();
    const r = await invokeModel({ model: models.get('small'), messages: 'hello', attribution: { agent: 'settler', capability: 'c' }, costs: store, budget: { guard, maxOutputTokens: 500 } });
    expect(r.admission!.reservedUsd).toBeGreaterThan(r.costUsd);
    let [b] = (await guard.list()).filter((x) => x.key === 'settler');
    expect(b).toMatchObject({ reservedUsd: 0, spentUsd: ACTUAL_USD });

    const err = await invokeModel({ model: models.get('small'), messages: 'please-fail', attribution: { agent: 'settler', capability: 'c' }, costs: store, budget: { guard } }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'MODEL_UNAVAILABLE', status: 500 });
    [b] = (await guard.list()).filter((x) => x.key === 'settler');
    expect(b).toMatchObject({ reservedUsd: 0, spentUsd: ACTUAL_USD, refusals: 0 });
  });

  it('holds across two processes admitting concurrently against one SQLite file', async () => {
    const guard: BudgetGuard = createBudgetGuard(store);
    await guard.set({ scope: 'workflow', key: 'two-procs', usd: 0.25, period: 'day', mode: 'hard' }, me);
    await guard.set({ scope: 'engine', usd: 1000, period: 'day', mode: 'hard' }, me);
    const script = join(dir.path, 'admit.ts');
    writeFileSync(
      script,
      `import { openStore } from ${JSON.stringify(join(REPO_ROOT, 'shared-state/index.ts'))};
import { createBudgetGuard } from ${JSON.stringify(join(REPO_ROOT, 'models/index.ts'))};
import { ALL_ENTITY_TYPES } from ${JSON.stringify(join(REPO_ROOT, 'tests/helpers/types.ts'))};
const store = await openStore(process.argv[2], { types: ALL_ENTITY_TYPES });
const guard = createBudgetGuard(store);
let admitted = 0, refused = 0;
await Promise.all(Array.from({ length: 20 }, async (_, i) => {
  try {
    const a = await guard.admit({ callId: process.pid + '-' + i, scopes: { workflow: 'two-procs' }, estimateUsd: 0.01 });
    admitted++;
    await new Promise((r) => setTimeout(r, 5));
    await guard.settle(a, 0.01);
  } catch (e) { if (e.code !== 'MODEL_BUDGET_REFUSED') throw e; refused++; }
}));
await store.close();
console.log(JSON.stringify({ admitted, refused }));
`,
    );
    const run = () =>
      new Promise<{ admitted: number; refused: number }>((resolve, reject) => {
        const p = spawn(process.execPath, [script, state], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        let errText = '';
        p.stdout.on('data', (c: Buffer) => (out += c.toString()));
        p.stderr.on('data', (c: Buffer) => (errText += c.toString()));
        p.on('close', (code) => (code === 0 ? resolve(JSON.parse(out.trim().split('\n').at(-1)!)) : reject(new Error(`child exited ${code}: ${errText}`))));
      });
    const [a, b] = await Promise.all([run(), run()]);
    // 40 asked for $0.01 each against $0.25: exactly 25 fit, whichever process asked
    expect(a.admitted + b.admitted).toBe(25);
    expect(a.refused + b.refused).toBe(15);
    const [w] = (await guard.list()).filter((x) => x.scope === 'workflow' && x.key === 'two-procs');
    expect(w).toMatchObject({ reservedUsd: 0, refusals: 15 });
    expect(w!.spentUsd).toBeCloseTo(0.25, 9);
    // the engine budget held the same reservations and gave them all back or settled them
    const [e] = (await guard.list()).filter((x) => x.scope === 'engine');
    expect(e!.reservedUsd).toBe(0);
    expect(e!.spentUsd).toBeGreaterThanOrEqual(0.25 - 1e-9);
  });
});
