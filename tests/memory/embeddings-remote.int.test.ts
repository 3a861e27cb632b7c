/**
 * `openai:` and `ollama:` embeddings through the real LangChain clients against local HTTP
 * servers that speak `/v1/embeddings` and Ollama's `/api/embed`, counting what they received;
 * HTTP failures become EMBEDDINGS_FAILED, retryable or not.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createEmbeddings, HashingEmbeddings, isEmbeddingsError } from '../../memory/embeddings/index.ts';

interface Seen {
  path: string;
  auth: string | undefined;
  body: { model: string; input: string | string[]; encoding_format?: string };
}

const DIM = 24;
/** what the server answers for a text: a vector computed from it, so a test can recompute it */
const vectorOf = (text: string): number[] => new HashingEmbeddings({ dim: DIM }).embedSync(text);

/** OpenAI `/v1/embeddings` and Ollama `/api/embed`; an input `status:NNN` makes it answer NNN. */
function fakeServer(): Promise<{ server: Server; base: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  const server = createServer((req, res) => {
    let raw = '';
    req.on('data', (c: Buffer) => (raw += c.toString()));
    req.on('end', () => {
      const body = JSON.parse(raw || '{}') as Seen['body'];
      seen.push({ path: req.url ?? '', auth: req.headers.authorization, body });
      const send = (status: number, payload: unknown) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(payload));
      };
      const inputs = Array.isArray(body.input) ? body.input : [body.input];
      const forced = inputs.map((t) => /^status:(\d{3})$/.exec(String(t))).find(Boolean);
      if (forced) return send(Number(forced[1]), { error: { message: `forced ${forced[1]}`, type: 'test_error' } });
      if (req.method === 'POST' && req.url === '/v1/embeddings') {
        return send(200, {
          object: 'list',
          model: body.model,
          // like OpenAI: floats, or base64 of little-endian float32 when asked
          data: inputs.map((t, index) => ({
            object: 'embedding',
            index,
            embedding: body.encoding_format === 'base64' ? Buffer.from(new Float32Array(vectorOf(String(t))).buffer).toString('base64') : vectorOf(String(t)),
          })),
          usage: { prompt_tokens: inputs.length, total_tokens: inputs.length },
        });
      }
      if (req.method === 'POST' && req.url === '/api/embed') return send(200, { model: body.model, embeddings: inputs.map((t) => vectorOf(String(t))) });
      send(404, { error: { message: 'not found' } });
    });
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve({ server, base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen })),
  );
}

let fake: Awaited<ReturnType<typeof fakeServer>>;
beforeAll(async () => {
  fake = await fakeServer();
});
afterAll(() => new Promise<void>((r) => fake.server.close(() => r())));

describe('openai: embeddings against an OpenAI-compatible server', () => {
  it('sends one request with every text and the model name, no key needed, and returns the server vectors in order', async () => {
    fake.seen.length = 0;
    const emb = createEmbeddings({ spec: 'openai:test-embed-small', modelsDir: '/nonexistent', modelEnv: { KEEL_OPENAI_BASE_URL: `${fake.base}/v1` } });
    expect(emb.id).toBe('openai:test-embed-small');
    const texts = ['refund the invoice', 'the printer is on fire', 'renew my plan'];
    const vecs = await emb.embedDocuments(texts);
    expect(vecs).toEqual(texts.map(vectorOf));
    expect(fake.seen).toHaveLength(1);
    expect(fake.seen[0]!.path).toBe('/v1/embeddings');
    expect(fake.seen[0]!.body.model).toBe('test-embed-small');
    expect(fake.seen[0]!.body.input).toEqual(texts);
    expect(fake.seen[0]!.body.encoding_format).toBe('float');
    // dimensions() is learnt from that answer: no extra request
    expect(await emb.dimensions()).toBe(DIM);
    expect(fake.seen).toHaveLength(1);
    expect(await emb.embedQuery('renew my plan')).toEqual(vectorOf('renew my plan'));
    expect(fake.seen).toHaveLength(2);
  });

  it('passes OPENAI_API_KEY as the bearer token; dimensions() asks once when nothing was embedded yet', async () => {
    fake.seen.length = 0;
    const emb = createEmbeddings({ spec: 'openai:custom', modelsDir: '/nonexistent', modelEnv: { KEEL_OPENAI_BASE_URL: `${fake.base}/v1`, OPENAI_API_KEY: 'sk-local-test' } });
    expect(await emb.dimensions()).toBe(DIM);
    expect(await emb.dimensions()).toBe(DIM);
    expect(fake.seen).toHaveLength(1);
    expect(fake.seen[0]!.auth).toBe('Bearer sk-local-test');
  });

  it('a 400 is EMBEDDINGS_FAILED, not retryable, asked once; a 503 is retryable after the client retries', async () => {
    const emb = createEmbeddings({ spec: 'openai:test-embed-small', modelsDir: '/nonexistent', modelEnv: { KEEL_OPENAI_BASE_URL: `${fake.base}/v1` } });
    fake.seen.length = 0;
    const bad = await emb.embedDocuments(['status:400']).catch((e: unknown) => e);
    expect(isEmbeddingsError(bad, 'EMBEDDINGS_FAILED')).toBe(true);
    expect((bad as { retryable: boolean }).retryable).toBe(false);
    expect((bad as Error).message).toContain('openai:test-embed-small');
    expect(fake.seen).toHaveLength(1);

    fake.seen.length = 0;
    const down = await emb.embedDocuments(['status:503']).catch((e: unknown) => e);
    expect(isEmbeddingsError(down, 'EMBEDDINGS_FAILED')).toBe(true);
    expect((down as { retryable: boolean }).retryable).toBe(true);
    expect(fake.seen.length).toBe(3); // first try + the client's 2 retries
  });
});

describe('ollama: embeddings against an Ollama-compatible server', () => {
  it('posts to /api/embed at KEEL_OLLAMA_URL and returns its vectors', async () => {
    fake.seen.length = 0;
    const emb = createEmbeddings({ spec: 'ollama:nomic-embed-text', modelsDir: '/nonexistent', modelEnv: { KEEL_OLLAMA_URL: fake.base } });
    const vecs = await emb.embedDocuments(['alpha beta', 'gamma']);
    expect(vecs).toEqual([vectorOf('alpha beta'), vectorOf('gamma')]);
    expect(fake.seen).toHaveLength(1);
    expect(fake.seen[0]!.path).toBe('/api/embed');
    expect(fake.seen[0]!.body.model).toBe('nomic-embed-text');
    expect(fake.seen[0]!.body.input).toEqual(['alpha beta', 'gamma']);
  });
});
