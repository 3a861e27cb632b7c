import { createHash, randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Transporter } from 'nodemailer';
import type { Logger } from 'pino';
import { writeFileOnce } from './atomic-file.ts';
import { ChannelConfigError, InvalidOutboundError, MailSendError, OutboxWriteError } from './errors.ts';
import { silentLogger } from './logger.ts';
import { normalizeMessageId, parseMessageIdList, type InboundMessage } from './message.ts';

export interface MailSenderOptions {
  /** `smtp://[user:pass@]host:port` or `smtps://...` (KEEL_SMTP_RELAY). Unset: the embedded default, mail is only written to `outboxDir`. */
  relay?: string | undefined;
  /** Every sent mail is written here as `<name>.eml` (with a relay: after the relay took it). */
  outboxDir: string;
  /** The From address, e.g. `Support <support@example.com>`. */
  from: string;
  /** Domain of generated Message-IDs. Default: the domain of `from`. */
  messageIdDomain?: string;
  /** Value of the `X-Keel-Loop` header on every mail, so ingress recognises our own mail coming back. Default: the Message-ID domain. */
  loopToken?: string;
  /** Relay timeouts (connect, greeting, socket idle). Default 10,000 ms. */
  relayTimeoutMs?: number;
  logger?: Logger;
}

export interface OutboundMail {
  to: string | string[];
  cc?: string | string[];
  subject: string;
  text: string;
  html?: string;
  /** Parent's Message-ID. */
  inReplyTo?: string;
  /** Full References chain, oldest first (see {@link buildReply}). */
  references?: string[];
  /** Use this Message-ID instead of a generated one. */
  messageId?: string;
  /** Extra headers. Names must be header tokens; values one line. */
  headers?: Record<string, string>;
  /**
   * Same key, same mail: the outbox file is `key-<key>.eml` and the Message-ID derives from the
   * key, so a retried send writes (and relays) the mail once and answers `duplicate: true`.
   */
  idempotencyKey?: string;
  /**
   * True when no human approved this mail (RFC 3834): adds `Auto-Submitted: auto-replied`
   * (`auto-generated` when not a reply). A human-approved reply is not auto-submitted. Default false.
   */
  autoSubmitted?: boolean;
}

export interface SendResult {
  messageId: string;
  /** The `.eml` in the outbox. */
  path: string;
  /** True when the idempotency key had been sent already: nothing was written or relayed this time. */
  duplicate: boolean;
  /** True when a relay accepted the mail. */
  relayed: boolean;
  /** The relay's final answer, e.g. `250 OK: queued`. */
  response?: string;
}

export interface MailSender {
  send(mail: OutboundMail): Promise<SendResult>;
  /** Closes relay connections. */
  close(): Promise<void>;
}

const HEADER_NAME = /^[!-9;-~]+$/;
const MAX_REFERENCES = 30;

/**
 * Creates the email channel's sender. Without a relay the mail is written as an RFC 5322 `.eml`
 * file to `outboxDir` (the local capture of the embedded default); with one it goes through
 * nodemailer's SMTP transport, and the `.eml` records exactly the bytes the relay accepted.
 */
