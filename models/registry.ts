/**
 * The model registry: which LangChain chat model serves each tier, configured by environment.
 *
 * Tier 0 is heuristics and needs no model (the caller's business); tier 1 is a small model
 * (`KEEL_MODEL_SMALL`), tier 2 a large one (`KEEL_MODEL_LARGE`). Each is a `provider:model`
 * string. Nothing configured is a valid state: the engine runs on tier 0 and a capability that
 * needs a model gets a {@link ModelNotConfiguredError} naming the variable to set.
 */
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BaseChatModel } from '@langchain/core/language_models/chat_models';
import type * as OpenAI from '@langchain/openai';
import type * as Anthropic from '@langchain/anthropic';
import type * as Ollama from '@langchain/ollama';
import { ModelConfigError, ModelNotConfiguredError } from './errors.ts';
import { readPriceTable, lookupPrice, type ModelPrice, type PriceTable } from './prices.ts';
import { ScriptedChatModel, readScript, type ScriptedReply } from './scripted.ts';
import { modelEnv } from '../config/index.ts';

/**
 * A provider package, loaded on the first `get()` of a tier that uses it (synchronously, through
 * Node's require of its ES module build, so it shares @langchain/core with the rest): a process
 * pays for the providers it is configured with, not for all three.
 */
function providerModule<T>(pkg: '@langchain/openai' | '@langchain/anthropic' | '@langchain/ollama'): T {
  return createRequire(import.meta.url)(fileURLToPath(import.meta.resolve(pkg))) as T;
}

export type ModelTier = 1 | 2;
export type TierName = 'small' | 'large';
export type ModelProvider = 'openai' | 'anthropic' | 'ollama' | 'scripted';

export const MODEL_PROVIDERS: readonly ModelProvider[] = ['openai', 'anthropic', 'ollama', 'scripted'];

/** The tiers a model can be configured for, and the variable that configures each. */
export const MODEL_TIERS: readonly { tier: ModelTier; name: TierName; variable: string }[] = [
  { tier: 1, name: 'small', variable: 'KEEL_MODEL_SMALL' },
  { tier: 2, name: 'large', variable: 'KEEL_MODEL_LARGE' },
];

export const DEFAULT_OLLAMA_URL = 'http://127.0.0.1:11434';
export const DEFAULT_MODEL_MAX_RETRIES = 2;
export const DEFAULT_MODEL_TIMEOUT_MS = 120_000;

export interface ModelEnvDoc {
  name: string;
  default: string;
  description: string;
}

/** Every variable the model layer reads, its default and meaning (docs/models-and-cost.md lists them). */
export const MODEL_ENV_DOCS: readonly ModelEnvDoc[] = [
  { name: 'KEEL_MODEL_SMALL', default: '(unset: no tier-1 model)', description: 'Tier 1 (small) model as `provider:model`: `openai:gpt-4o-mini`, `anthropic:claude-3-5-haiku-latest`, `ollama:llama3.1`, `scripted:/path/replies.json`.' },
  { name: 'KEEL_MODEL_LARGE', default: '(unset: no tier-2 model)', description: 'Tier 2 (large) model, same syntax.' },
  { name: 'OPENAI_API_KEY', default: '(unset)', description: 'Key for `openai:` models; required unless `KEEL_OPENAI_BASE_URL` points at an endpoint that needs none.' },
  { name: 'KEEL_OPENAI_BASE_URL', default: '(unset: api.openai.com)', description: 'Base URL of any OpenAI-compatible chat-completions endpoint (vLLM, LM Studio, llama.cpp server, a gateway), e.g. `http://127.0.0.1:8000/v1`.' },
  { name: 'ANTHROPIC_API_KEY', default: '(unset)', description: 'Key for `anthropic:` models (required for them).' },
  { name: 'KEEL_OLLAMA_URL', default: DEFAULT_OLLAMA_URL, description: 'Where the Ollama server for `ollama:` models listens.' },
  { name: 'KEEL_MODEL_MAX_RETRIES', default: String(DEFAULT_MODEL_MAX_RETRIES), description: 'Retries inside the provider client (429, 5xx, network) before the call fails with a retryable error.' },
  { name: 'KEEL_MODEL_TIMEOUT_MS', default: String(DEFAULT_MODEL_TIMEOUT_MS), description: 'Per-request timeout of the HTTP providers.' },
  { name: 'KEEL_PRICE_<PROVIDER>', default: '(unset)', description: 'Price of that provider\'s models the table does not name, `input,cachedInput,output` in USD per 1M tokens, e.g. `KEEL_PRICE_SCRIPTED=1,0.5,2`.' },
  { name: 'KEEL_PRICES', default: '(unset)', description: 'JSON overrides of the price table: `{"gpt-4o-mini":{"input":0.15,"cachedInput":0.075,"output":0.6}}`; keys are models, `provider:model` or `provider:*`.' },
];

