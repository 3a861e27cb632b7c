/**
 * Tiers that pay (models/router.ts, agents/inbound/models.ts): the routing rules, the savings
 * computed against the all-large price, and tiers 1 and 2 of the inbound agents through the
 * capability test kit against an in-process OpenAI-compatible HTTP server (127.0.0.1:0) that
 * records what it received. Tier 2 had never been exercised before.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BUILTIN_PRICES, costOf, createModelRegistry, decideRoute, escalateAfterSmall, routeAndCall, savedAgainstLarge, largePriceOf } from '../../models/index.ts';
import { createCapabilityTestKit, type CapabilityTestKit } from '../../runtime/index.ts';
import { openStore, type StateStore } from '../../shared-state/index.ts';
import { startOpenAiServer, type OpenAiServer } from '../../testkit/index.ts';
import type { InboundMessage } from '../../channels/index.ts';
import { INBOUND_ENTITY_TYPES } from '../../agents/inbound/index.ts';
import { intake } from '../../agents/inbound/intake.ts';
import { triage } from '../../agents/inbound/triage.ts';
import { suggestReply } from '../../agents/inbound/reply-suggester.ts';
import { closeMailSenders } from '../../agents/inbound/mail.ts';

const both = { small: true, large: true };

describe('decideRoute', () => {
  it('keeps tier 0 when the heuristics are sure and the value is not high', () => {
    expect(decideRoute({ confidence: 0.8, available: both })).toMatchObject({ tier: 0, route: 'heuristics' });
    expect(decideRoute({ confidence: 0.6, available: both }).tier).toBe(0);
    expect(decideRoute({ confidence: 0.8, value: 'low', available: both }).reason).toMatch(/heuristics sure \(confidence 0.8 ≥ 0.6\)/);
  });
  it('asks the small model when the heuristics are unsure, the large one for low confidence or high value', () => {
    expect(decideRoute({ confidence: 0.45, available: both })).toMatchObject({ tier: 1, route: 'small', reason: 'heuristics unsure (confidence 0.45 < 0.6)' });
    expect(decideRoute({ confidence: 0.2, available: both })).toMatchObject({ tier: 2, route: 'large' });
    expect(decideRoute({ confidence: 0.9, value: 'high', available: both })).toMatchObject({ tier: 2, reason: expect.stringMatching(/^high value/) });
    expect(decideRoute({ confidence: 0.45, value: 'high', available: { small: true, large: false } })).toMatchObject({ tier: 1, reason: expect.stringMatching(/no large model/) });
    expect(decideRoute({ confidence: 0.45, available: { small: false, large: true } })).toMatchObject({ tier: 2, reason: expect.stringMatching(/no small model/) });
    expect(decideRoute({ confidence: 0.1, available: { small: false, large: false } })).toMatchObject({ tier: 0, reason: 'no model configured: tier 0 only' });
    expect(decideRoute({ confidence: 0.9, force: true, available: { small: true, large: true } })).toMatchObject({ tier: 1, reason: 'forced to a model' });
    expect(decideRoute({ confidence: undefined, available: both })).toMatchObject({ tier: 1, reason: 'no tier-0 answer' });
  });
  it('climbs from small to large only when the small answer is unsure and a large model is there', () => {
    expect(escalateAfterSmall({ confidence: 0.5, available: { large: true } })).toMatchObject({ tier: 2, reason: 'small model unsure (confidence 0.5 < 0.6)' });
    expect(escalateAfterSmall({ confidence: 0.7, available: { large: true } })).toBeUndefined();
    expect(escalateAfterSmall({ confidence: 0.1, available: { large: false } })).toBeUndefined();
  });
  it('computes the saving against the large price for the same tokens', () => {
    const usage = { inputTokens: 1000, outputTokens: 200, cachedTokens: 100 };
    const large = BUILTIN_PRICES['gpt-4o']!;
    const spent = costOf(BUILTIN_PRICES['gpt-4o-mini']!, usage);
    expect(savedAgainstLarge(usage, spent, large)).toBeCloseTo((900 * 2.5 + 100 * 1.25 + 200 * 10) / 1e6 - (900 * 0.15 + 100 * 0.075 + 200 * 0.6) / 1e6, 12);
    expect(savedAgainstLarge(usage, 1, large)).toBe(0);
    expect(savedAgainstLarge(usage, spent, undefined)).toBeUndefined();
  });
});

describe('routeAndCall and the inbound ladder against a local OpenAI-compatible server', () => {
  let ai: OpenAiServer;
  // the small model is unsure of itself on "unsure" tickets; the large one is sure; drafts echo the model
  const reply = (body: Record<string, unknown>) => {
    const model = String(body.model);
    const msgs = body.messages as { role: string; content: string }[];
    const system = msgs[0]?.content ?? '';
    if (system.startsWith('You triage')) {
      const confidence = model === 'gpt-4o' ? 0.93 : /widget/.test(msgs.at(-1)!.content) ? 0.42 : 0.82;
      return JSON.stringify({ intent: model === 'gpt-4o' ? 'bug' : 'question', urgency: 'normal', sentiment: 'neutral', entities: [], confidence, escalate: false, reasons: [`${model} read it`] });
    }
    return `Draft by ${model}. The Keel Desk`;
  };
  const root = mkdtempSync(join(tmpdir(), 'keel-router-'));
  const kits: CapabilityTestKit[] = [];
  let store: StateStore;
  beforeAll(async () => {
    ai = await startOpenAiServer({ usage: { prompt_tokens: 1200, completion_tokens: 150, cached_tokens: 200 }, reply });
    store = await openStore(`sqlite:${join(root, 'route.db')}`, { types: [] });
  });
  afterEach(async () => {
    for (const k of kits.splice(0)) await k.close();
  });
  afterAll(async () => {
    await store.close();
    await ai.stop();
    await closeMailSenders();
    rmSync(root, { recursive: true, force: true });
  });
  const env = (large = true) => ({ KEEL_MODEL_SMALL: 'openai:gpt-4o-mini', ...(large ? { KEEL_MODEL_LARGE: 'openai:gpt-4o' } : {}), KEEL_OPENAI_BASE_URL: ai.url, OPENAI_API_KEY: 'sk-test', KEEL_MODEL_MAX_RETRIES: '0' });

  it('records the route, its reason and the money saved against the large price in the ledger', async () => {
    const models = createModelRegistry(env());
    const d = decideRoute({ confidence: 0.4, available: both });
    const before = ai.requests.length;
    const r = await routeAndCall({ models, tier: 1, decision: d, messages: [{ role: 'user', content: 'hello' }], attribution: { agent: 'a', capability: 'c', customerId: 'C-1' }, costs: store });
    expect(ai.requests.length - before).toBe(1);
    expect(ai.requests.at(-1)!.body.model).toBe('gpt-4o-mini');
    const usage = { inputTokens: 1200, outputTokens: 150, cachedTokens: 200 };
    const spent = costOf(BUILTIN_PRICES['gpt-4o-mini']!, usage);
    const allLarge = costOf(BUILTIN_PRICES['gpt-4o']!, usage);
    expect(r).toMatchObject({ tier: 1, route: 'small', costUsd: spent, usage });
    expect(r.savedUsd).toBeCloseTo(allLarge - spent, 9);
    expect(largePriceOf(models)).toMatchObject({ input: 2.5, output: 10 });
    const rec = (await store.costs({ customerId: 'C-1', records: 10 })).records[0]!;
    expect(rec.details).toMatchObject({ route: 'small', routeReason: d.reason, tier: 1 });
    expect(rec.details!.savedUsd).toBeCloseTo(allLarge - spent, 9);
    // a tier-2 call saves nothing
    const r2 = await routeAndCall({ models, tier: 2, messages: [{ role: 'user', content: 'hello' }], attribution: { agent: 'a', capability: 'c', customerId: 'C-2' }, costs: store });
    expect(r2).toMatchObject({ route: 'large', savedUsd: 0, costUsd: allLarge });
    expect((await store.costs({ customerId: 'C-2', records: 1 })).records[0]!.details).toMatchObject({ route: 'large', savedUsd: 0, tier: 2 });
  });

  async function kitWith(large: boolean): Promise<CapabilityTestKit> {
    const dataDir = join(root, randomUUID());
    mkdirSync(dataDir);
    const k = await createCapabilityTestKit({ entities: INBOUND_ENTITY_TYPES, agent: 'intake', models: createModelRegistry(env(large)), config: { dataDir, supportSignature: 'The Keel Desk' } });
    kits.push(k);
    return k;
  }
  const mail = (text: string, subject = 'Hello'): InboundMessage => {
    const id = `<${randomUUID()}@example.com>`;
    return {
      id: randomUUID(), channel: 'email', receivedAt: new Date().toISOString(), customer: { email: 'grace@example.com', name: 'Grace Hopper' }, conversationId: id, idempotencyKey: id,
      subject, text, messageId: id, references: [], headers: {}, attachments: [],
      flags: { autoReply: false, bulk: false, htmlOnly: false, encodingRepaired: false, attachmentsDropped: false, truncated: false, fromMismatch: false },
    };
  };

  it('triage: unsure heuristics ask the small model; an unsure small answer climbs to the large one (tier 2)', async () => {
    const k = await kitWith(true);
    const { output: t } = await k.run(intake, { message: mail('Hello, quick thing about the widget thing from before, see attached.') });
    const before = ai.requests.length;
    const r = await k.run(triage, { ticketId: t.ticketId }, { agent: 'triage', customer: t.customerId });
    const sent = ai.requests.slice(before).map((q) => q.body.model);
    expect(sent).toEqual(['gpt-4o-mini', 'gpt-4o']);
    expect(r.output).toMatchObject({ tier: 2, intent: 'bug', confidence: 0.93 });
    expect(r.output.reasons).toEqual(expect.arrayContaining([expect.stringMatching(/^route: tier 1: heuristics unsure/), 'route: tier 2: small model unsure (confidence 0.42 < 0.6)']));
    expect(r.modelCalls.map((c) => c.tier)).toEqual(['small', 'large']);
  });

  it('triage without a large model stays at tier 1 with the small answer', async () => {
    const k = await kitWith(false);
    const { output: t } = await k.run(intake, { message: mail('Hello, quick thing about the widget thing from before, see attached.') });
    const before = ai.requests.length;
    const r = await k.run(triage, { ticketId: t.ticketId }, { agent: 'triage' });
    expect(ai.requests.slice(before).map((q) => q.body.model)).toEqual(['gpt-4o-mini']);
    expect(r.output).toMatchObject({ tier: 1, confidence: 0.42 });
  });

  it('triage of a sure ticket makes no call at all', async () => {
    const k = await kitWith(true);
    const { output: t } = await k.run(intake, { message: mail('Hi, I was charged twice for order 48213 and want a refund of the second charge of $40. Thanks, Grace', 'Refund for order 48213') });
    const before = ai.requests.length;
    const r = await k.run(triage, { ticketId: t.ticketId }, { agent: 'triage' });
    expect(r.output.tier).toBe(0);
    expect(r.output.confidence).toBeGreaterThanOrEqual(0.6);
    expect(ai.requests.length).toBe(before);
  });

  it('reply-suggester drafts with the small model; an urgent (high-value) ticket goes to the large one', async () => {
    const k = await kitWith(true);
    const { output: calm } = await k.run(intake, { message: mail('Hi, I was charged twice for order 48213 and want a refund of the second charge of $40. Thanks, Grace', 'Refund for order 48213') });
    let before = ai.requests.length;
    const a = await k.run(suggestReply, { ticketId: calm.ticketId }, { agent: 'reply-suggester' });
    expect(ai.requests.slice(before).map((q) => q.body.model)).toEqual(['gpt-4o-mini']);
    expect(a.output).toMatchObject({ tier: 1, text: 'Draft by gpt-4o-mini. The Keel Desk' });

    const { output: urgent } = await k.run(intake, { message: mail('URGENT!!! The whole site is DOWN and we are losing orders, fix it NOW', 'Site down') });
    before = ai.requests.length;
    const b = await k.run(suggestReply, { ticketId: urgent.ticketId }, { agent: 'reply-suggester' });
    expect(ai.requests.slice(before).map((q) => q.body.model)).toEqual(['gpt-4o']);
    expect(b.output).toMatchObject({ tier: 2, text: 'Draft by gpt-4o. The Keel Desk' });
    expect(b.modelCalls.map((c) => c.tier)).toEqual(['large']);
  });
});
