import { describe, expect, it } from 'vitest';
import { HumanMessage } from '@langchain/core/messages';
import { ScriptedChatModel, isModelError, toModelError, loadPriceTable, lookupPrice, priceOf, BUILTIN_PRICES, ModelConfigError } from '../../models/index.ts';

describe('ScriptedChatModel', () => {
  it('replies in order and reports usage_metadata and model_name like a real provider', async () => {
    const model = new ScriptedChatModel({
      modelName: 'scripted-small',
      replies: [
        { content: 'first', usage: { input_tokens: 1200, output_tokens: 80, cached_tokens: 1024 } },
        { content: 'second', usage: { input_tokens: 30, output_tokens: 5 } },
      ],
    });
    const a = await model.invoke([new HumanMessage('hello')]);
    expect(a.content).toBe('first');
    expect(a.usage_metadata).toEqual({ input_tokens: 1200, output_tokens: 80, total_tokens: 1280, input_token_details: { cache_read: 1024 } });
    expect(a.response_metadata).toMatchObject({ model_name: 'scripted-small', finish_reason: 'stop' });
    const b = await model.invoke('again');
    expect(b.content).toBe('second');
    expect(b.usage_metadata).toEqual({ input_tokens: 30, output_tokens: 5, total_tokens: 35, input_token_details: { cache_read: 0 } });
    expect(model.played).toBe(2);

    try {
      await model.invoke('one too many');
      expect.unreachable();
    } catch (err) {
      expect(isModelError(err, 'MODEL_SCRIPT_EXHAUSTED')).toBe(true);
      expect((err as { retryable: boolean }).retryable).toBe(false);
    }
  });

  it('estimates usage when the script gives none, loops when asked, and plays tool calls', async () => {
    const model = new ScriptedChatModel({ loop: true, replies: [{ content: 'abcdefgh', tool_calls: [{ name: 'lookup', args: { id: 'T-1' } }] }] });
    const tools = model.bindTools([{ type: 'function', function: { name: 'lookup', parameters: {} } }]);
    const m = await tools.invoke('x'.repeat(40));
    expect(m.usage_metadata).toMatchObject({ input_tokens: 10, output_tokens: 2 });
    expect(m.tool_calls).toEqual([{ name: 'lookup', args: { id: 'T-1' }, id: expect.any(String), type: 'tool_call' }]);
    expect(m.response_metadata.finish_reason).toBe('tool_calls');
    expect((await model.invoke('again')).content).toBe('abcdefgh');
  });

  it('fails like a provider when the script says so, and honours the AbortSignal', async () => {
    const model = new ScriptedChatModel({
      replies: [{ content: '', error: { status: 429, message: 'slow down' } }, { content: '', error: { status: 400, message: 'bad' } }, { content: 'late', latencyMs: 5_000 }],
    });
    const rl = toModelError(await model.invoke('a').catch((e: unknown) => e), { provider: 'scripted' });
    expect(rl).toMatchObject({ code: 'MODEL_RATE_LIMITED', retryable: true, status: 429 });
    const bad = toModelError(await model.invoke('b').catch((e: unknown) => e));
    expect(bad).toMatchObject({ code: 'MODEL_BAD_REQUEST', retryable: false, status: 400 });
    const signal = AbortSignal.timeout(50);
    const t0 = Date.now();
    const err = await model.invoke('c', { signal }).catch((e: unknown) => e);
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(toModelError(err, { signal })).toMatchObject({ code: 'MODEL_TIMEOUT', retryable: true });
  });
});

