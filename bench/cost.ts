/**
 * `npm run bench -- cost [--json] [--quick]`: what triage of a committed corpus of inbound
 * messages (bench/fixtures/cost-corpus.json: 240 messages, en/de/fr/es, returning customers,
 * repeated questions and negated near-duplicates) costs, and how often it agrees with the
 * all-large answers, for three policies:
 *
 * - **all-large**: every message to the large model (the reference answers);
 * - **tiered**: models/router.ts — tier-0 heuristics when sure, else the small model, the large
 *   one for high-value (urgent) or very unsure messages and when the small model is unsure;
 * - **tiered + cache**: the same, with the intent cache (models/intent-cache.ts) in front of the
 *   model calls, on the real default embedder when it is provisioned.
 *
 * The models are a local OpenAI-compatible HTTP server (testkit) with fixed token counts (900 in,
 * 60 out) priced as gpt-4o-mini and gpt-4o; its answer depends on the prompt deterministically:
 * the large model answers the corpus label at confidence 0.95; the small one is unsure (0.45) on
 * a fixed fifth of the messages and confidently wrong on a tenth. Every call goes through
 * `invokeModel` with a budget admission on a real SQLite store (engine and customer budgets);
 * the admission overhead (admit + settle) per call is reported as p50/p99.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import type { EmbeddingsInterface } from '@langchain/core/embeddings';
import { BUILTIN_PRICES, cachedCall, costOf, createBudgetGuard, createIntentCache, createModelRegistry, decideRoute, escalateAfterSmall, MODEL_ENTITY_TYPES, routeAndCall, type BudgetGuard, type ModelRegistry } from '../models/index.ts';
import { openStore, type StateStore } from '../shared-state/index.ts';
import { startOpenAiServer } from '../testkit/index.ts';
import { cleanText, INTENTS, triageText } from '../agents/inbound/index.ts';
import { HashingEmbeddings, LocalMiniLMEmbeddings, localMiniLMPresent } from '../memory/embeddings/index.ts';
import { loadConfig } from '../config/index.ts';
import { figures, percentile, type Bench, type BenchContext, type ScenarioResult } from './lib.ts';

interface CorpusMessage { id: string; customer: string; email: string; lang: string; subject: string; text: string; intent: string; urgency: 'normal' | 'high'; kind: string }

const CORPUS = JSON.parse(readFileSync(new URL('./fixtures/cost-corpus.json', import.meta.url), 'utf8')) as { messages: CorpusMessage[] };
const USAGE = { prompt_tokens: 900, completion_tokens: 60 };
const SYSTEM = 'Classify the intent of this customer support message. Answer with JSON {"intent": ..., "confidence": 0..1}.';

const bucket = (text: string) => createHash('sha256').update(text).digest()[0]! % 10;

/** The models' deterministic answers: the large one knows the label; the small one is unsure on 2/10 and wrong on 1/10. */
function modelReply(byText: Map<string, CorpusMessage>) {
  return (body: Record<string, unknown>): string => {
    const user = (body.messages as { role: string; content: string }[]).at(-1)!.content;
    const m = byText.get(user);
    const truth = m?.intent ?? 'other';
    if (body.model === 'gpt-4o') return JSON.stringify({ intent: truth, confidence: 0.95 });
    const b = bucket(user);
    if (b < 2) return JSON.stringify({ intent: truth, confidence: 0.45 });
    if (b === 2) return JSON.stringify({ intent: INTENTS[(INTENTS.indexOf(truth as (typeof INTENTS)[number]) + 1) % INTENTS.length], confidence: 0.8 });
    return JSON.stringify({ intent: truth, confidence: 0.85 });
  };
}

function parse(text: string): { intent: string; confidence: number } {
  try {
    const j = JSON.parse(text) as { intent?: unknown; confidence?: unknown };
    return { intent: String(j.intent), confidence: Number(j.confidence) };
  } catch {
    return { intent: 'other', confidence: 0 };
  }
}

