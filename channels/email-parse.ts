import type { ParsedMail } from 'mailparser';
import { storeAttachment, type AttachmentStoreOptions } from './attachments.ts';
import { ChannelError, describeError } from './errors.ts';
import {
  emptyFlags,
  newMessageId,
  normalizeMessageId,
  parseMessageIdList,
  threadRootOf,
  type AttachmentMeta,
  type Envelope,
  type InboundMessage,
  type QuarantineReason,
} from './message.ts';

export interface EmailParseOptions {
  /** SMTP envelope of the transaction, when the mail came over SMTP. */
  envelope?: Envelope | undefined;
  attachments?: AttachmentStoreOptions | undefined;
  /** `text` longer than this is cut (flag `truncated`). Default 100,000 characters. */
  maxTextChars?: number | undefined;
  /** An `html` body longer than this is left out (flag `truncated`). Default 1,000,000 characters. */
  maxHtmlChars?: number | undefined;
  /** More Received headers than this means the mail is looping between servers. Default 25. */
  maxReceivedHeaders?: number | undefined;
  /** Our own sending addresses: mail From one of them came back to us (a loop). Case-insensitive. */
  ownAddresses?: readonly string[] | undefined;
  /** Parsing longer than this gives up (quarantine `malformed_mime`). Default 10,000 ms. */
  parseTimeoutMs?: number | undefined;
  now?: () => Date;
}

export interface ParsedInbound {
  /** The normalized message; undefined only when the MIME could not be parsed at all. */
  message: InboundMessage | undefined;
  /** Set when the message must not go to `onMessage`. */
  quarantine?: { reason: QuarantineReason; detail: string } | undefined;
}

/** The headers copied into `InboundMessage.headers` (lower-cased, unfolded, first occurrence). */
export const KEPT_HEADERS = [
  'from',
  'sender',
  'reply-to',
  'to',
  'cc',
  'date',
  'subject',
  'message-id',
  'in-reply-to',
  'references',
  'return-path',
  'auto-submitted',
  'precedence',
  'list-id',
  'x-autoreply',
  'x-autorespond',
  'x-keel-loop',
  'content-type',
  'user-agent',
  'x-mailer',
] as const;

const AUTO_PRECEDENCE = new Set(['auto_reply', 'auto-reply']);
const BULK_PRECEDENCE = new Set(['bulk', 'junk', 'list']);

/**
 * Turns a raw RFC 5322 message into an {@link InboundMessage} and decides whether it must be
 * quarantined. Never throws for bad input: what cannot be parsed comes back as
 * `{ message: undefined, quarantine: { reason: 'malformed_mime' } }`. (It can throw when the
 * attachments dir cannot be written: that is our failure, not the sender's.)
 */
export async function parseInboundEmail(raw: Buffer, opts: EmailParseOptions = {}): Promise<ParsedInbound> {
  const timeoutMs = opts.parseTimeoutMs ?? 10_000;
  let parsed: ParsedMail;
  let htmlOnly = false;
  // mailparser loads with the first message (only the process that hosts the SMTP ingress parses mail)
  const { simpleParser } = await import('mailparser');
  try {
    parsed = await withTimeout(simpleParser(raw, { skipHtmlToText: true, skipTextToHtml: true, skipImageLinks: true }), timeoutMs);
    if (!parsed.text?.trim() && typeof parsed.html === 'string' && parsed.html.trim()) {
      // HTML-only mail: parse again, this time letting mailparser derive the text from the HTML
      htmlOnly = true;
      const withText = await withTimeout(simpleParser(raw, { skipTextToHtml: true, skipImageLinks: true }), timeoutMs);
      parsed.text = withText.text;
    }
  } catch (err) {
    return { message: undefined, quarantine: { reason: 'malformed_mime', detail: `cannot parse MIME: ${describeError(err)}` } };
  }

  const lines = headerMap(parsed);
  const flags = emptyFlags();
  flags.htmlOnly = htmlOnly;

  const fromLines = lines.get('from') ?? [];
  const fromAddr = parsed.from?.value.find((a) => a.address && a.address.includes('@'));
  const customerEmail = fromAddr?.address?.trim().toLowerCase();
  const customerName = cleanLine(fromAddr?.name ?? '') || undefined;

  const maxText = opts.maxTextChars ?? 100_000;
  let text = (parsed.text ?? '').replace(/\r\n?/g, '\n');
  if (text.length > maxText) {
    text = text.slice(0, maxText);
    flags.truncated = true;
  }
  let html = typeof parsed.html === 'string' ? parsed.html : undefined;
  if (html !== undefined && html.length > (opts.maxHtmlChars ?? 1_000_000)) {
    html = undefined;
    flags.truncated = true;
  }
  const subject = parsed.subject !== undefined ? cleanLine(parsed.subject) : undefined;
  flags.encodingRepaired = [text, html ?? '', subject ?? ''].some((s) => s.includes('\uFFFD'));

  const attachments: AttachmentMeta[] = [];
  for (const a of parsed.attachments) {
    const meta = await storeAttachment({ filename: a.filename, contentType: a.contentType, content: a.content }, opts.attachments ?? {});
    if (!meta.stored) flags.attachmentsDropped = true;
    attachments.push(meta);
  }

  const autoSubmitted = first(lines, 'auto-submitted')?.toLowerCase();
  const precedence = first(lines, 'precedence')?.toLowerCase();
  flags.autoReply =
    (autoSubmitted !== undefined && autoSubmitted.split(';')[0]!.trim() !== 'no') ||
    lines.has('x-autoreply') ||
    lines.has('x-autorespond') ||
    (precedence !== undefined && AUTO_PRECEDENCE.has(precedence));
  flags.bulk = (precedence !== undefined && BULK_PRECEDENCE.has(precedence)) || lines.has('list-id');

  const envelope = opts.envelope;
  if (envelope?.mailFrom && customerEmail) flags.fromMismatch = domainOf(envelope.mailFrom) !== domainOf(customerEmail);

  const messageId = normalizeMessageId(parsed.messageId);
  const inReplyTo = parseMessageIdList(parsed.inReplyTo)[0];
  const references = parseMessageIdList(parsed.references);
  const headers: Record<string, string> = {};
  for (const name of KEPT_HEADERS) {
    const v = first(lines, name);
    if (v !== undefined) headers[name] = v.slice(0, 2000);
  }

  const id = newMessageId();
  const message: InboundMessage = {
    id,
    channel: 'email',
    receivedAt: (opts.now?.() ?? new Date()).toISOString(),
    customer: { ...(customerEmail ? { email: customerEmail } : {}), ...(customerName ? { name: customerName } : {}) },
    conversationId: threadRootOf({ messageId, inReplyTo, references }) ?? `<${id}@keel.invalid>`,
    ...(messageId ? { idempotencyKey: messageId } : {}),
    ...(subject !== undefined ? { subject } : {}),
    text,
    ...(html !== undefined ? { html } : {}),
    ...(messageId ? { messageId } : {}),
    ...(inReplyTo ? { inReplyTo } : {}),
    references,
    headers,
    attachments,
    flags,
    ...(envelope ? { envelope } : {}),
  };

  return { message, quarantine: quarantineReason(message, parsed, lines, fromLines.length, opts) };
}