export function createMailSender(opts: MailSenderOptions): MailSender {
  const log = opts.logger ?? silentLogger();
  const outboxDir = resolve(opts.outboxDir);
  const fromAddress = extractAddress(opts.from);
  if (!fromAddress) throw new ChannelConfigError('from', `not an email address: '${opts.from}'`);
  const domain = opts.messageIdDomain ?? fromAddress.slice(fromAddress.lastIndexOf('@') + 1);
  const loopToken = opts.loopToken ?? domain;
  const relay = opts.relay ? parseRelay(opts.relay) : undefined;
  const timeout = opts.relayTimeoutMs ?? 10_000;

  // nodemailer loads with the first mail (agents that never send one never load it)
  let transports: Promise<{ composer: Transporter; relayTransport: Transporter | undefined }> | undefined;
  const loadTransports = () =>
    (transports ??= import('nodemailer').then(({ default: nodemailer }) => ({
      composer: nodemailer.createTransport({ streamTransport: true, buffer: true, newline: 'windows' }),
      relayTransport: relay
        ? nodemailer.createTransport({
            host: relay.host,
            port: relay.port,
            secure: relay.secure,
            ...(relay.auth ? { auth: relay.auth } : {}),
            connectionTimeout: timeout,
            greetingTimeout: timeout,
            socketTimeout: timeout * 3,
          })
        : undefined,
    })));
  const inflight = new Map<string, Promise<SendResult>>();

  const sendOnce = async (mail: OutboundMail): Promise<SendResult> => {
    const to = list(mail.to);
    const cc = list(mail.cc);
    validate(mail, to, cc);
    const key = mail.idempotencyKey;
    const path = join(outboxDir, key ? `key-${fileSafe(key)}.eml` : `${new Date().toISOString().replace(/[:.]/g, '-')}-${randomUUID()}.eml`);
    const messageId =
      normalizeMessageId(mail.messageId) ?? `<${key ? createHash('sha256').update(key).digest('hex').slice(0, 32) : randomUUID()}@${domain}>`;
    if (key) {
      const existing = await readMessageId(path);
      if (existing !== null) {
        log.info({ path, idempotency_key: key }, 'mail: already sent, not sending again');
        return { messageId: existing ?? messageId, path, duplicate: true, relayed: false };
      }
    }
    const headers: Record<string, string> = { 'X-Keel-Loop': loopToken };
    if (mail.autoSubmitted) headers['Auto-Submitted'] = mail.inReplyTo ? 'auto-replied' : 'auto-generated';
    Object.assign(headers, mail.headers ?? {});
    const inReplyTo = normalizeMessageId(mail.inReplyTo);
    const references = parseMessageIdList(mail.references ?? []);

    const { composer, relayTransport } = await loadTransports();
    const built = await composer.sendMail({
      from: opts.from,
      to,
      ...(cc.length ? { cc } : {}),
      subject: oneLine(mail.subject),
      text: mail.text,
      ...(mail.html !== undefined ? { html: mail.html } : {}),
      messageId,
      ...(inReplyTo ? { inReplyTo } : {}),
      ...(references.length ? { references } : {}),
      headers,
    });
    const raw = built.message as Buffer;

    let response: string | undefined;
    if (relayTransport && relay) {
      try {
        const info = await relayTransport.sendMail({ envelope: { from: fromAddress, to: [...to, ...cc].map((a) => extractAddress(a) ?? a) }, raw });
        response = info.response;
      } catch (err) {
        throw new MailSendError(relay.display, [...to, ...cc], err);
      }
    }
    let created: boolean;
    try {
      created = await writeFileOnce(path, raw);
    } catch (err) {
      throw new OutboxWriteError(path, err);
    }
    log.info({ message_id: messageId, to, path, relayed: !!relay, created }, 'mail: sent');
    return { messageId, path, duplicate: !created, relayed: !!relay, ...(response !== undefined ? { response } : {}) };
  };

  return {
    send(mail) {
      const key = mail.idempotencyKey;
      if (!key) return sendOnce(mail);
      // concurrent sends of one key in this process share one attempt
      const running = inflight.get(key);
      if (running) return running.then((r) => ({ ...r, duplicate: true }));
      const p = sendOnce(mail).finally(() => inflight.delete(key));
      inflight.set(key, p);
      return p;
    },
    async close() {
      if (!transports) return;
      const { composer, relayTransport } = await transports;
      relayTransport?.close();
      composer.close();
    },
  };
}

/**
 * The reply to an inbound email, threaded: To the customer, `Re: ` prefixed once,
 * In-Reply-To = the parent's Message-ID, References = the parent's References + its Message-ID.
 */
