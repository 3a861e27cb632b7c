/**
 * The price table: USD per 1M tokens for input, cached input and output.
 *
 * Token convention (the one OpenAI's `prompt_tokens` and LangChain's `usage_metadata` use):
 * `inputTokens` counts every prompt token INCLUDING the cached ones; `cachedTokens` is the part
 * of them the provider served from its prompt cache. So a call costs
 *
 *   ((inputTokens - cachedTokens) × input + cachedTokens × cachedInput + outputTokens × output) / 1e6
 *
 * Anthropic's cache writes are billed here at the plain input rate (LangChain folds them into
 * `input_tokens`), which undercounts them by 25%.
 */
import { z } from 'zod';
import { ModelConfigError } from './errors.ts';
import { modelEnv } from '../config/index.ts';

/** USD per 1M tokens. */
export interface ModelPrice {
  input: number;
  /** prompt tokens served from the provider's cache */
  cachedInput: number;
  output: number;
}

/**
 * Keys are model names as the provider reports them (`gpt-4o-mini`), optionally prefixed with the
 * provider (`openai:gpt-4o-mini`), or a provider wildcard (`ollama:*`). A key also matches dated
 * or suffixed variants: `gpt-4o-mini` prices `gpt-4o-mini-2024-07-18` (the longest key wins).
 */
export type PriceTable = Readonly<Record<string, ModelPrice>>;

export interface TokenUsage {
  /** all prompt tokens, cached ones included */
  inputTokens: number;
  outputTokens: number;
  /** the part of `inputTokens` read from the prompt cache */
  cachedTokens: number;
}

/** Public list prices (USD per 1M tokens) of a few models, as published by their providers. */
export const BUILTIN_PRICES: PriceTable = Object.freeze({
  'gpt-4o-mini': { input: 0.15, cachedInput: 0.075, output: 0.6 },
  'gpt-4o': { input: 2.5, cachedInput: 1.25, output: 10 },
  'gpt-4.1-nano': { input: 0.1, cachedInput: 0.025, output: 0.4 },
  'gpt-4.1-mini': { input: 0.4, cachedInput: 0.1, output: 1.6 },
  'gpt-4.1': { input: 2, cachedInput: 0.5, output: 8 },
  'claude-3-5-haiku': { input: 0.8, cachedInput: 0.08, output: 4 },
  'claude-haiku-4-5': { input: 1, cachedInput: 0.1, output: 5 },
  'claude-sonnet-4': { input: 3, cachedInput: 0.3, output: 15 },
  // local models cost nothing per token (their compute time is in the ledger's computeMs)
  'ollama:*': { input: 0, cachedInput: 0, output: 0 },
  // scripted models are free unless KEEL_PRICE_SCRIPTED / KEEL_PRICES say otherwise (tests, cost simulations)
  'scripted:*': { input: 0, cachedInput: 0, output: 0 },
});

const price = z.strictObject({
  input: z.number().finite().nonnegative(),
  cachedInput: z.number().finite().nonnegative().optional(),
  output: z.number().finite().nonnegative(),
});

/**
 * The built-in table with the environment's overrides, later ones winning:
 * - `KEEL_PRICE_<PROVIDER>=input,cachedInput,output` (e.g. `KEEL_PRICE_SCRIPTED=1,0.5,2`): the
 *   price of that provider's models the table does not name (`<provider>:*`);
 * - `KEEL_PRICES` = JSON `{ "model or provider:model or provider:*": { input, cachedInput?, output } }`
 *   (cachedInput defaults to input).
 *
 * Throws {@link ModelConfigError} naming each malformed variable.
 */
export function loadPriceTable(env: Record<string, string | undefined> = modelEnv()): PriceTable {
  const { table, issues } = readPriceTable(env);
  if (issues.length) throw new ModelConfigError(issues);
  return table;
}