function quarantineReason(
  msg: InboundMessage,
  parsed: ParsedMail,
  lines: Map<string, string[]>,
  fromCount: number,
  opts: EmailParseOptions,
): ParsedInbound['quarantine'] {
  if (lines.has('x-keel-loop')) return { reason: 'mail_loop', detail: `carries our own X-Keel-Loop header (${first(lines, 'x-keel-loop')})` };
  const received = lines.get('received')?.length ?? 0;
  const maxReceived = opts.maxReceivedHeaders ?? 25;
  if (received > maxReceived) return { reason: 'mail_loop', detail: `${received} Received headers (limit ${maxReceived})` };
  const own = new Set((opts.ownAddresses ?? []).map((a) => a.toLowerCase()));
  if (msg.customer.email && own.has(msg.customer.email)) return { reason: 'mail_loop', detail: `From is our own address ${msg.customer.email}` };

  const contentType = parsed.headers.get('content-type') as { value?: string } | undefined;
  if (msg.envelope && msg.envelope.mailFrom === '') return { reason: 'bounce', detail: 'null envelope sender (MAIL FROM:<>)' };
  if (contentType?.value?.toLowerCase() === 'multipart/report') return { reason: 'bounce', detail: 'delivery or disposition report (multipart/report)' };
  if (msg.flags.autoReply) {
    const why = first(lines, 'auto-submitted') ? `Auto-Submitted: ${first(lines, 'auto-submitted')}` : first(lines, 'precedence') ? `Precedence: ${first(lines, 'precedence')}` : 'X-Autoreply';
    return { reason: 'auto_reply', detail: why };
  }
  if (msg.flags.bulk) return { reason: 'bulk_mail', detail: first(lines, 'list-id') ? `List-Id: ${first(lines, 'list-id')}` : `Precedence: ${first(lines, 'precedence')}` };

  if (fromCount > 1) return { reason: 'missing_from', detail: `${fromCount} From headers (a forged or broken message)` };
  if (!msg.customer.email) return { reason: 'missing_from', detail: fromCount === 0 ? 'no From header' : 'From header has no address' };
  if (!msg.text.trim() && msg.attachments.length === 0) return { reason: 'empty_body', detail: 'no text, HTML or attachment' };
  return undefined;
}

/** Header lines by lower-cased name, values unfolded and trimmed, in message order. */
function headerMap(parsed: ParsedMail): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const { key, line } of parsed.headerLines) {
    const colon = line.indexOf(':');
    const value = cleanLine(colon >= 0 ? line.slice(colon + 1) : '');
    const list = out.get(key.toLowerCase());
    if (list) list.push(value);
    else out.set(key.toLowerCase(), [value]);
  }
  return out;
}

function first(lines: Map<string, string[]>, name: string): string | undefined {
  return lines.get(name)?.[0];
}

/** Unfolds and strips control characters (no CR/LF can survive into a header we might echo back). */
function cleanLine(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/\r?\n[ \t]*/g, ' ').replace(/[\u0000-\u0008\u000a-\u001f\u007f]/g, '').trim();
}

function domainOf(address: string): string {
  return address.slice(address.lastIndexOf('@') + 1).toLowerCase();
}

async function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new ChannelError('CHANNEL_PARSE_TIMEOUT', `parsing took longer than ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