/** A parsed `KEEL_MODEL_*` value. */
export interface ModelSpec {
  tier: ModelTier;
  tierName: TierName;
  /** the variable it came from */
  variable: string;
  provider: ModelProvider;
  /** the model's name at the provider; for `scripted`, the script's model name */
  model: string;
  /** base URL of an HTTP provider, or the script's path; never a key */
  endpoint: string | undefined;
}

/** A configured model, ready to call (see `invokeModel`). */
export interface ModelHandle extends ModelSpec {
  /** the LangChain chat model; use it directly in chains and LangGraph nodes */
  chat: BaseChatModel;
  /** the price table this registry was configured with */
  prices: PriceTable;
}

/** What `describe()` says about a tier, for docs and health: never contains a key. */
export interface ModelDescription {
  tier: ModelTier;
  name: TierName;
  variable: string;
  configured: boolean;
  provider?: ModelProvider;
  model?: string;
  endpoint?: string;
  /** the price-table entry that prices it, or null when none does (its calls are recorded at $0) */
  price?: (ModelPrice & { key: string }) | null;
}

export interface ModelRegistry {
  /** Whether a model is configured for the tier. */
  has(tier: ModelTier | TierName): boolean;
  /**
   * The tier's model. Throws {@link ModelNotConfiguredError} naming the variable to set (and the
   * capability, when given) if none is configured. The chat model is built once and reused.
   */
  get(tier: ModelTier | TierName, opts?: { capability?: string }): ModelHandle;
  /** Every tier, configured or not, for docs and health checks. */
  describe(): ModelDescription[];
  readonly prices: PriceTable;
}

export interface CreateModelRegistryOptions {
  /** replies for `scripted:` specs, instead of reading the script file (tests) */
  scripts?: Record<string, ScriptedReply[]>;
}

type Issue = { variable: string; message: string };

function tierOf(t: ModelTier | TierName): (typeof MODEL_TIERS)[number] {
  const found = MODEL_TIERS.find((x) => x.tier === t || x.name === t);
  if (!found) throw new ModelConfigError([{ variable: String(t), message: `unknown model tier '${String(t)}' (tiers: 1/small, 2/large; tier 0 needs no model)` }]);
  return found;
}

function checkUrl(variable: string, value: string, issues: Issue[]): string | undefined {
  const protocol = URL.canParse(value) ? new URL(value).protocol : undefined;
  if (protocol === 'http:' || protocol === 'https:') return value.replace(/\/+$/, '');
  issues.push({ variable, message: `must be an http(s) URL, got '${value}'` });
  return undefined;
}

function intVar(env: Record<string, string | undefined>, variable: string, dflt: number, min: number, issues: Issue[]): number {
  const v = env[variable];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) {
    issues.push({ variable, message: `must be an integer >= ${min}, got '${v}'` });
    return dflt;
  }
  return n;
}

/**
 * Parses `provider:model`. Returns the issue instead of throwing so every bad variable can be
 * reported at once.
 */
export function parseModelSpec(value: string, variable: string): { provider: ModelProvider; model: string } | Issue {
  const i = value.indexOf(':');
  const provider = (i > 0 ? value.slice(0, i) : '').trim().toLowerCase();
  const model = i > 0 ? value.slice(i + 1).trim() : '';
  const example = 'openai:gpt-4o-mini, anthropic:claude-3-5-haiku-latest, ollama:llama3.1 or scripted:/path/replies.json';
  if (!provider || !model) return { variable, message: `expected provider:model (e.g. ${example}), got '${value}'` };
  if (!(MODEL_PROVIDERS as readonly string[]).includes(provider)) return { variable, message: `unknown provider '${provider}' in '${value}' (known: ${MODEL_PROVIDERS.join(', ')})` };
  return { provider: provider as ModelProvider, model };
}

/**
 * Reads the model tiers and the price table from the environment. Throws {@link ModelConfigError}
 * naming every malformed variable (an unknown provider, a missing key, a bad URL or script);
 * unset tiers are fine.
 *
 * ```ts
 * const models = createModelRegistry();                 // the model variables, read by config/ (modelEnv)
 * if (models.has('small')) { const m = models.get(1); await m.chat.invoke('hi'); }
 * models.get('large', { capability: 'ticket.draft' }); // ModelNotConfiguredError: ... set KEEL_MODEL_LARGE
 * ```
 */
