/**
 * The real @langchain/openai client against a local server that speaks the OpenAI
 * chat-completions API: usage (with cached tokens) flows into the ledger; HTTP failures become
 * retryable or permanent ModelErrors.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { openStore, type StateStore } from '../../shared-state/index.ts';
import { createModelRegistry, invokeModel, BUILTIN_PRICES, type ModelRegistry } from '../../models/index.ts';
import { freePort, tempDir } from '../../testkit/common.ts';
import { ALL_ENTITY_TYPES } from '../helpers/types.ts';

interface Seen {
  path: string;
  auth: string | undefined;
  body: { model: string; messages: { role: string; content: string }[] };
}

/** Answers per the `x-scenario` of the last user message: ok (default), 429, 500, 400. */
function fakeOpenAI(): Promise<{ server: Server; url: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  const server = createServer((req: IncomingMessage, res) => {
    let raw = '';
    req.on('data', (c: Buffer) => (raw += c.toString()));
    req.on('end', () => {
      const body = JSON.parse(raw || '{}') as Seen['body'];
      seen.push({ path: req.url ?? '', auth: req.headers.authorization, body });
      const send = (status: number, payload: unknown, headers: Record<string, string> = {}) => {
        res.writeHead(status, { 'content-type': 'application/json', ...headers });
        res.end(JSON.stringify(payload));
      };
      if (req.method !== 'POST' || req.url !== '/v1/chat/completions') return send(404, { error: { message: 'not found', type: 'invalid_request_error' } });
      const last = body.messages.at(-1)?.content ?? '';
      if (last === 'rate-limit') return send(429, { error: { message: 'Rate limit reached', type: 'rate_limit_error', code: 'rate_limit_exceeded' } }, { 'retry-after': '7' });
      if (last === 'server-error') return send(500, { error: { message: 'The server had an error', type: 'server_error' } });
      if (last === 'bad-request') return send(400, { error: { message: "Invalid value for 'temperature'", type: 'invalid_request_error' } });
      send(200, {
        id: 'chatcmpl-test-1',
        object: 'chat.completion',
        created: Math.floor(Date.now() / 1000),
        model: `${body.model}-2024-07-18`,
        choices: [{ index: 0, message: { role: 'assistant', content: 'Your refund is on its way.' }, logprobs: null, finish_reason: 'stop' }],
        usage: { prompt_tokens: 1200, completion_tokens: 80, total_tokens: 1280, prompt_tokens_details: { cached_tokens: 1024, audio_tokens: 0 }, completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0 } },
        system_fingerprint: 'fp_test',
      });
    });
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      resolve({ server, url: `http://127.0.0.1:${port}/v1`, seen });
    }),
  );
}

let fake: Awaited<ReturnType<typeof fakeOpenAI>>;
let dir: ReturnType<typeof tempDir>;
let store: StateStore;
let models: ModelRegistry;

beforeAll(async () => {
  fake = await fakeOpenAI();
  dir = tempDir();
  store = await openStore(`sqlite:${dir.path}/s.db`, { types: ALL_ENTITY_TYPES });
  models = createModelRegistry({ KEEL_MODEL_SMALL: 'openai:gpt-4o-mini', KEEL_OPENAI_BASE_URL: fake.url, OPENAI_API_KEY: 'sk-local-test', KEEL_MODEL_MAX_RETRIES: '0' });
});
afterAll(async () => {
  await store.close();
  await new Promise((r) => fake.server.close(r));
  dir.remove();
});

const attribution = { agent: 'support', capability: 'ticket.reply', runId: 'run-9', customerId: 'C-1', entityType: 'ticket', entityId: 'T-9' };

describe('ChatOpenAI against an OpenAI-compatible endpoint', () => {
  it('records the usage the endpoint reports, cached tokens included', async () => {
    const res = await invokeModel({ model: models.get('small'), messages: [{ role: 'user', content: 'Where is my refund?' }], attribution, costs: store });
    expect(fake.seen.at(-1)).toMatchObject({ path: '/v1/chat/completions', auth: 'Bearer sk-local-test', body: { model: 'gpt-4o-mini' } });
    expect(res.message.content).toBe('Your refund is on its way.');
    expect(res.usage).toEqual({ inputTokens: 1200, outputTokens: 80, cachedTokens: 1024 });
    expect(res.model).toBe('gpt-4o-mini-2024-07-18');

    // gpt-4o-mini: $0.15 input, $0.075 cached input, $0.60 output per 1M tokens
    const p = BUILTIN_PRICES['gpt-4o-mini']!;
    expect([p.input, p.cachedInput, p.output]).toEqual([0.15, 0.075, 0.6]);
    const expectedUsd = ((1200 - 1024) * 0.15 + 1024 * 0.075 + 80 * 0.6) / 1e6; // 0.0001512
    expect(res.costUsd).toBeCloseTo(expectedUsd, 12);

    const { records, totals } = await store.costs({ runId: 'run-9', records: 5 });
    expect(totals).toMatchObject({ count: 1, tokensIn: 1200, tokensOut: 80, tokensCached: 1024 });
    expect(totals.costUsd).toBeCloseTo(expectedUsd, 12);
    expect(records[0]).toMatchObject({
      ...attribution,
      model: 'gpt-4o-mini-2024-07-18',
      details: { tier: 1, provider: 'openai', requestModel: 'gpt-4o-mini', price: { key: 'gpt-4o-mini' } },
    });
  });

  it('turns 429 and 500 into retryable errors and 400 into a permanent one, recording nothing', async () => {
    const call = (content: string) => invokeModel({ model: models.get(1), messages: [{ role: 'user', content }], attribution, costs: store }).catch((e: unknown) => e);
    const before = (await store.costs()).totals.count;
    expect(await call('rate-limit')).toMatchObject({ name: 'ModelError', code: 'MODEL_RATE_LIMITED', retryable: true, status: 429, nextDelayMs: 7000, provider: 'openai', model: 'gpt-4o-mini' });
    expect(await call('server-error')).toMatchObject({ code: 'MODEL_UNAVAILABLE', retryable: true, status: 500 });
    expect(await call('bad-request')).toMatchObject({ code: 'MODEL_BAD_REQUEST', retryable: false, status: 400 });
    expect((await store.costs()).totals.count).toBe(before);
    // KEEL_MODEL_MAX_RETRIES=0: the client tried once; retrying is the runtime's call
    expect(fake.seen.filter((s) => s.body.messages.at(-1)?.content === 'rate-limit')).toHaveLength(1);
  });

  it('reports an endpoint that does not answer as retryable', async () => {
    const port = await freePort();
    const down = createModelRegistry({ KEEL_MODEL_SMALL: 'openai:gpt-4o-mini', KEEL_OPENAI_BASE_URL: `http://127.0.0.1:${port}/v1`, KEEL_MODEL_MAX_RETRIES: '0' });
    const err = await invokeModel({ model: down.get(1), messages: 'hi', attribution, costs: store }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'MODEL_UNAVAILABLE', retryable: true });
  });
});
