import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHash } from 'node:crypto';

/** What a chat-completions or embeddings request carried, as the server received it. */
export interface OpenAiRequest {
  path: string;
  /** The parsed JSON body (`{}` when it was empty or not JSON). */
  body: Record<string, unknown>;
  auth: string | undefined;
}

export interface OpenAiServerOptions {
  /** The model named in answers; default: echo the request's `model`. */
  model?: string;
  /** Token usage reported on every chat answer; default 10 prompt / 5 completion tokens. */
  usage?: { prompt_tokens: number; completion_tokens: number; cached_tokens?: number; reasoning_tokens?: number };
  /** The assistant text for a chat request; default `"ok"`. */
  reply?: (body: Record<string, unknown>) => string;
  /** Wait this long before answering (to hold calls in flight). Default 0. */
  delayMs?: number;
  /**
   * An HTTP status for a request (e.g. 500 to fail it); anything but 200 answers with an
   * OpenAI-style error body. Default: 200 for every request.
   */
  status?: (body: Record<string, unknown>, path: string) => number;
  /** Dimensions of the vectors `/v1/embeddings` returns; default 8. */
  dimensions?: number;
}

export interface OpenAiServer {
  /** Base URL including `/v1`, for `KEEL_OPENAI_BASE_URL` or the client's `baseURL`. */
  url: string;
  /** Every request received, in arrival order (rejected ones included). */
  requests: OpenAiRequest[];
  stop(): Promise<void>;
}

/** A deterministic unit vector for a text: the same text always embeds the same. */
function embed(text: string, dims: number): number[] {
  const out: number[] = [];
  let block = Buffer.alloc(0);
  for (let i = 0; out.length < dims; i++) {
    if (block.length === 0) block = createHash('sha256').update(`${i}:${text}`).digest();
    out.push(block.readInt8(0) / 128);
    block = block.subarray(1);
  }
  const norm = Math.hypot(...out) || 1;
  return out.map((v) => v / norm);
}

/**
 * A real HTTP server on 127.0.0.1 (free port) that speaks the OpenAI API used by Keel —
 * non-streaming `POST /v1/chat/completions` and `POST /v1/embeddings` — and records every request.
 * It stands in for a paid provider behind the same client the real one uses.
 *
 * ```ts
 * const ai = await startOpenAiServer({ usage: { prompt_tokens: 100, completion_tokens: 20 } });
 * const models = createModelRegistry({ KEEL_MODEL_SMALL: 'openai:gpt-4o-mini', KEEL_OPENAI_BASE_URL: ai.url, OPENAI_API_KEY: 'sk-test' });
 * // ... ai.requests.length is what the provider really received
 * await ai.stop();
 * ```
 */
export async function startOpenAiServer(o: OpenAiServerOptions = {}): Promise<OpenAiServer> {
  const requests: OpenAiRequest[] = [];
  const usage = o.usage ?? { prompt_tokens: 10, completion_tokens: 5 };
  let seq = 0;
  const send = (res: ServerResponse, status: number, payload: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(payload));
  };
  const answer = (req: IncomingMessage, res: ServerResponse, raw: string) => {
    let body: Record<string, unknown> = {};
    try {
      const parsed: unknown = JSON.parse(raw || '{}');
      if (parsed && typeof parsed === 'object') body = parsed as Record<string, unknown>;
    } catch {
      // not JSON: recorded as {}
    }
    const path = (req.url ?? '').split('?')[0] ?? '';
    requests.push({ path, body, auth: req.headers.authorization });
    const status = o.status?.(body, path) ?? 200;
    if (status !== 200) {
      return send(res, status, { error: { message: `scripted failure (${status})`, type: status >= 500 ? 'server_error' : 'invalid_request_error' } });
    }
    const model = o.model ?? (typeof body.model === 'string' ? body.model : 'unknown');
    if (req.method === 'POST' && path === '/v1/chat/completions') {
      return send(res, 200, {
        id: `chatcmpl-keel-${++seq}`,
        object: 'chat.completion',
        created: Math.floor(Date.now() / 1000),
        model,
        choices: [{ index: 0, message: { role: 'assistant', content: o.reply?.(body) ?? 'ok' }, logprobs: null, finish_reason: 'stop' }],
        usage: {
          prompt_tokens: usage.prompt_tokens,
          completion_tokens: usage.completion_tokens,
          total_tokens: usage.prompt_tokens + usage.completion_tokens,
          prompt_tokens_details: { cached_tokens: usage.cached_tokens ?? 0, audio_tokens: 0 },
          completion_tokens_details: { reasoning_tokens: usage.reasoning_tokens ?? 0, audio_tokens: 0 },
        },
      });
    }
    if (req.method === 'POST' && path === '/v1/embeddings') {
      const input = body.input;
      const texts = Array.isArray(input) ? input.map(String) : [String(input ?? '')];
      const dims = typeof body.dimensions === 'number' ? body.dimensions : (o.dimensions ?? 8);
      const tokens = texts.reduce((n, t) => n + Math.ceil(t.length / 4), 0);
      return send(res, 200, {
        object: 'list',
        model,
        // the openai SDK asks for base64 (little-endian float32) unless the caller chose a format
        data: texts.map((t, index) => {
          const v = embed(t, dims);
          const embedding = body.encoding_format === 'base64' ? Buffer.from(new Float32Array(v).buffer).toString('base64') : v;
          return { object: 'embedding', index, embedding };
        }),
        usage: { prompt_tokens: tokens, total_tokens: tokens },
      });
    }
    send(res, 404, { error: { message: `no route ${req.method ?? ''} ${path}`, type: 'invalid_request_error' } });
  };
  const server = createServer((req, res) => {
    let raw = '';
    req.on('data', (c: Buffer) => (raw += c.toString()));
    req.on('end', () => {
      if (o.delayMs) setTimeout(() => answer(req, res, raw), o.delayMs);
      else answer(req, res, raw);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/v1`,
    requests,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
