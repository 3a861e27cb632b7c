/**
 * The intent cache (models/intent-cache.ts) on a real SQLite store: the guard, TTL, scopes,
 * invalidation by change events, the savings record of a hit, and the committed pair set
 * (models/fixtures/intent-cache-pairs.json) through the real default embedder
 * (all-MiniLM-L6-v2, memory/embeddings): zero false hits, and the paraphrase hit rate reported.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cachedCall, createIntentCache, DEFAULT_INTENT_CACHE_THRESHOLD, MODEL_ENTITY_TYPES, requestSignature, signatureMismatch } from '../../models/index.ts';
import { z } from 'zod';
import { defineEntityType, openStore, type StateStore } from '../../shared-state/index.ts';
import { HashingEmbeddings, LocalMiniLMEmbeddings, localMiniLMPresent } from '../../memory/embeddings/index.ts';
import { loadConfig } from '../../config/index.ts';

interface Pair { kind: 'negation' | 'entity' | 'different' | 'paraphrase'; intent: string; lang: string; a: string; b: string; expect: 'hit' | 'miss' }
const { pairs } = JSON.parse(readFileSync(new URL('../../models/fixtures/intent-cache-pairs.json', import.meta.url), 'utf8')) as { pairs: Pair[] };

const root = mkdtempSync(join(tmpdir(), 'keel-intent-cache-'));
let store: StateStore;
let n = 0;
beforeAll(async () => {
  // an entity type whose changes the cached answers depend on
  const order = defineEntityType({ name: 'order', schemaVersion: 1, schema: z.object({ status: z.string() }), searchFields: [] });
  store = await openStore(`sqlite:${join(root, 'cache.db')}`, { types: [...MODEL_ENTITY_TYPES, order] });
});
afterAll(async () => {
  await store.close();
  rmSync(root, { recursive: true, force: true });
});
const answer = (text: string, costUsd = 0.004) => ({ text, model: 'gpt-4o', costUsd, usage: { inputTokens: 1000, outputTokens: 150, cachedTokens: 0 } });
const req = (text: string, o: Partial<{ scope: string; intent: string; capability: string; uses: string[] }> = {}) => ({ capability: 'ticket.suggest-reply', intent: 'refund', scope: o.scope ?? `customer:${++n}`, text, ...o });

describe('the committed pair set', () => {
  it('has at least 60 negation and entity-swap pairs and 40 paraphrase pairs', () => {
    expect(pairs.filter((p) => p.kind === 'negation' || p.kind === 'entity').length).toBeGreaterThanOrEqual(60);
    expect(pairs.filter((p) => p.kind === 'paraphrase').length).toBeGreaterThanOrEqual(40);
    expect(new Set(pairs.map((p) => p.lang))).toEqual(new Set(['en', 'de', 'fr', 'es']));
  });

  it('the guard alone refuses every negation and entity swap, and lets every paraphrase through to the similarity check', () => {
    for (const p of pairs) {
      const why = signatureMismatch(requestSignature(p.a), requestSignature(p.b));
      if (p.kind === 'negation' || p.kind === 'entity') expect(why, `${p.a} | ${p.b}`).toBeDefined();
      if (p.kind === 'paraphrase') expect(why, `${p.a} | ${p.b}`).toBeUndefined();
    }
  });
});

describe('the intent cache (deterministic test embedder)', () => {
  const embeddings = new HashingEmbeddings({ dim: 256 });

  it('serves the same request again, and records a hit as savings (costUsd 0, savedUsd, cacheHit)', async () => {
    const cache = createIntentCache({ store, embeddings, ttlS: 3600 });
    const r = req('Where is my refund for order #48213?');
    let calls = 0;
    const call = async () => (calls++, answer('Your refund for 48213 was sent on Monday.'));
    const attribution = { agent: 'reply-suggester', capability: 'ticket.suggest-reply', customerId: r.scope, runId: 'run-1' };
    const first = await cachedCall({ cache, request: r, call, costs: store, attribution });
    const second = await cachedCall({ cache, request: { ...r, text: 'where is my refund for order #48213 ?' }, call, costs: store, attribution });
    expect(calls).toBe(1);
    expect(first).toMatchObject({ cacheHit: false, savedUsd: 0 });
    expect(second).toMatchObject({ cacheHit: true, savedUsd: 0.004, text: 'Your refund for 48213 was sent on Monday.' });
    const recs = (await store.costs({ customerId: r.scope, records: 10 })).records;
    expect(recs).toHaveLength(1);
    expect(recs[0]).toMatchObject({ costUsd: 0, model: 'gpt-4o', runId: 'run-1', details: { cacheHit: true, savedUsd: 0.004, route: 'cache', intent: 'refund' } });
  });

  it('never serves a negation or a changed order number, even with an identical vector neighbourhood', async () => {
    // threshold 0: only the guard stands between these
    const cache = createIntentCache({ store, embeddings, ttlS: 3600, threshold: 0 });
    const scope = 'customer:guard';
    await cache.put(req('I received my refund for order 4417.', { scope }), answer('Glad it arrived!'));
    expect(await cache.lookup(req('I have not received my refund for order 4417.', { scope }))).toMatchObject({ hit: false, reason: expect.stringMatching(/negation differs/) });
    expect(await cache.lookup(req('I received my refund for order 4471.', { scope }))).toMatchObject({ hit: false, reason: expect.stringMatching(/entities differ/) });
    expect(await cache.lookup(req('I received my refund for order 4417!', { scope }))).toMatchObject({ hit: true });
  });

  it('keys on capability, intent and customer scope', async () => {
    const cache = createIntentCache({ store, embeddings, ttlS: 3600 });
    const text = 'Please cancel my subscription.';
    await cache.put(req(text, { scope: 'customer:A', intent: 'cancellation' }), answer('Cancelled.'));
    expect((await cache.lookup(req(text, { scope: 'customer:A', intent: ' Cancellation ' }))).hit).toBe(true);
    expect((await cache.lookup(req(text, { scope: 'customer:B', intent: 'cancellation' }))).hit).toBe(false);
    expect((await cache.lookup(req(text, { scope: 'customer:A', intent: 'billing' }))).hit).toBe(false);
    expect((await cache.lookup(req(text, { scope: 'customer:A', intent: 'cancellation', capability: 'ticket.triage' }))).hit).toBe(false);
  });

  it('expires entries after the TTL', async () => {
    let now = new Date('2025-06-01T10:00:00Z');
    const cache = createIntentCache({ store, embeddings, ttlS: 60, now: () => now });
    const r = req('Do you ship to Canada?', { scope: 'customer:ttl' });
    await cache.put(r, answer('Yes.'));
    now = new Date('2025-06-01T10:00:59Z');
    expect((await cache.lookup(r)).hit).toBe(true);
    now = new Date('2025-06-01T10:01:01Z');
    expect(await cache.lookup(r)).toMatchObject({ hit: false });
    // ttl 0 disables the cache
    expect(await createIntentCache({ store, embeddings, ttlS: 0 }).lookup(r)).toMatchObject({ hit: false, reason: 'cache disabled (ttl 0)' });
  });

  it('a change event of an entity the answer used deletes the entry; others stay', async () => {
    const cache = createIntentCache({ store, embeddings, ttlS: 3600 });
    const cursor = await store.headCursor();
    const a = req('Where is order 9931?', { scope: 'customer:inv', uses: ['order/9931'] });
    const b = req('Where is order 1234?', { scope: 'customer:inv', uses: ['order/1234'] });
    await cache.put(a, answer('On its way.'));
    await cache.put(b, answer('Delivered.'));
    // a change of the entity answer `a` used, in the shared state's change log
    await store.append('order', '9931', 0, [{ type: 'created', data: { status: 'shipped' } }], { actor: { kind: 'system', id: 'test' } });
    const r = await cache.invalidateFromChanges(cursor);
    expect(r.cursor).toBeGreaterThan(cursor);
    expect((await cache.lookup(a)).hit).toBe(false);
    expect((await cache.lookup(b)).hit).toBe(true);
    // invalidate by reference directly; storing again revives it
    expect(await cache.invalidate(['order/1234'])).toBe(1);
    expect((await cache.lookup(b)).hit).toBe(false);
    await cache.put(b, answer('Delivered.'));
    expect((await cache.lookup(b)).hit).toBe(true);
  });
});

describe('the pair set through the real default embedder (all-MiniLM-L6-v2)', () => {
  const modelsDir = loadConfig({}).modelsDir;
  it('zero false hits; paraphrases hit', { timeout: 600_000 }, async (ctx) => {
    if (!(await localMiniLMPresent(modelsDir))) {
      console.log(`intent cache pair set skipped: all-MiniLM-L6-v2 is not provisioned in ${modelsDir} (run npm run provision)`);
      ctx.skip();
    }
    const cache = createIntentCache({ store, embeddings: new LocalMiniLMEmbeddings({ modelsDir }), ttlS: 3600 });
    let falseHits = 0;
    let paraphraseHits = 0;
    const missed: string[] = [];
    for (const [i, p] of pairs.entries()) {
      const scope = `pairs:${i}`;
      await cache.put(req(p.a, { scope, intent: p.intent }), answer(`answer to: ${p.a}`));
      const r = await cache.lookup(req(p.b, { scope, intent: p.intent }));
      if (p.expect === 'miss' && r.hit) falseHits++;
      if (p.kind === 'paraphrase') {
        if (r.hit) paraphraseHits++;
        else missed.push(`${r.reason}: ${p.a} | ${p.b}`);
      }
    }
    const paraphrases = pairs.filter((p) => p.kind === 'paraphrase').length;
    const rate = paraphraseHits / paraphrases;
    console.log(`intent cache at threshold ${DEFAULT_INTENT_CACHE_THRESHOLD}: false hits ${falseHits}/${pairs.length - paraphrases}, paraphrase hit rate ${(rate * 100).toFixed(1)}% (${paraphraseHits}/${paraphrases})\n  missed: ${missed.join('\n  missed: ')}`);
    expect(falseHits).toBe(0);
    // measured 40/42 (95.2%) when the threshold was chosen (docs/models-and-cost.md)
    expect(rate).toBeGreaterThanOrEqual(0.9);
  });
});