export function buildReply(
  parent: Pick<InboundMessage, 'customer' | 'subject' | 'messageId' | 'references'>,
  reply: Omit<OutboundMail, 'to' | 'subject' | 'inReplyTo' | 'references'> & { to?: string | string[]; subject?: string },
): OutboundMail {
  const to = reply.to ?? parent.customer.email;
  if (!to || (Array.isArray(to) && to.length === 0)) throw new InvalidOutboundError(['the parent message has no customer email to reply to']);
  const parentId = normalizeMessageId(parent.messageId);
  let references = parseMessageIdList([...parent.references, ...(parentId ? [parentId] : [])]);
  // keep the root (the thread key) and the most recent ancestors, as RFC 5322 suggests
  if (references.length > MAX_REFERENCES) references = [references[0]!, ...references.slice(-(MAX_REFERENCES - 1))];
  return {
    ...reply,
    to,
    subject: reply.subject ?? replySubject(parent.subject ?? ''),
    ...(parentId ? { inReplyTo: parentId } : {}),
    references,
  };
}

/** `Re: ` + the subject without any leading `Re:` / `RE:` / `Re[2]:` chain. */
export function replySubject(subject: string): string {
  const base = oneLine(subject).replace(/^(\s*re(\[\d+\])?\s*:\s*)+/i, '');
  return `Re: ${base}`.trimEnd();
}

function validate(mail: OutboundMail, to: string[], cc: string[]): void {
  const problems: string[] = [];
  if (to.length === 0) problems.push('to: at least one recipient is required');
  for (const a of [...to, ...cc]) if (!extractAddress(a) || /[\r\n]/.test(a)) problems.push(`not an email address: '${a}'`);
  for (const [name, value] of Object.entries(mail.headers ?? {})) {
    if (!HEADER_NAME.test(name)) problems.push(`header name '${name}' is not a header token`);
    if (/[\r\n]/.test(value)) problems.push(`header ${name}: value must be one line`);
  }
  if (typeof mail.text !== 'string') problems.push('text: required');
  if (problems.length) throw new InvalidOutboundError(problems);
}

function parseRelay(url: string): { host: string; port: number; secure: boolean; auth?: { user: string; pass: string }; display: string } {
  let u: URL;
  try {
    u = new URL(url);
  } catch (err) {
    throw new ChannelConfigError('relay', `not a URL: '${url}' (expected smtp://host:port)`, err);
  }
  if (u.protocol !== 'smtp:' && u.protocol !== 'smtps:') throw new ChannelConfigError('relay', `scheme must be smtp: or smtps:, got '${u.protocol}'`);
  const secure = u.protocol === 'smtps:';
  const port = u.port ? Number(u.port) : secure ? 465 : 587;
  const user = decodeURIComponent(u.username);
  return {
    host: u.hostname.replace(/^\[|\]$/g, ''),
    port,
    secure,
    ...(user ? { auth: { user, pass: decodeURIComponent(u.password) } } : {}),
    display: `${u.protocol}//${u.host}`, // never the credentials
  };
}

/** The Message-ID recorded in an existing outbox file; null when there is no file. */
async function readMessageId(path: string): Promise<string | undefined | null> {
  let content: string;
  try {
    content = await readFile(path, 'latin1');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new OutboxWriteError(path, err);
  }
  const head = content.split(/\r?\n\r?\n/, 1)[0] ?? '';
  const m = /^message-id:\s*(<[^>\r\n]+>)/im.exec(head);
  return m?.[1];
}

function extractAddress(s: string): string | undefined {
  const m = /<([^<>\s]+@[^<>\s]+)>\s*$/.exec(s) ?? /^\s*([^<>\s"]+@[^<>\s"]+)\s*$/.exec(s);
  return m?.[1];
}

function list(v: string | string[] | undefined): string[] {
  if (v === undefined) return [];
  return (Array.isArray(v) ? v : [v]).map((s) => s.trim()).filter(Boolean);
}

function fileSafe(key: string): string {
  return /^[A-Za-z0-9_-]{1,100}$/.test(key) ? key : createHash('sha256').update(key).digest('hex');
}

function oneLine(s: string): string {
  return s.replace(/[\r\n]+\s*/g, ' ');
}

