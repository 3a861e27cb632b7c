/**
 * Batching (models/batch.ts) against a real local OpenAI-compatible HTTP server that counts the
 * calls it received, with the ledger in a real SQLite store: low-urgency items go out as ONE call
 * whose cost is split per customer; urgent items never wait.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BUILTIN_PRICES, costOf, createBatcher, createModelRegistry, splitBatchAnswer, splitCost } from '../../models/index.ts';
import { openStore, type StateStore } from '../../shared-state/index.ts';
import { startOpenAiServer, type OpenAiServer } from '../../testkit/index.ts';

// answers every "### ITEM k" of the prompt with a summary naming the item's first words
const reply = (body: Record<string, unknown>) => {
  const user = (body.messages as { role: string; content: string }[]).at(-1)!.content;
  const items = [...user.matchAll(/^### ITEM (\d+)\n(.*)$/gm)];
  if (items.length === 0) return `summary of: ${user.slice(0, 30)}`;
  return items.map((m) => `### ITEM ${m[1]}\nsummary of: ${m[2]!.slice(0, 30)}`).join('\n\n');
};

describe('batching', () => {
  let ai: OpenAiServer;
  let store: StateStore;
  const root = mkdtempSync(join(tmpdir(), 'keel-batch-'));
  const usage = { prompt_tokens: 3000, completion_tokens: 600, cached_tokens: 0 };
  beforeAll(async () => {
    ai = await startOpenAiServer({ usage, reply });
    store = await openStore(`sqlite:${join(root, 'b.db')}`, { types: [] });
  });
  afterAll(async () => {
    await store.close();
    await ai.stop();
    rmSync(root, { recursive: true, force: true });
  });
  const models = () => createModelRegistry({ KEEL_MODEL_SMALL: 'openai:gpt-4o-mini', KEEL_OPENAI_BASE_URL: ai.url, OPENAI_API_KEY: 'sk-test', KEEL_MODEL_MAX_RETRIES: '0' });
  const who = (customerId: string, runId: string) => ({ agent: 'summarizer', capability: 'ticket.summarize', customerId, runId, entityType: 'ticket', entityId: `T-${runId}` });

  it('low-urgency items fill a batch and go out as one call; the cost is split per customer and run', async () => {
    const b = createBatcher({ kind: 'ticket.summarize', models: models(), tier: 'small', costs: store, instructions: 'Summarize each thread.', windowMs: 60_000, size: 3 });
    const before = ai.requests.length;
    const texts = ['Acme: the export fails every night since Tuesday and we need it fixed.', 'Globex: invoice question.', 'Acme again: please also add two seats to our plan for the new hires.'];
    const answers = await Promise.all([
      b.submit({ text: texts[0]!, attribution: who('acme', 'r1') }),
      b.submit({ text: texts[1]!, attribution: who('globex', 'r2') }),
      b.submit({ text: texts[2]!, attribution: who('acme', 'r3') }),
    ]);
    expect(ai.requests.length - before).toBe(1);
    expect(b.calls).toBe(1);
    expect(answers.map((a) => a.text)).toEqual(texts.map((t) => `summary of: ${t.slice(0, 30)}`));
    expect(new Set(answers.map((a) => a.batchId)).size).toBe(1);

    const total = costOf(BUILTIN_PRICES['gpt-4o-mini']!, { inputTokens: 3000, outputTokens: 600, cachedTokens: 0 });
    expect(answers.reduce((s, a) => s + a.costUsd, 0)).toBeCloseTo(total, 9);
    // each share follows the item's length (the instructions split evenly)
    const weights = texts.map((t) => t.length + 'Summarize each thread.'.length / 3);
    const sum = weights.reduce((x, y) => x + y, 0);
    answers.forEach((a, i) => expect(a.costUsd).toBeCloseTo((total * weights[i]!) / sum, 8));

    // the ledger: one record per item, so `keel cost --by customer` charges each customer its share
    const byCustomer = await store.costs({ by: ['customerId'], capability: 'ticket.summarize' });
    const acme = byCustomer.groups.find((g) => g.key.customerId === 'acme')!.totals;
    const globex = byCustomer.groups.find((g) => g.key.customerId === 'globex')!.totals;
    expect(acme.count).toBe(2);
    expect(globex.count).toBe(1);
    expect(acme.costUsd).toBeCloseTo(answers[0]!.costUsd + answers[2]!.costUsd, 9);
    expect(globex.costUsd).toBeCloseTo(answers[1]!.costUsd, 9);
    expect(acme.tokensIn + globex.tokensIn).toBe(3000);
    const recs = (await store.costs({ runId: 'r2', records: 5 })).records;
    expect(recs[0]).toMatchObject({ customerId: 'globex', runId: 'r2', entityId: 'T-r2', agent: 'summarizer', details: { batch: { size: 3, kind: 'ticket.summarize', totalUsd: total } } });
    await b.close();
  });

  it('a batch that does not fill goes out when its window ends', async () => {
    const b = createBatcher({ kind: 'digest', models: models(), tier: 'small', costs: store, instructions: 'Digest.', windowMs: 30, size: 100 });
    const before = ai.requests.length;
    const p = [b.submit({ text: 'one', attribution: who('c1', 'w1') }), b.submit({ text: 'two', attribution: who('c2', 'w2') })];
    expect(b.pending).toBe(2);
    const r = await Promise.all(p);
    expect(r.map((x) => x.batchSize)).toEqual([2, 2]);
    expect(ai.requests.length - before).toBe(1);
    await b.close();
  });

  it('urgent work never waits: it is its own call, at once, while low-urgency items keep waiting', async () => {
    const b = createBatcher({ kind: 'ticket.summarize', models: models(), tier: 'small', costs: store, instructions: 'Summarize.', windowMs: 60_000, size: 10 });
    const before = ai.requests.length;
    const waiting = b.submit({ text: 'can wait', attribution: who('c3', 'u1') });
    const urgent = await b.submit({ text: 'the site is down', urgency: 'high', attribution: who('c4', 'u2') });
    expect(urgent).toMatchObject({ batchSize: 1, text: 'summary of: the site is down' });
    expect(urgent.costUsd).toBeCloseTo(costOf(BUILTIN_PRICES['gpt-4o-mini']!, { inputTokens: 3000, outputTokens: 600, cachedTokens: 0 }), 9);
    expect(ai.requests.length - before).toBe(1);
    expect(b.pending).toBe(1);
    await b.flush();
    expect((await waiting).batchSize).toBe(1);
    expect(ai.requests.length - before).toBe(2);
    await b.close();
    await expect(b.submit({ text: 'late', attribution: who('c5', 'u3') })).rejects.toMatchObject({ code: 'MODEL_BAD_REQUEST' });
  });

  it('an item the model left unanswered fails alone; splitting adds up exactly', async () => {
    expect(splitBatchAnswer('### ITEM 1\na\n### ITEM 3\nc', 3)).toEqual(['a', undefined, 'c']);
    const shares = splitCost([1, 1, 1], 0.00001, { inputTokens: 10, outputTokens: 5, cachedTokens: 1 });
    expect(shares.reduce((s, x) => s + x.costUsd, 0)).toBeCloseTo(0.00001, 12);
    expect(shares.reduce((s, x) => s + x.usage.inputTokens, 0)).toBe(10);
    expect(shares.reduce((s, x) => s + x.usage.outputTokens, 0)).toBe(5);
  });
});
