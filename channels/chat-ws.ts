import type { IncomingMessage, Server as HttpServer } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { createRequire } from 'node:module';
import type * as WsModule from 'ws';
import type { WebSocket, RawData } from 'ws';
import { z } from 'zod';
import { chatMessageInputSchema, describeIssues, toInboundChat, DEFAULT_MAX_CHAT_TEXT_CHARS, type ChatMessageInput } from './chat-message.ts';
import { ChannelError, describeError, isRetryable, isStorageFull } from './errors.ts';
import { silentLogger } from './logger.ts';
import type { InboundMessage } from './message.ts';
import { chatSenderKey, type IngressRateLimiter } from './rate-limit.ts';

export interface ChatWebSocketOptions {
  /** Default `/v1/chat/ws`. */
  path?: string;
  /** Called with every valid message frame; the ack is sent only after it resolved. */
  onMessage: (msg: InboundMessage) => Promise<void>;
  /** Larger frames close the socket with 1009. Default 64 KiB. */
  maxPayloadBytes?: number;
  /** Default 10,000 characters. */
  maxTextChars?: number;
  /** Ping interval; a socket that missed a pong is dropped. Default 30,000 ms. */
  heartbeatMs?: number;
  /** limits per chat handle (or email) and for the chat channel; over one: an error frame `RATE_LIMITED` with `retryAfterS` */
  rateLimit?: IngressRateLimiter;
  logger?: Logger;
}

/** Frames the server sends. */
export type ChatServerFrame =
  | { type: 'ack'; messageId: string; conversationId: string; clientMessageId?: string }
  | { type: 'error'; error: 'INVALID_JSON' | 'INVALID_MESSAGE' | 'UNAVAILABLE' | 'HANDLER_FAILED' | 'RATE_LIMITED' | 'STORAGE_FULL'; message: string; clientMessageId?: string; issues?: { path: string; message: string }[]; retryAfterS?: number }
  | { type: 'push'; conversationId: string; payload: unknown };

export interface ChatWebSocketHub {
  /** Sends `{ type: 'push', conversationId, payload }` to every socket in the conversation; returns how many got it. */
  pushToConversation(conversationId: string, payload: unknown): number;
  /** Open sockets. */
  connections(): number;
  /** Closes every socket (1001) and stops taking upgrades. */
  close(): Promise<void>;
}

interface SocketState {
  customer: ChatMessageInput['customer'] | undefined;
  conversations: Set<string>;
  alive: boolean;
  queue: Promise<void>;
}

/**
 * The live side of the chat channel, on an existing HTTP server (the one the Hono app runs on).
 *
 * Connect to `ws://host/v1/chat/ws[?conversationId=ID]`. Send
 * `{ "type": "message", "customer": {...}, "text": "...", "conversationId"?, "clientMessageId"? }`
 * (the customer may be left out after the first frame: the socket remembers it). Each frame is
 * answered in order with `ack` (after `onMessage` resolved) or `error`; the socket joins the
 * frame's conversation and receives its `push` frames.
 */
