import { afterEach, describe, expect, it } from 'vitest';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Hono } from 'hono';
import { serve } from '@hono/node-server';
import WebSocket from 'ws';
import {
  attachChatWebSocket,
  ChannelHandlerError,
  createChatRoutes,
  InboundMessageSchema,
  type ChatServerFrame,
  type ChatWebSocketHub,
  type InboundMessage,
} from '../../channels/index.ts';

interface Fixture {
  url: string;
  wsUrl: string;
  received: InboundMessage[];
  hub: ChatWebSocketHub;
  setFailure(err: Error | undefined): void;
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A real HTTP server on port 0 with the chat routes and the WebSocket attached, as the engine would mount them. */
async function startChat(opts: { maxBodyBytes?: number; maxTextChars?: number } = {}): Promise<Fixture> {
  const received: InboundMessage[] = [];
  let failure: Error | undefined;
  const onMessage = async (m: InboundMessage) => {
    if (failure) throw failure;
    received.push(m);
  };
  const app = new Hono();
  app.route('/', createChatRoutes({ onMessage, ...opts }));
  const server = await new Promise<Server>((resolve) => {
    const s = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, () => resolve(s as Server));
  });
  const hub = attachChatWebSocket(server, { onMessage, maxTextChars: opts.maxTextChars ?? 10_000 });
  cleanups.push(async () => {
    await hub.close();
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });
  const port = (server.address() as AddressInfo).port;
  return { url: `http://127.0.0.1:${port}`, wsUrl: `ws://127.0.0.1:${port}/v1/chat/ws`, received, hub, setFailure: (e) => (failure = e) };
}

function post(fx: Fixture, body: string, contentType = 'application/json'): Promise<Response> {
  return fetch(`${fx.url}/v1/chat/messages`, { method: 'POST', headers: { 'content-type': contentType }, body });
}

describe('chat over HTTP', () => {
  it('answers 202 with ids only after onMessage took the message', async () => {
    const fx = await startChat();
    const res = await post(fx, JSON.stringify({ customer: { email: 'Alice@Example.com', name: 'Alice' }, text: 'Where is my order?' }));
    expect(res.status).toBe(202);
    const body = (await res.json()) as { messageId: string; conversationId: string };
    expect(fx.received).toHaveLength(1);
    const m = fx.received[0]!;
    expect(InboundMessageSchema.parse(m)).toEqual(m);
    expect(body).toEqual({ messageId: m.id, conversationId: m.conversationId });
    expect(m).toMatchObject({ channel: 'chat', text: 'Where is my order?', customer: { email: 'alice@example.com', name: 'Alice' } });

    // a follow-up in the same conversation, by handle
    const res2 = await post(fx, JSON.stringify({ customer: { handle: 'alice42' }, text: 'hello?', conversationId: body.conversationId }));
    expect(res2.status).toBe(202);
    expect(((await res2.json()) as { conversationId: string }).conversationId).toBe(body.conversationId);
  });

  it('gives a retried message (same clientMessageId) the same ids', async () => {
    const fx = await startChat();
    const body = JSON.stringify({ customer: { email: 'a@example.com' }, text: 'hi', clientMessageId: 'c-1' });
    const a = (await (await post(fx, body)).json()) as { messageId: string; conversationId: string };
    const b = (await (await post(fx, body)).json()) as { messageId: string; conversationId: string };
    expect(b).toEqual(a);
    expect(fx.received[0]!.idempotencyKey).toBe(fx.received[1]!.idempotencyKey);
  });

  it('answers 400 INVALID_JSON for junk', async () => {
    const fx = await startChat();
    const res = await post(fx, '{"customer": {"email": "a@example.com"}, "text": "hi"');
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: 'INVALID_JSON' });
    expect(fx.received).toHaveLength(0);
  });

  it('answers 422 naming the bad fields', async () => {
    const fx = await startChat({ maxTextChars: 50 });
    const res = await post(fx, JSON.stringify({ customer: { email: 'not-an-email' }, text: '' }));
    expect(res.status).toBe(422);
    const body = (await res.json()) as { error: string; issues: { path: string }[] };
    expect(body.error).toBe('INVALID_MESSAGE');
    expect(body.issues.map((i) => i.path).sort()).toEqual(['customer.email', 'text']);

    const noWho = await post(fx, JSON.stringify({ customer: { name: 'Anon' }, text: 'hi' }));
    expect(noWho.status).toBe(422);
    expect(((await noWho.json()) as { issues: { path: string }[] }).issues[0]!.path).toBe('customer');

    const tooLong = await post(fx, JSON.stringify({ customer: { handle: 'x' }, text: 'y'.repeat(51) }));
    expect(tooLong.status).toBe(422);
    const array = await post(fx, '[1,2]');
    expect(array.status).toBe(422);
  });

  it('answers 413 for a body over maxBodyBytes', async () => {
    const fx = await startChat({ maxBodyBytes: 1024 });
    const res = await post(fx, JSON.stringify({ customer: { handle: 'x' }, text: 'z'.repeat(4000) }));
    expect(res.status).toBe(413);
    expect(await res.json()).toMatchObject({ error: 'PAYLOAD_TOO_LARGE' });
  });

  it('answers 415 for a body that is not JSON by content type', async () => {
    const fx = await startChat();
    const res = await post(fx, 'customer=a&text=b', 'application/x-www-form-urlencoded');
    expect(res.status).toBe(415);
    expect(await res.json()).toMatchObject({ error: 'UNSUPPORTED_MEDIA_TYPE' });
    // a charset parameter is fine
    expect((await post(fx, JSON.stringify({ customer: { handle: 'x' }, text: 'ok' }), 'application/json; charset=utf-8')).status).toBe(202);
  });

  it('answers 503 with Retry-After when onMessage fails retryably, 500 when not', async () => {
    const fx = await startChat();
    fx.setFailure(new ChannelHandlerError('bus down'));
    const res = await post(fx, JSON.stringify({ customer: { handle: 'x' }, text: 'hi' }));
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('1');
    fx.setFailure(new ChannelHandlerError('no', { retryable: false }));
    expect((await post(fx, JSON.stringify({ customer: { handle: 'x' }, text: 'hi' }))).status).toBe(500);
  });
});

