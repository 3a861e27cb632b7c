import { createHash } from 'node:crypto';
import { z } from 'zod';
import { emptyFlags, newMessageId, type InboundMessage } from './message.ts';

export const DEFAULT_MAX_CHAT_TEXT_CHARS = 10_000;

const idToken = z
  .string()
  .min(1)
  .max(200)
  .regex(/^[A-Za-z0-9._:@<>+=-]+$/, 'only letters, digits and . _ : @ < > + = -');

/**
 * What a chat client sends (HTTP body or WebSocket frame):
 * `{ customer: { email?, handle?, name? }, text, conversationId?, clientMessageId? }`.
 * The customer needs an `email` or a `handle`. `clientMessageId` makes a retry idempotent.
 */
export function chatMessageInputSchema(maxTextChars = DEFAULT_MAX_CHAT_TEXT_CHARS) {
  return z.object({
    customer: z
      .object({
        email: z.email().max(320).optional(),
        handle: z.string().trim().min(1).max(200).optional(),
        name: z.string().trim().max(300).optional(),
      })
      .refine((c) => c.email !== undefined || c.handle !== undefined, { message: 'customer needs an email or a handle' }),
    text: z
      .string()
      .max(maxTextChars, `text must be at most ${maxTextChars} characters`)
      .refine((t) => t.trim().length > 0, 'text must not be empty'),
    conversationId: idToken.optional(),
    clientMessageId: idToken.optional(),
  });
}
export type ChatMessageInput = z.infer<ReturnType<typeof chatMessageInputSchema>>;

/** zod issues as `{ path: 'customer.email', message }`, for 422 answers and WebSocket errors. */
export function describeIssues(err: z.ZodError): { path: string; message: string }[] {
  return err.issues.map((i) => ({ path: i.path.map(String).join('.') || '(root)', message: i.message }));
}

/**
 * The normalized message for a chat input. With a `clientMessageId` the message id (and, when
 * none was given, the conversation id) derive from it, so a client retry yields the same ids.
 */
export function toInboundChat(input: ChatMessageInput, now = new Date()): InboundMessage {
  const who = input.customer.email?.toLowerCase() ?? `handle:${input.customer.handle}`;
  const key = input.clientMessageId ? `${who}\n${input.conversationId ?? ''}\n${input.clientMessageId}` : undefined;
  const customer: InboundMessage['customer'] = {
    ...(input.customer.email ? { email: input.customer.email.toLowerCase() } : {}),
    ...(input.customer.handle ? { handle: input.customer.handle } : {}),
    ...(input.customer.name ? { name: input.customer.name } : {}),
  };
  return {
    id: key ? uuidFrom(`msg\n${key}`) : newMessageId(),
    channel: 'chat',
    receivedAt: now.toISOString(),
    customer,
    conversationId: input.conversationId ?? (key ? uuidFrom(`conv\n${key}`) : newMessageId()),
    ...(input.clientMessageId ? { idempotencyKey: `chat:${who}:${input.clientMessageId}` } : {}),
    text: input.text,
    references: [],
    headers: {},
    attachments: [],
    flags: emptyFlags(),
  };
}

/** A name-based UUID (version 8, RFC 9562) from a sha256 of `name`. */
export function uuidFrom(name: string): string {
  const b = createHash('sha256').update(name).digest().subarray(0, 16);
  b[6] = (b[6]! & 0x0f) | 0x80;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