export function createModelRegistry(env: Record<string, string | undefined> = modelEnv(), opts: CreateModelRegistryOptions = {}): ModelRegistry {
  const read = readPriceTable(env);
  const prices = read.table;
  const issues: Issue[] = [...read.issues];
  const maxRetries = intVar(env, 'KEEL_MODEL_MAX_RETRIES', DEFAULT_MODEL_MAX_RETRIES, 0, issues);
  const timeoutMs = intVar(env, 'KEEL_MODEL_TIMEOUT_MS', DEFAULT_MODEL_TIMEOUT_MS, 1, issues);
  const openaiBase = env.KEEL_OPENAI_BASE_URL ? checkUrl('KEEL_OPENAI_BASE_URL', env.KEEL_OPENAI_BASE_URL, issues) : undefined;
  const ollamaUrl = env.KEEL_OLLAMA_URL ? checkUrl('KEEL_OLLAMA_URL', env.KEEL_OLLAMA_URL, issues) : DEFAULT_OLLAMA_URL;

  const specs = new Map<ModelTier, ModelSpec & { make: () => BaseChatModel }>();
  for (const t of MODEL_TIERS) {
    const raw = env[t.variable]?.trim();
    if (!raw) continue;
    const parsed = parseModelSpec(raw, t.variable);
    if ('message' in parsed) {
      issues.push(parsed);
      continue;
    }
    const { provider } = parsed;
    let model = parsed.model;
    let endpoint: string | undefined;
    let make: () => BaseChatModel;
    switch (provider) {
      case 'openai': {
        const apiKey = env.OPENAI_API_KEY;
        if (!apiKey && !openaiBase) {
          issues.push({ variable: 'OPENAI_API_KEY', message: `${t.variable}=${raw} needs OPENAI_API_KEY (or KEEL_OPENAI_BASE_URL for an OpenAI-compatible endpoint that needs no key)` });
          continue;
        }
        endpoint = openaiBase ?? 'https://api.openai.com/v1';
        const m = model;
        make = () =>
          new (providerModule<typeof OpenAI>('@langchain/openai').ChatOpenAI)({
            model: m,
            // local OpenAI-compatible servers usually ignore the key, but the client insists on one
            apiKey: apiKey || 'not-needed',
            maxRetries,
            timeout: timeoutMs,
            useResponsesApi: false,
            configuration: openaiBase ? { baseURL: openaiBase } : {},
          });
        break;
      }
      case 'anthropic': {
        const apiKey = env.ANTHROPIC_API_KEY;
        if (!apiKey) {
          issues.push({ variable: 'ANTHROPIC_API_KEY', message: `${t.variable}=${raw} needs ANTHROPIC_API_KEY` });
          continue;
        }
        endpoint = 'https://api.anthropic.com';
        const m = model;
        make = () => new (providerModule<typeof Anthropic>('@langchain/anthropic').ChatAnthropic)({ model: m, apiKey, maxRetries, clientOptions: { timeout: timeoutMs } });
        break;
      }
      case 'ollama': {
        endpoint = ollamaUrl ?? DEFAULT_OLLAMA_URL;
        const m = model;
        const baseUrl = endpoint;
        make = () => new (providerModule<typeof Ollama>('@langchain/ollama').ChatOllama)({ model: m, baseUrl, maxRetries });
        break;
      }
      case 'scripted': {
        const given = opts.scripts?.[model];
        const path = resolve(model);
        let script: { replies: ScriptedReply[]; modelName: string; loop: boolean };
        if (given) script = { replies: given, modelName: model, loop: false };
        else {
          try {
            script = readScript(path, t.variable);
          } catch (err) {
            if (!(err instanceof ModelConfigError)) throw err;
            issues.push({ variable: t.variable, message: err.issues.map((s) => s.slice(s.indexOf(': ') + 2)).join('; ') });
            continue;
          }
        }
        endpoint = given ? undefined : path;
        model = script.modelName;
        make = () => new ScriptedChatModel({ replies: script.replies, modelName: script.modelName, loop: script.loop });
        break;
      }
    }
    specs.set(t.tier, { tier: t.tier, tierName: t.name, variable: t.variable, provider, model, endpoint, make });
  }
  if (issues.length) throw new ModelConfigError(issues);

  const built = new Map<ModelTier, ModelHandle>();
  return {
    prices,
    has(tier) {
      return specs.has(tierOf(tier).tier);
    },
    get(tier, o = {}) {
      const t = tierOf(tier);
      const cached = built.get(t.tier);
      if (cached) return cached;
      const spec = specs.get(t.tier);
      if (!spec) throw new ModelNotConfiguredError(t.tier, t.name, t.variable, o.capability);
      const { make, ...rest } = spec;
      const handle: ModelHandle = Object.freeze({ ...rest, chat: make(), prices });
      built.set(t.tier, handle);
      return handle;
    },
    describe() {
      return MODEL_TIERS.map((t): ModelDescription => {
        const s = specs.get(t.tier);
        if (!s) return { tier: t.tier, name: t.name, variable: t.variable, configured: false };
        const hit = lookupPrice(`${s.provider}:${s.model}`, prices);
        return {
          tier: t.tier,
          name: t.name,
          variable: t.variable,
          configured: true,
          provider: s.provider,
          model: s.model,
          ...(s.endpoint ? { endpoint: s.endpoint } : {}),
          price: hit ? { key: hit.key, ...hit.price } : null,
        };
      });
    },
  };
}