export function attachChatWebSocket(server: HttpServer | HttpsServer, opts: ChatWebSocketOptions): ChatWebSocketHub {
  const path = opts.path ?? '/v1/chat/ws';
  const log = opts.logger ?? silentLogger();
  const inputSchema = chatMessageInputSchema(opts.maxTextChars ?? DEFAULT_MAX_CHAT_TEXT_CHARS);
  const frameSchema = inputSchema.extend({
    type: z.literal('message'),
    customer: inputSchema.shape.customer.optional(),
  });
  // ws loads only where a chat WebSocket is served (the engine), not in every process that imports channels/
  const { WebSocketServer, WebSocket } = createRequire(import.meta.url)('ws') as typeof WsModule;
  const wss = new WebSocketServer({ noServer: true, maxPayload: opts.maxPayloadBytes ?? 64 * 1024 });
  const states = new Map<WebSocket, SocketState>();
  const rooms = new Map<string, Set<WebSocket>>();

  const join = (ws: WebSocket, st: SocketState, conversationId: string) => {
    if (st.conversations.has(conversationId)) return;
    st.conversations.add(conversationId);
    let room = rooms.get(conversationId);
    if (!room) rooms.set(conversationId, (room = new Set()));
    room.add(ws);
  };
  const send = (ws: WebSocket, frame: ChatServerFrame) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(frame));
  };

  const handleFrame = async (ws: WebSocket, st: SocketState, data: RawData, isBinary: boolean): Promise<void> => {
    let body: unknown;
    try {
      if (isBinary) throw new ChannelError('CHANNEL_INVALID_MESSAGE', 'binary frames are not accepted');
      body = JSON.parse(rawToString(data));
    } catch (err) {
      return send(ws, { type: 'error', error: 'INVALID_JSON', message: `frame is not JSON: ${describeError(err)}` });
    }
    const clientMessageId = typeof (body as { clientMessageId?: unknown })?.clientMessageId === 'string' ? (body as { clientMessageId: string }).clientMessageId : undefined;
    const withCustomer = body && typeof body === 'object' && !('customer' in body) && st.customer ? { ...body, customer: st.customer } : body;
    const parsed = frameSchema.safeParse(withCustomer);
    if (!parsed.success || !parsed.data.customer) {
      const issues = parsed.success ? [{ path: 'customer', message: 'the first frame must name the customer' }] : describeIssues(parsed.error);
      return send(ws, { type: 'error', error: 'INVALID_MESSAGE', message: `invalid fields: ${[...new Set(issues.map((i) => i.path))].join(', ')}`, issues, ...(clientMessageId ? { clientMessageId } : {}) });
    }
    const { type: _type, ...rest } = parsed.data;
    const input: ChatMessageInput = { ...rest, customer: parsed.data.customer };
    st.customer ??= input.customer;
    if (opts.rateLimit) {
      const refused = await opts.rateLimit.take(chatSenderKey(input.customer));
      if (refused) {
        const wait = Math.ceil(refused.retryAfterMs / 1000);
        log.warn({ scope: refused.scope, retry_after_s: wait }, 'chat ws: over the rate limit');
        const what = refused.scope === 'sender' ? 'too many messages from this customer' : 'too many chat messages';
        return send(ws, { type: 'error', error: 'RATE_LIMITED', message: `${what}: try again in ${wait} s`, retryAfterS: wait, ...(clientMessageId ? { clientMessageId } : {}) });
      }
    }
    const msg = toInboundChat(input);
    try {
      await opts.onMessage(msg);
    } catch (err) {
      const retryable = isRetryable(err);
      log.warn({ err: describeError(err), id: msg.id, retryable }, 'chat ws: handler failed');
      // a full disk (KEEL_MIN_FREE_MB): STORAGE_FULL, send it again later
      if (isStorageFull(err)) return send(ws, { type: 'error', error: 'STORAGE_FULL', message: 'message not taken: the server is low on disk space, send it again later', retryAfterS: 30, ...(clientMessageId ? { clientMessageId } : {}) });
      return send(ws, {
        type: 'error',
        error: retryable ? 'UNAVAILABLE' : 'HANDLER_FAILED',
        message: retryable ? 'message not taken, send it again' : describeError(err),
        ...(clientMessageId ? { clientMessageId } : {}),
      });
    }
    join(ws, st, msg.conversationId!);
    send(ws, { type: 'ack', messageId: msg.id, conversationId: msg.conversationId!, ...(clientMessageId ? { clientMessageId } : {}) });
  };

  wss.on('connection', (ws: WebSocket, req: IncomingMessage) => {
    const st: SocketState = { customer: undefined, conversations: new Set(), alive: true, queue: Promise.resolve() };
    states.set(ws, st);
    const conv = new URL(req.url ?? '/', 'http://localhost').searchParams.get('conversationId');
    if (conv && conv.length <= 200) join(ws, st, conv);
    ws.on('pong', () => (st.alive = true));
    ws.on('message', (data, isBinary) => {
      // one frame at a time, so acks come back in the order the frames were sent
      st.queue = st.queue.then(() => handleFrame(ws, st, data, isBinary)).catch((err: unknown) => log.error({ err: describeError(err) }, 'chat ws: frame failed'));
    });
    ws.on('error', (err) => log.warn({ err: describeError(err) }, 'chat ws: socket error'));
    ws.on('close', () => {
      states.delete(ws);
      for (const c of st.conversations) {
        const room = rooms.get(c);
        room?.delete(ws);
        if (room?.size === 0) rooms.delete(c);
      }
    });
  });

  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const pathname = new URL(req.url ?? '/', 'http://localhost').pathname;
    if (pathname !== path) {
      // another handler may own that path; when none does, refuse instead of leaving the socket hanging
      if (server.listenerCount('upgrade') === 1) {
        socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      }
      return;
    }
    socket.on('error', (err) => log.warn({ err: describeError(err) }, 'chat ws: upgrade socket error'));
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
  };
  server.on('upgrade', onUpgrade);

  const heartbeat = setInterval(() => {
    for (const [ws, st] of states) {
      if (!st.alive) {
        ws.terminate();
        continue;
      }
      st.alive = false;
      ws.ping();
    }
  }, opts.heartbeatMs ?? 30_000);
  heartbeat.unref();

  return {
    pushToConversation(conversationId, payload) {
      let n = 0;
      for (const ws of rooms.get(conversationId) ?? []) {
        if (ws.readyState !== WebSocket.OPEN) continue;
        send(ws, { type: 'push', conversationId, payload });
        n++;
      }
      return n;
    },
    connections: () => states.size,
    close() {
      clearInterval(heartbeat);
      server.off('upgrade', onUpgrade);
      for (const ws of states.keys()) ws.close(1001, 'server shutting down');
      return new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          for (const ws of states.keys()) ws.terminate();
        }, 2_000);
        t.unref();
        wss.close(() => {
          clearTimeout(t);
          resolve();
        });
      });
    },
  };
}

function rawToString(data: RawData): string {
  if (Buffer.isBuffer(data)) return data.toString('utf8');
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  return Buffer.from(data).toString('utf8');
}
