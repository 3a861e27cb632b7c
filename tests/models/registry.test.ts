import { afterEach, describe, expect, it } from 'vitest';
import { writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ChatOpenAI } from '@langchain/openai';
import { ChatAnthropic } from '@langchain/anthropic';
import { ChatOllama } from '@langchain/ollama';
import {
  createModelRegistry,
  isModelError,
  MODEL_ENV_DOCS,
  ModelConfigError,
  ModelNotConfiguredError,
  ScriptedChatModel,
  DEFAULT_OLLAMA_URL,
} from '../../models/index.ts';
import { REPO_ROOT } from '../../config/index.ts';
import { tempDir } from '../../testkit/common.ts';

const dirs: { remove(): void }[] = [];
afterEach(() => dirs.splice(0).forEach((d) => d.remove()));

function configError(env: Record<string, string>): ModelConfigError {
  try {
    createModelRegistry(env);
  } catch (err) {
    expect(err).toBeInstanceOf(ModelConfigError);
    expect(isModelError(err, 'MODEL_CONFIG_INVALID')).toBe(true);
    expect((err as ModelConfigError).retryable).toBe(false);
    return err as ModelConfigError;
  }
  throw new Error('expected a ModelConfigError');
}

describe('model registry from the environment', () => {
  it('runs with no model configured and says which variable to set', () => {
    const models = createModelRegistry({});
    expect(models.has(1)).toBe(false);
    expect(models.has('large')).toBe(false);
    expect(models.describe()).toEqual([
      { tier: 1, name: 'small', variable: 'KEEL_MODEL_SMALL', configured: false },
      { tier: 2, name: 'large', variable: 'KEEL_MODEL_LARGE', configured: false },
    ]);
    try {
      models.get('large', { capability: 'ticket.draft' });
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ModelNotConfiguredError);
      const e = err as ModelNotConfiguredError;
      expect(e.code).toBe('MODEL_NOT_CONFIGURED');
      expect(e.retryable).toBe(false);
      expect(e.variable).toBe('KEEL_MODEL_LARGE');
      expect(e.tier).toBe(2);
      expect(e.message).toMatch(/capability 'ticket\.draft' needs a large \(tier 2\) model/);
      expect(e.message).toMatch(/set KEEL_MODEL_LARGE/);
    }
    expect(() => models.get(1)).toThrow(/set KEEL_MODEL_SMALL/);
  });

  it('builds an OpenAI model, for api.openai.com or any OpenAI-compatible endpoint', () => {
    const official = createModelRegistry({ KEEL_MODEL_SMALL: 'openai:gpt-4o-mini', OPENAI_API_KEY: 'sk-test' });
    const h = official.get(1);
    expect(h).toMatchObject({ tier: 1, tierName: 'small', variable: 'KEEL_MODEL_SMALL', provider: 'openai', model: 'gpt-4o-mini', endpoint: 'https://api.openai.com/v1' });
    expect(h.chat).toBeInstanceOf(ChatOpenAI);
    expect((h.chat as ChatOpenAI).model).toBe('gpt-4o-mini');
    expect(official.get('small')).toBe(h); // built once
    expect(official.describe()[0]).toMatchObject({ configured: true, provider: 'openai', model: 'gpt-4o-mini', price: { key: 'gpt-4o-mini', input: 0.15, cachedInput: 0.075, output: 0.6 } });
    expect(JSON.stringify(official.describe())).not.toContain('sk-test');

    const compat = createModelRegistry({ KEEL_MODEL_LARGE: 'openai:qwen2.5-7b-instruct', KEEL_OPENAI_BASE_URL: 'http://127.0.0.1:8000/v1/' });
    const c = compat.get(2);
    expect(c).toMatchObject({ provider: 'openai', model: 'qwen2.5-7b-instruct', endpoint: 'http://127.0.0.1:8000/v1' });
    expect((c.chat as ChatOpenAI).clientConfig.baseURL).toBe('http://127.0.0.1:8000/v1');
    expect(compat.describe()[1]!.price).toBeNull(); // unpriced: recorded at $0, and describe says so
  });

  it('builds Anthropic and Ollama models', () => {
    const models = createModelRegistry({ KEEL_MODEL_SMALL: 'ollama:llama3.1', KEEL_MODEL_LARGE: 'anthropic:claude-sonnet-4-20250514', ANTHROPIC_API_KEY: 'sk-ant-test' });
    const small = models.get(1);
    expect(small).toMatchObject({ provider: 'ollama', model: 'llama3.1', endpoint: DEFAULT_OLLAMA_URL });
    expect(small.chat).toBeInstanceOf(ChatOllama);
    const large = models.get(2);
    expect(large).toMatchObject({ provider: 'anthropic', model: 'claude-sonnet-4-20250514' });
    expect(large.chat).toBeInstanceOf(ChatAnthropic);
    expect(models.describe().map((d) => d.price?.key)).toEqual(['ollama:*', 'claude-sonnet-4']);

    const other = createModelRegistry({ KEEL_MODEL_SMALL: 'ollama:qwen3:4b', KEEL_OLLAMA_URL: 'http://gpu-box:11434' });
    expect(other.get(1)).toMatchObject({ model: 'qwen3:4b', endpoint: 'http://gpu-box:11434' });
  });

  it('builds a scripted model from a script file', () => {
    const dir = tempDir();
    dirs.push(dir);
    const path = join(dir.path, 'replies.json');
    writeFileSync(path, JSON.stringify({ model: 'demo-small', replies: [{ content: 'ok', usage: { input_tokens: 10, output_tokens: 2, cached_tokens: 0 } }] }));
    const models = createModelRegistry({ KEEL_MODEL_SMALL: `scripted:${path}` });
    const h = models.get(1);
    expect(h).toMatchObject({ provider: 'scripted', model: 'demo-small', endpoint: path });
    expect(h.chat).toBeInstanceOf(ScriptedChatModel);

    const bare = join(dir.path, 'plain.json');
    writeFileSync(bare, JSON.stringify([{ content: 'a' }]));
    expect(createModelRegistry({ KEEL_MODEL_LARGE: `scripted:${bare}` }).get(2).model).toBe('plain');
  });

  it('names the variable of an unknown provider or a malformed value', () => {
    expect(configError({ KEEL_MODEL_SMALL: 'bard:gemini' }).message).toMatch(/KEEL_MODEL_SMALL: unknown provider 'bard'.*known: openai, anthropic, ollama, scripted/);
    expect(configError({ KEEL_MODEL_LARGE: 'gpt-4o' }).message).toMatch(/KEEL_MODEL_LARGE: expected provider:model/);
    expect(configError({ KEEL_MODEL_LARGE: 'openai:' }).message).toMatch(/KEEL_MODEL_LARGE: expected provider:model/);
  });

  it('names the missing key, a bad URL, a bad script and bad numbers, all at once', () => {
    const dir = tempDir();
    dirs.push(dir);
    const bad = join(dir.path, 'bad.json');
    writeFileSync(bad, JSON.stringify([{ text: 'no content field' }]));
    const e = configError({
      KEEL_MODEL_SMALL: 'openai:gpt-4o-mini',
      KEEL_MODEL_LARGE: `scripted:${bad}`,
      KEEL_OLLAMA_URL: 'not a url',
      KEEL_MODEL_MAX_RETRIES: '-1',
      KEEL_PRICES: '{"gpt-4o": {"input": "cheap"}}',
      KEEL_PRICE_SCRIPTED: '1,2,3,4',
    });
    expect(e.variables.sort()).toEqual(['KEEL_MODEL_LARGE', 'KEEL_MODEL_MAX_RETRIES', 'KEEL_OLLAMA_URL', 'KEEL_PRICES', 'KEEL_PRICE_SCRIPTED', 'OPENAI_API_KEY']);
    expect(e.message).toMatch(/OPENAI_API_KEY: KEEL_MODEL_SMALL=openai:gpt-4o-mini needs OPENAI_API_KEY/);
    expect(e.message).toMatch(/KEEL_MODEL_LARGE: .*not a script/);
    expect(configError({ KEEL_MODEL_LARGE: 'anthropic:claude-3-5-haiku-latest' }).message).toMatch(/needs ANTHROPIC_API_KEY/);
    expect(configError({ KEEL_MODEL_SMALL: 'scripted:/nonexistent/replies.json' }).message).toMatch(/KEEL_MODEL_SMALL: cannot read the script/);
  });

  it('documents every variable it reads in docs/models-and-cost.md', () => {
    const doc = readFileSync(join(REPO_ROOT, 'docs', 'models-and-cost.md'), 'utf8');
    for (const v of MODEL_ENV_DOCS) {
      expect(doc, v.name).toContain(`\`${v.name}\``);
      expect(doc, `${v.name} default`).toContain(v.default);
    }
  });
});