describe('error normalization', () => {
  it('classifies provider errors into retryable and permanent', () => {
    const http = (status: number, headers?: Record<string, string>) => Object.assign(new Error(`HTTP ${status}`), { status, headers });
    expect(toModelError(http(429, { 'retry-after': '3' }))).toMatchObject({ code: 'MODEL_RATE_LIMITED', retryable: true, nextDelayMs: 3000 });
    expect(toModelError(http(500))).toMatchObject({ code: 'MODEL_UNAVAILABLE', retryable: true });
    expect(toModelError(http(529))).toMatchObject({ code: 'MODEL_UNAVAILABLE', retryable: true });
    expect(toModelError(http(401))).toMatchObject({ code: 'MODEL_AUTH_FAILED', retryable: false });
    expect(toModelError(http(404))).toMatchObject({ code: 'MODEL_NOT_FOUND', retryable: false });
    expect(toModelError(http(400))).toMatchObject({ code: 'MODEL_BAD_REQUEST', retryable: false });
    expect(toModelError(Object.assign(new Error('ollama'), { status_code: 503 }))).toMatchObject({ code: 'MODEL_UNAVAILABLE', retryable: true });
    const net = new TypeError('fetch failed', { cause: Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }) });
    expect(toModelError(net)).toMatchObject({ code: 'MODEL_UNAVAILABLE', retryable: true });
    expect(toModelError(new Error('This model maximum context length is 8192 tokens'))).toMatchObject({ code: 'MODEL_CONTEXT_OVERFLOW', retryable: false });
  });
});

describe('price table', () => {
  const usage = { inputTokens: 1_000_000, outputTokens: 1_000_000, cachedTokens: 0 };

  it('prices known models, dated variants and local models', () => {
    expect(priceOf('gpt-4o-mini', usage)).toBe(0.75);
    expect(priceOf('gpt-4o-mini-2024-07-18', usage)).toBe(0.75); // longest matching key, not gpt-4o
    expect(priceOf('openai:gpt-4o-2024-08-06', usage)).toBe(12.5);
    expect(priceOf('gpt-4.1-mini', usage)).toBe(2);
    expect(priceOf('claude-3-5-haiku-20241022', usage)).toBe(4.8);
    expect(priceOf('anthropic:claude-sonnet-4-20250514', usage)).toBe(18);
    expect(priceOf('ollama:llama3.1', usage)).toBe(0);
    expect(lookupPrice('ollama:llama3.1')?.key).toBe('ollama:*');
    expect(lookupPrice('some-unknown-model')).toBeUndefined();
    expect(priceOf('some-unknown-model', usage)).toBe(0);
  });

  it('bills cached tokens at the cached rate as part of the input tokens', () => {
    // gpt-4o-mini: 0.15 input, 0.075 cached input, 0.6 output per 1M
    const u = { inputTokens: 1200, cachedTokens: 1024, outputTokens: 80 };
    expect(priceOf('gpt-4o-mini', u)).toBeCloseTo((176 * 0.15 + 1024 * 0.075 + 80 * 0.6) / 1e6, 12);
    // cached can never exceed input
    expect(priceOf('gpt-4o-mini', { inputTokens: 10, cachedTokens: 50, outputTokens: 0 })).toBeCloseTo((10 * 0.075) / 1e6, 12);
  });

  it('takes overrides from KEEL_PRICE_<PROVIDER> and KEEL_PRICES', () => {
    const t = loadPriceTable({ KEEL_PRICE_SCRIPTED: '2,0.5,8', KEEL_PRICE_OPENAI: '1,3', KEEL_PRICES: '{"gpt-4o-mini":{"input":1,"output":2},"scripted:special":{"input":10,"cachedInput":1,"output":20}}' });
    expect(t['scripted:*']).toEqual({ input: 2, cachedInput: 0.5, output: 8 });
    expect(priceOf('scripted:anything', { inputTokens: 1000, cachedTokens: 500, outputTokens: 100 }, t)).toBeCloseTo((500 * 2 + 500 * 0.5 + 100 * 8) / 1e6, 12);
    expect(priceOf('scripted:special', usage, t)).toBe(30);
    expect(t['gpt-4o-mini']).toEqual({ input: 1, cachedInput: 1, output: 2 });
    expect(priceOf('openai:my-local-model', usage, t)).toBe(4);
    expect(BUILTIN_PRICES['gpt-4o-mini']!.input).toBe(0.15); // the built-in table is untouched
    expect(() => loadPriceTable({ KEEL_PRICES: 'nope' })).toThrow(ModelConfigError);
    expect(() => loadPriceTable({ KEEL_PRICE_OLLAMA: 'free' })).toThrow(/KEEL_PRICE_OLLAMA/);
  });
});