/** A guard that times its own admit and settle (the admission overhead of each call). */
function timedGuard(g: BudgetGuard, lat: number[]): BudgetGuard {
  return {
    ...g,
    admit: async (r) => {
      const t = performance.now();
      try {
        return await g.admit(r);
      } finally {
        lat.push(performance.now() - t);
      }
    },
    settle: async (a, usd) => {
      const t = performance.now();
      try {
        return await g.settle(a, usd);
      } finally {
        lat[lat.length - 1]! += performance.now() - t;
      }
    },
  };
}

type Mode = 'all-large' | 'tiered' | 'tiered + cache';

interface ModeResult {
  labels: Map<string, string>;
  elapsedMs: number;
  latencies: number[];
  costUsd: number;
  calls: { small: number; large: number };
  tier0: number;
  cacheHits: number;
  cacheSavedUsd: number;
  admissionMs: number[];
  ledgerSavedUsd: number;
}

async function runMode(mode: Mode, messages: CorpusMessage[], models: ModelRegistry, embeddings: EmbeddingsInterface | undefined, dir: string): Promise<ModeResult> {
  const store: StateStore = await openStore(`sqlite:${join(dir, `${mode.replace(/\W+/g, '-')}.db`)}`, { types: [...MODEL_ENTITY_TYPES] });
  const admissionMs: number[] = [];
  try {
    const base = createBudgetGuard(store);
    const actor = { kind: 'human', id: 'bench' } as const;
    await base.set({ scope: 'engine', usd: 1_000, period: 'day', mode: 'hard' }, actor);
    for (const c of new Set(messages.map((m) => m.customer))) await base.set({ scope: 'customer', key: c, usd: 10, period: 'month', mode: 'hard' }, actor);
    const guard = timedGuard(base, admissionMs);
    const cache = mode === 'tiered + cache' && embeddings ? createIntentCache({ store, embeddings, ttlS: 86_400 }) : undefined;
    const labels = new Map<string, string>();
    const latencies: number[] = [];
    const calls = { small: 0, large: 0 };
    let tier0 = 0;
    let cacheHits = 0;
    let cacheSavedUsd = 0;
    const t0 = performance.now();
    for (const m of messages) {
      const s = performance.now();
      const attribution = { agent: 'triage', capability: 'ticket.triage', customerId: m.customer, runId: `run-${m.id}` };
      const ask = async (tier: 1 | 2, decision?: ReturnType<typeof decideRoute>) => {
        const call = async () => {
          const r = await routeAndCall({ models, tier, ...(decision ? { decision } : {}), messages: [{ role: 'system', content: SYSTEM }, { role: 'user', content: m.text }], attribution, costs: store, invoke: { budget: { guard, scopes: { customerId: m.customer }, maxOutputTokens: 60 } } });
          calls[tier === 1 ? 'small' : 'large']++;
          return r;
        };
        if (!cache) return parse((await call()).text);
        const r = await cachedCall({ cache, request: { capability: `ticket.triage/tier${tier}`, intent: t0Intent, scope: `customer:${m.customer}`, text: m.text }, call, costs: store, attribution });
        if (r.cacheHit) {
          cacheHits++;
          cacheSavedUsd += r.savedUsd;
        }
        return parse(r.text);
      };
      const h = triageText(cleanText(m.text), { subject: m.subject });
      const t0Intent: string = h.intent;
      let label: string;
      if (mode === 'all-large') label = (await ask(2)).intent;
      else {
        const d = decideRoute({ confidence: h.confidence, value: m.urgency === 'high' ? 'high' : 'normal', available: { small: true, large: true } });
        if (d.tier === 0) {
          tier0++;
          label = h.intent;
        } else {
          let a = await ask(d.tier, d);
          const up = d.tier === 1 ? escalateAfterSmall({ confidence: a.confidence, available: { large: true } }) : undefined;
          if (up) a = await ask(2, up);
          label = a.intent;
        }
      }
      labels.set(m.id, label);
      latencies.push(performance.now() - s);
    }
    const elapsedMs = performance.now() - t0;
    const report = await store.costs({ records: 100_000 });
    const ledgerSavedUsd = report.records.reduce((x, r) => x + (typeof r.details?.savedUsd === 'number' ? r.details.savedUsd : 0), 0);
    return { labels, elapsedMs, latencies, costUsd: report.totals.costUsd, calls, tier0, cacheHits, cacheSavedUsd, admissionMs, ledgerSavedUsd };
  } finally {
    await store.close();
  }
}