/** @internal {@link loadPriceTable} without the throw, so the registry can report every bad variable at once. */
export function readPriceTable(env: Record<string, string | undefined>): { table: PriceTable; issues: { variable: string; message: string }[] } {
  const table: Record<string, ModelPrice> = { ...BUILTIN_PRICES };
  const issues: { variable: string; message: string }[] = [];
  for (const [name, value] of Object.entries(env).sort(([a], [b]) => a.localeCompare(b))) {
    const m = /^KEEL_PRICE_([A-Z0-9_]+)$/.exec(name);
    if (!m || value === undefined || value === '') continue;
    const parts = value.split(',').map((p) => Number(p.trim()));
    if ((parts.length !== 2 && parts.length !== 3) || parts.some((n) => !Number.isFinite(n) || n < 0)) {
      issues.push({ variable: name, message: `expected "input,cachedInput,output" (or "input,output") in USD per 1M tokens, got '${value}'` });
      continue;
    }
    const [input, a, b] = parts as [number, number, number | undefined];
    table[`${m[1]!.toLowerCase()}:*`] = b === undefined ? { input, cachedInput: input, output: a } : { input, cachedInput: a, output: b };
  }
  const json = env.KEEL_PRICES;
  if (json !== undefined && json.trim() !== '') {
    let raw: unknown;
    try {
      raw = JSON.parse(json);
    } catch (err) {
      issues.push({ variable: 'KEEL_PRICES', message: `not JSON: ${(err as Error).message}` });
    }
    if (raw !== undefined) {
      const parsed = z.record(z.string().min(1), price).safeParse(raw);
      if (!parsed.success) {
        issues.push({ variable: 'KEEL_PRICES', message: parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ') + ' (expected { "model": { "input": n, "cachedInput": n, "output": n } })' });
      } else {
        for (const [k, p] of Object.entries(parsed.data)) table[k] = { input: p.input, cachedInput: p.cachedInput ?? p.input, output: p.output };
      }
    }
  }
  return { table: Object.freeze(table), issues };
}

/** The entry that prices a model, and which key matched; undefined when none does. */
export function lookupPrice(model: string, table: PriceTable = BUILTIN_PRICES): { key: string; price: ModelPrice } | undefined {
  const colon = model.indexOf(':');
  const provider = colon > 0 ? model.slice(0, colon) : undefined;
  const bare = colon > 0 ? model.slice(colon + 1) : model;
  const candidates = provider ? [model, bare] : [bare];
  for (const c of candidates) {
    const p = table[c];
    if (p) return { key: c, price: p };
  }
  // longest key that is a prefix ending at a '-' boundary: gpt-4o-mini → gpt-4o-mini-2024-07-18
  let best: string | undefined;
  for (const key of Object.keys(table)) {
    if (key.endsWith(':*')) continue;
    const ok = candidates.some((c) => c.startsWith(key) && c.charAt(key.length) === '-');
    if (ok && (!best || key.length > best.length)) best = key;
  }
  if (best) return { key: best, price: table[best]! };
  if (provider) {
    const p = table[`${provider}:*`];
    if (p) return { key: `${provider}:*`, price: p };
  }
  return undefined;
}

/** Rounds to a billionth of a dollar so sums of records compare exactly. */
export function roundUsd(usd: number): number {
  return Math.round(usd * 1e9) / 1e9;
}

/**
 * What a call cost in USD, from the table (default: the built-in one). `model` is a model name,
 * `provider:model`, or e.g. `ollama:llama3.1`. A model the table does not price costs 0 — use
 * {@link lookupPrice} to tell "free" from "unpriced".
 */
export function priceOf(model: string, usage: TokenUsage, table: PriceTable = BUILTIN_PRICES): number {
  const hit = lookupPrice(model, table);
  if (!hit) return 0;
  return costOf(hit.price, usage);
}

/** The formula in this module's header, rounded with {@link roundUsd}. */
export function costOf(p: ModelPrice, usage: TokenUsage): number {
  const input = Math.max(0, usage.inputTokens);
  const cached = Math.min(Math.max(0, usage.cachedTokens), input);
  const output = Math.max(0, usage.outputTokens);
  return roundUsd(((input - cached) * p.input + cached * p.cachedInput + output * p.output) / 1e6);
}
