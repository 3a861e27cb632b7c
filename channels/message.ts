import { randomUUID } from 'node:crypto';
import { z } from 'zod';

/** Why a message was accepted but set aside instead of handed to `onMessage`. */
export const QUARANTINE_REASONS = ['empty_body', 'missing_from', 'auto_reply', 'bounce', 'bulk_mail', 'mail_loop', 'malformed_mime'] as const;
export type QuarantineReason = (typeof QUARANTINE_REASONS)[number];

export const ChannelKindSchema = z.enum(['email', 'chat']);
export type ChannelKind = z.infer<typeof ChannelKindSchema>;

export const CustomerSchema = z.object({
  email: z.string().min(1).max(320).optional(),
  handle: z.string().min(1).max(200).optional(),
  name: z.string().max(300).optional(),
});
export type Customer = z.infer<typeof CustomerSchema>;

export const AttachmentMetaSchema = z.object({
  /** Sender-given name, reduced to its last path segment; `attachment` when none was given. */
  filename: z.string(),
  contentType: z.string(),
  size: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  /** Whether the content was written to the attachments dir (false above the limit or without a dir). */
  stored: z.boolean(),
  /** Absolute path of the stored content (`<attachmentsDir>/<sha256>`), when stored. */
  path: z.string().optional(),
});
export type AttachmentMeta = z.infer<typeof AttachmentMetaSchema>;

export const MessageFlagsSchema = z.object({
  /** Auto-Submitted / X-Autoreply / Precedence auto_reply: a machine wrote it. */
  autoReply: z.boolean(),
  /** Precedence bulk/junk/list or a List-Id header. */
  bulk: z.boolean(),
  /** The mail had only an HTML body; `text` was derived from it. */
  htmlOnly: z.boolean(),
  /** Bytes that were not valid in the (declared or assumed UTF-8) charset were replaced by U+FFFD. */
  encodingRepaired: z.boolean(),
  /** At least one attachment's content was dropped (over the limit, or no attachments dir). */
  attachmentsDropped: z.boolean(),
  /** `text` was cut at the configured maximum length. */
  truncated: z.boolean(),
  /** The envelope sender's domain differs from the From header's (normal for lists; a hint of forgery otherwise). */
  fromMismatch: z.boolean(),
});
export type MessageFlags = z.infer<typeof MessageFlagsSchema>;

export const EnvelopeSchema = z.object({
  /** SMTP MAIL FROM; empty string for the null sender `<>` (bounces). */
  mailFrom: z.string(),
  rcptTo: z.array(z.string()),
  remoteAddress: z.string().optional(),
  heloName: z.string().optional(),
});
export type Envelope = z.infer<typeof EnvelopeSchema>;

/** A message from a customer, the same shape whatever channel it came through. */
export const InboundMessageSchema = z.object({
  id: z.uuid(),
  channel: ChannelKindSchema,
  receivedAt: z.iso.datetime({ offset: true }),
  customer: CustomerSchema,
  /** Email: the thread root's Message-ID (see {@link threadRootOf}); chat: the conversation's id. */
  conversationId: z.string().min(1).optional(),
  /** Stable across redeliveries of the same message: the Message-ID (email), the client's message id (chat). */
  idempotencyKey: z.string().min(1).optional(),
  subject: z.string().optional(),
  text: z.string(),
  html: z.string().optional(),
  /** RFC 5322 Message-ID with angle brackets, e.g. `<abc@example.com>`. */
  messageId: z.string().optional(),
  inReplyTo: z.string().optional(),
  /** Message-IDs, oldest first: the first one is the thread root. */
  references: z.array(z.string()),
  /** A small allow-listed subset of the headers, lower-cased names, unfolded values. */
  headers: z.record(z.string(), z.string()),
  attachments: z.array(AttachmentMetaSchema),
  flags: MessageFlagsSchema,
  envelope: EnvelopeSchema.optional(),
});
export type InboundMessage = z.infer<typeof InboundMessageSchema>;

export function emptyFlags(): MessageFlags {
  return { autoReply: false, bulk: false, htmlOnly: false, encodingRepaired: false, attachmentsDropped: false, truncated: false, fromMismatch: false };
}

export function newMessageId(): string {
  return randomUUID();
}

/**
 * Canonical form of a Message-ID: surrounding whitespace removed, one pair of angle brackets.
 * Returns undefined for an empty or whitespace-containing value (not a Message-ID).
 */
export function normalizeMessageId(raw: string | undefined | null): string | undefined {
  if (!raw) return undefined;
  const inner = raw.trim().replace(/^<+/, '').replace(/>+$/, '').trim();
  if (!inner || /[\s<>]/.test(inner) || inner.length > 998) return undefined;
  return `<${inner}>`;
}

/** Splits a References / In-Reply-To value into normalized Message-IDs, oldest first, no duplicates. */
export function parseMessageIdList(raw: string | string[] | undefined | null): string[] {
  if (!raw) return [];
  const found = (Array.isArray(raw) ? raw : [raw]).flatMap((text) => text.match(/<[^<>\s]+>/g) ?? text.split(/[\s,]+/));
  const out: string[] = [];
  for (const f of found) {
    const id = normalizeMessageId(f);
    if (id && !out.includes(id)) out.push(id);
  }
  return out;
}

/**
 * The thread root of an email: the first Message-ID in References (RFC 5322 keeps the root
 * first even when a client trims the middle), else In-Reply-To, else the message's own
 * Message-ID (a message that starts a thread is its own root). Undefined when none is known.
 */
export function threadRootOf(msg: { messageId?: string | undefined; inReplyTo?: string | undefined; references?: readonly string[] | undefined }): string | undefined {
  for (const candidate of [msg.references?.[0], msg.inReplyTo, msg.messageId]) {
    const id = normalizeMessageId(candidate);
    if (id) return id;
  }
  return undefined;
}