const round = (n: number, d = 6) => Math.round(n * 10 ** d) / 10 ** d;

export const costBench: Bench = {
  name: 'cost',
  description: 'triage of 240 inbound messages: cost and agreement with all-large for all-large, tiered, tiered + cache; budget admission p50/p99',
  async run(ctx: BenchContext) {
    const messages = ctx.quick ? CORPUS.messages.slice(0, 60) : CORPUS.messages;
    const byText = new Map(messages.map((m) => [m.text, m]));
    const ai = await startOpenAiServer({ usage: USAGE, reply: modelReply(byText) });
    const dir = mkdtempSync(join(tmpdir(), 'keel-bench-cost-'));
    try {
      const models = createModelRegistry({ KEEL_MODEL_SMALL: 'openai:gpt-4o-mini', KEEL_MODEL_LARGE: 'openai:gpt-4o', KEEL_OPENAI_BASE_URL: ai.url, OPENAI_API_KEY: 'sk-bench', KEEL_MODEL_MAX_RETRIES: '0' });
      const modelsDir = loadConfig({}).modelsDir;
      const real = await localMiniLMPresent(modelsDir);
      const embeddings: EmbeddingsInterface = real ? new LocalMiniLMEmbeddings({ modelsDir }) : new HashingEmbeddings({ dim: 256 });
      const embedder = real ? 'local:all-minilm-l6-v2' : 'hashing:256 (all-MiniLM-L6-v2 not provisioned: run npm run provision)';
      const results: ScenarioResult[] = [];
      const perCall = { small: costOf(BUILTIN_PRICES['gpt-4o-mini']!, { inputTokens: USAGE.prompt_tokens, outputTokens: USAGE.completion_tokens, cachedTokens: 0 }), large: costOf(BUILTIN_PRICES['gpt-4o']!, { inputTokens: USAGE.prompt_tokens, outputTokens: USAGE.completion_tokens, cachedTokens: 0 }) };
      let reference: Map<string, string> | undefined;
      let allLargeCost = 0;
      const admission: number[] = [];
      for (const mode of ['all-large', 'tiered', 'tiered + cache'] as const) {
        ctx.progress(`${mode}: ${messages.length} messages${mode === 'tiered + cache' ? ` (embedder ${embedder})` : ''}`);
        const before = ai.requests.length;
        const r = await runMode(mode, messages, models, embeddings, dir);
        reference ??= r.labels;
        if (mode === 'all-large') allLargeCost = r.costUsd;
        admission.push(...r.admissionMs);
        const agree = messages.filter((m) => r.labels.get(m.id) === reference!.get(m.id)).length;
        results.push({
          scenario: `triage, ${mode}`,
          ...figures(messages.length, r.elapsedMs, r.latencies, {
            messages: messages.length,
            cost_usd: round(r.costUsd),
            cost_vs_all_large: allLargeCost > 0 ? round(r.costUsd / allLargeCost, 4) : null,
            agreement_with_all_large: round(agree / messages.length, 4),
            provider_calls: ai.requests.length - before,
            calls_small: r.calls.small,
            calls_large: r.calls.large,
            tier0_answers: r.tier0,
            cache_hits: r.cacheHits,
            cache_saved_usd: round(r.cacheSavedUsd),
            ledger_saved_usd: round(r.ledgerSavedUsd),
            price_per_call_usd: perCall,
            ...(mode === 'tiered + cache' ? { embedder } : {}),
          }),
          baseline: null,
          ratio: null,
        });
      }
      const sorted = [...admission].sort((a, b) => a - b);
      results.push({
        scenario: 'budget admission per model call (admit + settle, engine + customer budgets, SQLite)',
        throughput_per_s: round(sorted.length / (sorted.reduce((a, b) => a + b, 0) / 1000), 1),
        p50_ms: round(percentile(sorted, 50), 3),
        p99_ms: round(percentile(sorted, 99), 3),
        notes: { calls: sorted.length, store: 'sqlite (temp dir)', scopes: ['engine', 'customer'] },
        baseline: null,
        ratio: null,
      });
      return { results, machine: { embedder } };
    } finally {
      await ai.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  },
};