/** A ws client that queues the frames it receives. */
async function connect(url: string): Promise<{ ws: WebSocket; next(): Promise<ChatServerFrame>; send(v: unknown): void }> {
  const ws = new WebSocket(url);
  const queue: ChatServerFrame[] = [];
  const waiters: ((f: ChatServerFrame) => void)[] = [];
  ws.on('message', (d) => {
    const f = JSON.parse(d.toString()) as ChatServerFrame;
    const w = waiters.shift();
    if (w) w(f);
    else queue.push(f);
  });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  cleanups.push(async () => {
    if (ws.readyState === WebSocket.OPEN) {
      const closed = new Promise((r) => ws.once('close', r));
      ws.close();
      await closed;
    }
  });
  return {
    ws,
    send: (v) => ws.send(typeof v === 'string' ? v : JSON.stringify(v)),
    next: () =>
      new Promise<ChatServerFrame>((resolve, reject) => {
        const f = queue.shift();
        if (f) return resolve(f);
        const t = setTimeout(() => reject(new Error('no frame within 5 s')), 5_000);
        waiters.push((x) => {
          clearTimeout(t);
          resolve(x);
        });
      }),
  };
}

describe('chat over WebSocket', () => {
  it('acks each message after onMessage, in order, and pushes replies to the conversation', async () => {
    const fx = await startChat();
    const c = await connect(fx.wsUrl);
    c.send({ type: 'message', customer: { email: 'alice@example.com' }, text: 'first', clientMessageId: 'm1' });
    c.send({ type: 'message', text: 'second (customer remembered)', clientMessageId: 'm2' });
    const a1 = await c.next();
    const a2 = await c.next();
    expect(a1).toMatchObject({ type: 'ack', clientMessageId: 'm1' });
    expect(a2).toMatchObject({ type: 'ack', clientMessageId: 'm2' });
    if (a1.type !== 'ack' || a2.type !== 'ack') throw new Error('expected acks');
    expect(fx.received.map((m) => m.text)).toEqual(['first', 'second (customer remembered)']);
    expect(fx.received[1]!.customer.email).toBe('alice@example.com');
    expect(a1.messageId).toBe(fx.received[0]!.id);

    // an operator's second tab watches the conversation
    const watcher = await connect(`${fx.wsUrl}?conversationId=${encodeURIComponent(a1.conversationId)}`);
    expect(fx.hub.connections()).toBe(2);
    expect(fx.hub.pushToConversation(a1.conversationId, { text: 'We are on it.', author: 'operator' })).toBe(2);
    for (const cl of [c, watcher]) expect(await cl.next()).toEqual({ type: 'push', conversationId: a1.conversationId, payload: { text: 'We are on it.', author: 'operator' } });
    expect(fx.hub.pushToConversation('nobody-here', { text: 'x' })).toBe(0);
  });

  it('answers bad frames with error frames and keeps the socket open', async () => {
    const fx = await startChat();
    const c = await connect(fx.wsUrl);
    c.send('{not json');
    expect(await c.next()).toMatchObject({ type: 'error', error: 'INVALID_JSON' });
    c.send({ type: 'message', text: 'who am I?', clientMessageId: 'q' });
    expect(await c.next()).toMatchObject({ type: 'error', error: 'INVALID_MESSAGE', clientMessageId: 'q', issues: [{ path: 'customer' }] });
    c.send({ type: 'message', customer: { handle: 'h' }, text: '' });
    expect(await c.next()).toMatchObject({ type: 'error', error: 'INVALID_MESSAGE', issues: [{ path: 'text' }] });
    fx.setFailure(new ChannelHandlerError('bus down'));
    c.send({ type: 'message', customer: { handle: 'h' }, text: 'hi', clientMessageId: 'r' });
    expect(await c.next()).toMatchObject({ type: 'error', error: 'UNAVAILABLE', clientMessageId: 'r' });
    fx.setFailure(undefined);
    c.send({ type: 'message', customer: { handle: 'h' }, text: 'hi', clientMessageId: 'r' });
    expect(await c.next()).toMatchObject({ type: 'ack', clientMessageId: 'r' });
    expect(fx.received).toHaveLength(1);
  });

  it('refuses upgrades on other paths', async () => {
    const fx = await startChat();
    const ws = new WebSocket(fx.wsUrl.replace('/v1/chat/ws', '/elsewhere'));
    const err = await new Promise<Error>((resolve) => ws.once('error', resolve));
    expect(err.message).toMatch(/404/);
  });
});
