/**
 * `ctx.llm`'s third argument reaches the process's intent cache and batchers: a declared
 * cacheable call is served from the cache for a paraphrase (the provider does not see it), a
 * negated request is not; low-urgency calls share one provider request. Real SQLite, a real local
 * OpenAI-compatible server counting what it received, and the real default embedder.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { createModelRegistry } from '../../models/index.ts';
import { createCapabilityTestKit, defineCapability, type CapabilityTestKit } from '../../runtime/index.ts';
import { startOpenAiServer, type OpenAiServer } from '../../testkit/index.ts';
import { loadConfig } from '../../config/index.ts';
import { localMiniLMPresent } from '../../memory/index.ts';

const modelsDir = loadConfig().modelsDir;
const haveModel = await localMiniLMPresent(modelsDir);
if (!haveModel) console.log(`[skip] intent-cache wiring tests: the embedding model is not provisioned in ${modelsDir} (run npm run provision)`);

describe('ctx.llm options: intent cache and batching', () => {
  let ai: OpenAiServer;
  let kit: CapabilityTestKit;
  const root = mkdtempSync(join(tmpdir(), 'keel-llm-opts-'));
  beforeAll(async () => {
    ai = await startOpenAiServer({ usage: { prompt_tokens: 400, completion_tokens: 50 }, reply: (body) => {
      const msgs = body.messages as { role: string; content: string }[];
      const user = msgs.at(-1)!.content;
      // a batch prompt carries its items under "### ITEM k" marks: answer each
      const items = user.split(/^### ITEM \d+\s*$/m).slice(1);
      if (items.length) return items.map((t, i) => `### ITEM ${i + 1}\nsummary of: ${t.trim().slice(0, 30)}`).join('\n');
      return `answer to: ${user}`;
    } });
    const models = createModelRegistry({ KEEL_MODEL_SMALL: 'openai:gpt-4o-mini', KEEL_OPENAI_BASE_URL: ai.url, OPENAI_API_KEY: 'sk-test', KEEL_MODEL_MAX_RETRIES: '0' });
    kit = await createCapabilityTestKit({ entities: [], agent: 'demo', models, config: { dataDir: root, modelsDir, intentCacheTtlS: 3_600, batchWindowMs: 60_000, batchSize: 3 } });
  });
  afterAll(async () => {
    await kit?.close();
    await ai?.stop();
    rmSync(root, { recursive: true, force: true });
  });

  const ask = defineCapability({
    name: 'demo.ask',
    version: '1',
    input: z.object({ q: z.string() }),
    output: z.object({ text: z.string(), cacheHit: z.boolean().optional() }),
    async handler(ctx) {
      const r = await ctx.llm('small', [{ role: 'system', content: 'Answer the customer.' }, { role: 'user', content: ctx.input.q }], { intent: 'refund', cacheable: true, cacheScope: 'global' });
      return { text: r.text, ...(r.cacheHit !== undefined ? { cacheHit: r.cacheHit } : {}) };
    },
  });

  it.skipIf(!haveModel)('a paraphrase is served from the cache; a negation and a changed order number are not', async () => {
    const n0 = ai.requests.length;
    const first = await kit.run(ask, { q: 'I would like a refund for order 4417, it arrived broken.' });
    expect(first.output).toMatchObject({ text: 'answer to: I would like a refund for order 4417, it arrived broken.', cacheHit: false });
    expect(ai.requests.length - n0).toBe(1);

    const para = await kit.run(ask, { q: 'Order 4417 arrived broken, I would like my money back please.' });
    expect(para.output).toMatchObject({ text: first.output.text, cacheHit: true });
    expect(ai.requests.length - n0).toBe(1); // the provider never saw it

    const negated = await kit.run(ask, { q: 'I would not like a refund for order 4417, it arrived broken.' });
    expect(negated.output.cacheHit).toBe(false);
    const swapped = await kit.run(ask, { q: 'I would like a refund for order 4418, it arrived broken.' });
    expect(swapped.output.cacheHit).toBe(false);
    expect(ai.requests.length - n0).toBe(3);

    // the hit is in the ledger as a saving (no cost), the misses as calls
    const ledger = await kit.store.costs({ capability: 'demo.ask', records: 20 });
    const hits = ledger.records.filter((r) => (r.details as { cacheHit?: boolean } | undefined)?.cacheHit);
    expect(hits).toHaveLength(1);
    expect(hits[0]).toMatchObject({ costUsd: 0 });
    expect((hits[0]!.details as { savedUsd: number }).savedUsd).toBeGreaterThan(0);
  }, 120_000);

  it('low-urgency calls wait for their batch and go out as one provider request, each item paying its share', async () => {
    const summarize = defineCapability({
      name: 'demo.summarize',
      version: '1',
      input: z.object({ t: z.string() }),
      output: z.object({ text: z.string() }),
      async handler(ctx) {
        const r = await ctx.llm('small', [{ role: 'system', content: 'Summarize.' }, { role: 'user', content: ctx.input.t }], { urgency: 'low' });
        return { text: r.text };
      },
    });
    const n0 = ai.requests.length;
    const runs = await Promise.all(['first thread about invoices', 'second thread about login', 'third thread about shipping'].map((t, i) => kit.run(summarize, { t }, { customer: `C-${i}` })));
    expect(ai.requests.length - n0).toBe(1);
    expect(runs.map((r) => r.output.text)).toEqual(['summary of: first thread about invoices', 'summary of: second thread about login', 'summary of: third thread about shipping']);
    const ledger = await kit.store.costs({ capability: 'demo.summarize', by: ['customerId'] });
    const groups = ledger.groups;
    expect(groups.map((g) => g.key.customerId).sort()).toEqual(['C-0', 'C-1', 'C-2']);
    for (const g of groups) expect(g.totals.costUsd).toBeGreaterThan(0);
  }, 60_000);
});
