import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type * as HonoModule from 'hono';
import type { Hono } from 'hono';
import type { bodyLimit as BodyLimit } from 'hono/body-limit';
import type { Logger } from 'pino';
import { chatMessageInputSchema, describeIssues, toInboundChat, DEFAULT_MAX_CHAT_TEXT_CHARS } from './chat-message.ts';
import { describeError, isRetryable, isStorageFull } from './errors.ts';
import { silentLogger } from './logger.ts';
import type { InboundMessage } from './message.ts';
import { chatSenderKey, type IngressRateLimiter } from './rate-limit.ts';

export interface ChatRoutesOptions {
  /** Called with every valid message; the client gets 202 only after it resolved. */
  onMessage: (msg: InboundMessage) => Promise<void>;
  /** Larger request bodies get 413. Default 64 KiB. */
  maxBodyBytes?: number;
  /** Longer `text` gets 422. Default 10,000 characters. */
  maxTextChars?: number;
  /** limits per chat handle (or email) and for the chat channel; over one: 429 `RATE_LIMITED` with Retry-After */
  rateLimit?: IngressRateLimiter;
  /** asked before a message is taken (the disk guard); a throw that means "disk full" answers 507 `STORAGE_FULL` */
  admit?: () => Promise<void>;
  logger?: Logger;
}

/** Answer bodies of `POST /v1/chat/messages`. */
export type ChatPostResponse =
  | { messageId: string; conversationId: string }
  | { error: 'INVALID_JSON' | 'UNSUPPORTED_MEDIA_TYPE' | 'PAYLOAD_TOO_LARGE' | 'UNAVAILABLE' | 'HANDLER_FAILED' | 'RATE_LIMITED' | 'STORAGE_FULL'; message: string }
  | { error: 'INVALID_MESSAGE'; message: string; issues: { path: string; message: string }[] };

/**
 * Hono routes of the chat channel; mount with `app.route('/', createChatRoutes({...}))`.
 *
 * `POST /v1/chat/messages` with a JSON {@link ChatMessageInput}: 202 `{ messageId, conversationId }`
 * after `onMessage` resolved. Errors are `{ error: CODE, message, issues? }` like every Keel HTTP
 * error: 400 `INVALID_JSON`; 413 `PAYLOAD_TOO_LARGE`; 415 `UNSUPPORTED_MEDIA_TYPE`; 422
 * `INVALID_MESSAGE` with `issues`; 429 `RATE_LIMITED` (with Retry-After, in seconds) when the
 * customer's handle or the chat channel is over its limit; 507 `STORAGE_FULL` (with Retry-After)
 * when the disk that keeps messages is (nearly) full; 503 `UNAVAILABLE` (with Retry-After) when
 * `onMessage` failed retryably otherwise, 500 `HANDLER_FAILED` when not.
 */
export function createChatRoutes(opts: ChatRoutesOptions): Hono {
  const log = opts.logger ?? silentLogger();
  const maxBody = opts.maxBodyBytes ?? 64 * 1024;
  const schema = chatMessageInputSchema(opts.maxTextChars ?? DEFAULT_MAX_CHAT_TEXT_CHARS);
  // hono loads only where chat routes are served (its ES module build, shared with the engine's HTTP API)
  const load = (pkg: 'hono' | 'hono/body-limit') => createRequire(import.meta.url)(fileURLToPath(import.meta.resolve(pkg)));
  const { Hono } = load('hono') as typeof HonoModule;
  const { bodyLimit } = load('hono/body-limit') as { bodyLimit: typeof BodyLimit };
  const app = new Hono();

  app.post(
    '/v1/chat/messages',
    async (c, next) => {
      const type = (c.req.header('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
      if (type !== 'application/json') {
        return c.json({ error: 'UNSUPPORTED_MEDIA_TYPE', message: `Content-Type must be application/json, got '${type || '(none)'}'` } satisfies ChatPostResponse, 415);
      }
      await next();
      return undefined;
    },
    bodyLimit({
      maxSize: maxBody,
      onError: (c) => c.json({ error: 'PAYLOAD_TOO_LARGE', message: `body is larger than ${maxBody} bytes` } satisfies ChatPostResponse, 413),
    }),
    async (c) => {
      let body: unknown;
      try {
        body = JSON.parse(await c.req.text());
      } catch (err) {
        return c.json({ error: 'INVALID_JSON', message: `body is not JSON: ${describeError(err)}` } satisfies ChatPostResponse, 400);
      }
      const parsed = schema.safeParse(body);
      if (!parsed.success) {
        const issues = describeIssues(parsed.error);
        return c.json(
          { error: 'INVALID_MESSAGE', message: `invalid fields: ${[...new Set(issues.map((i) => i.path))].join(', ')}`, issues } satisfies ChatPostResponse,
          422,
        );
      }
      const storageFull = (err: unknown) => {
        log.warn({ err: describeError(err) }, 'chat: no disk space to keep the message, answering 507');
        c.header('Retry-After', '30');
        // the customer gets no paths or sizes: those are in the log
        return c.json({ error: 'STORAGE_FULL', message: 'message not taken: the server is low on disk space, try again later' } satisfies ChatPostResponse, 507);
      };
      if (opts.admit) {
        try {
          await opts.admit();
        } catch (err) {
          if (isStorageFull(err)) return storageFull(err);
          log.warn({ err: describeError(err) }, 'chat: not taking messages now, answering 503');
          c.header('Retry-After', '1');
          return c.json({ error: 'UNAVAILABLE', message: 'message not taken, try again' } satisfies ChatPostResponse, 503);
        }
      }
      if (opts.rateLimit) {
        const refused = await opts.rateLimit.take(chatSenderKey(parsed.data.customer));
        if (refused) {
          const wait = Math.ceil(refused.retryAfterMs / 1000);
          log.warn({ scope: refused.scope, retry_after_s: wait }, 'chat: over the rate limit, answering 429');
          c.header('Retry-After', String(wait));
          const what = refused.scope === 'sender' ? 'too many messages from this customer' : 'too many chat messages';
          return c.json({ error: 'RATE_LIMITED', message: `${what}: try again in ${wait} s` } satisfies ChatPostResponse, 429);
        }
      }
      const msg = toInboundChat(parsed.data);
      try {
        await opts.onMessage(msg);
      } catch (err) {
        if (isStorageFull(err)) return storageFull(err);
        if (isRetryable(err)) {
          log.warn({ err: describeError(err), id: msg.id }, 'chat: handler failed, answering 503');
          c.header('Retry-After', '1');
          return c.json({ error: 'UNAVAILABLE', message: 'message not taken, try again' } satisfies ChatPostResponse, 503);
        }
        log.error({ err: describeError(err), id: msg.id }, 'chat: handler refused the message');
        return c.json({ error: 'HANDLER_FAILED', message: describeError(err) } satisfies ChatPostResponse, 500);
      }
      log.info({ id: msg.id, conversation_id: msg.conversationId }, 'chat: message accepted');
      return c.json({ messageId: msg.id, conversationId: msg.conversationId! } satisfies ChatPostResponse, 202);
    },
  );
  return app;
}
