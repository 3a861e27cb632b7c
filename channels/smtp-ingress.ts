import type { SMTPServerDataStream, SMTPServerSession } from 'smtp-server';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { ChannelConfigError, ChannelError, ChannelListenError, describeError, isRetryable, isStorageFull } from './errors.ts';
import { parseInboundEmail, type EmailParseOptions } from './email-parse.ts';
import { silentLogger } from './logger.ts';
import type { IngressRateLimiter, RateRefusal } from './rate-limit.ts';
import type { Envelope, InboundMessage, QuarantineReason } from './message.ts';

/** A message that was accepted (250) but must not be handled as a customer message. */
export interface QuarantinedMessage {
  reason: QuarantineReason;
  detail: string;
  /** The normalized message; absent when the MIME could not be parsed at all. */
  message: InboundMessage | undefined;
  /** The message exactly as received (DATA, dot-unstuffed), so nothing accepted is lost. */
  raw: Buffer;
  envelope: Envelope;
  receivedAt: string;
}

export interface SmtpIngressOptions {
  /** Default 127.0.0.1. */
  host?: string;
  /** 0 picks a free port (read it back from `port`). Default 2525. */
  port?: number;
  /** Announced with SIZE; a larger message is answered 552. Default 10 MiB. */
  maxMessageBytes?: number;
  /**
   * Called with every acceptable message. The client gets 250 only after it resolved; a throw
   * answers 451 (temporary: the client retries) unless the error says `retryable: false`, then 554.
   */
  onMessage: (msg: InboundMessage) => Promise<void>;
  /** Called with every accepted message that must not reach `onMessage`; same answer rules as `onMessage`. */
  onQuarantine: (q: QuarantinedMessage) => Promise<void>;
  /**
   * Optional thread lookup: given a parsed message, the id of a known conversation it belongs to
   * (e.g. found by In-Reply-To in the system of record). Default: {@link threadRootOf}.
   */
  resolveConversation?: (msg: InboundMessage) => Promise<string | undefined>;
  /** Which RCPT TO addresses are taken (others get 550 5.1.1). Default: all. See {@link recipientMatcher}. */
  acceptRecipient?: (address: string) => boolean;
  /** Name in the greeting and EHLO answer. Default `keel.local`. */
  serverName?: string;
  /** Default 50 simultaneous connections. */
  maxClients?: number;
  /** Idle connection timeout. Default 60,000 ms. */
  socketTimeoutMs?: number;
  /** TLS: with `key` and `cert` STARTTLS is offered; without, it is disabled. */
  tls?: { key: string | Buffer; cert: string | Buffer };
  logger?: Logger;
  /** Passed to the MIME parser: attachments dir and limit, text limits, loop detection. */
  parse?: Omit<EmailParseOptions, 'envelope' | 'now'>;
  /**
   * Limits per sender and for the channel ({@link createIngressRateLimiter}): one message is
   * counted at MAIL FROM (by its address), and once more after DATA by the parsed From when that
   * is another address. Over a limit the client gets `421 4.7.0` (and the connection closes).
   */
  rateLimit?: IngressRateLimiter;
  /**
   * Asked at MAIL FROM whether new mail may be taken now (the disk guard, {@link createDiskGuard}):
   * a throw refuses the transaction before any data is sent — `452 4.3.1` when the error means
   * the disk is full ({@link isStorageFull}), `451 4.3.0` otherwise.
   */
  admit?: () => Promise<void>;
}

export interface SmtpIngressStats {
  /** 250 and handed to `onMessage`. */
  accepted: number;
  /** 250 and handed to `onQuarantine`. */
  quarantined: number;
  /** Permanent refusal: 552 (too large) or 554 (handler said non-retryable). */
  rejected: number;
  /** 451: the handler failed, the client will retry. */
  deferred: number;
  /** 452 4.3.1: refused for lack of disk space (at MAIL FROM by `admit`, or a handler that hit a full disk); the client will retry. */
  storageFull: number;
}

export interface SmtpIngress {
  host: string;
  port: number;
  stats(): SmtpIngressStats;
  /** Stops accepting connections and waits (up to 5 s) for open transactions to finish. */
  close(): Promise<void>;
}

/** Handed to an smtp-server callback: it answers the command with `responseCode` and the message. */
class SmtpReplyError extends ChannelError {
  readonly responseCode: number;
  constructor(responseCode: number, message: string) {
    // 4xx asks the client to try again; 5xx is final
    super('CHANNEL_SMTP_REPLY', message, { retryable: responseCode < 500 });
    this.name = 'SmtpReplyError';
    this.responseCode = responseCode;
  }
}

function smtpError(code: number, message: string): SmtpReplyError {
  return new SmtpReplyError(code, message);
}

/** The answer when there is no disk space to keep a message: 452 4.3.1 (temporary; RFC 3463 "mail system full"). */
function insufficientStorage(): SmtpReplyError {
  return smtpError(452, '4.3.1 Insufficient system storage: the server is low on disk space, try again later');
}

/** The answer to a rate-limited sender: 421 4.7.0 (temporary; the server closes the connection). */
function rateLimited(r: RateRefusal): SmtpReplyError {
  const wait = Math.ceil(r.retryAfterMs / 1000);
  const what = r.scope === 'sender' ? 'too many messages from this sender' : 'too many messages for this server';
  return smtpError(421, `4.7.0 ${what}, try again in ${wait} s`);
}

/**
 * The embedded SMTP listener of the email channel. No AUTH; STARTTLS only when `tls` is given.
 * An accepted (250) message has always been handed to `onMessage` or `onQuarantine` first.
 */
export async function startSmtpIngress(opts: SmtpIngressOptions): Promise<SmtpIngress> {
  const host = opts.host ?? '127.0.0.1';
  const port = opts.port ?? 2525;
  const maxBytes = opts.maxMessageBytes ?? 10 * 1024 * 1024;
  if (!Number.isInteger(maxBytes) || maxBytes <= 0) throw new ChannelConfigError('maxMessageBytes', `must be a positive integer, got ${maxBytes}`);
  const log = opts.logger ?? silentLogger();
  const stats: SmtpIngressStats = { accepted: 0, quarantined: 0, rejected: 0, deferred: 0, storageFull: 0 };

  const handle = async (raw: Buffer, envelope: Envelope): Promise<string> => {
    const receivedAt = new Date();
    const parsed = await parseInboundEmail(raw, { ...opts.parse, envelope, now: () => receivedAt });
    const msg = parsed.message;
    // the header From may name another sender than MAIL FROM: it counts against its own limit too
    const from = msg?.customer.email?.toLowerCase();
    if (opts.rateLimit && from && from !== envelope.mailFrom.toLowerCase()) {
      // counted against the channel once already, at MAIL FROM
      const refused = await opts.rateLimit.take(from, { channel: false });
      if (refused) {
        await opts.rateLimit.giveBack();
        log.warn({ scope: refused.scope, retry_after_ms: refused.retryAfterMs }, 'smtp: parsed From over its rate limit, answering 421');
        throw rateLimited(refused);
      }
    }
    if (msg && opts.resolveConversation) {
      const known = await opts.resolveConversation(msg);
      if (known) msg.conversationId = known;
    }
    if (parsed.quarantine || !msg) {
      const q = parsed.quarantine ?? { reason: 'malformed_mime' as const, detail: 'no message' };
      await opts.onQuarantine({ ...q, message: msg, raw, envelope, receivedAt: receivedAt.toISOString() });
      stats.quarantined++;
      log.warn({ reason: q.reason, detail: q.detail, message_id: msg?.messageId, mail_from: envelope.mailFrom }, 'smtp: message quarantined');
      return `OK: quarantined as ${msg?.id ?? 'raw'}`;
    }
    await opts.onMessage(msg);
    stats.accepted++;
    log.info({ id: msg.id, message_id: msg.messageId, conversation_id: msg.conversationId, customer: msg.customer.email }, 'smtp: message accepted');
    return `OK: queued as ${msg.id}`;
  };

  const onData = (stream: SMTPServerDataStream, session: SMTPServerSession, callback: (err?: Error | null, message?: string) => void): void => {
    // smtp-server resets session.envelope once callback runs: copy what we need now
    const envelope: Envelope = {
      mailFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
      rcptTo: session.envelope.rcptTo.map((r) => r.address),
      remoteAddress: session.remoteAddress,
      ...(session.hostNameAppearsAs ? { heloName: session.hostNameAppearsAs } : {}),
    };
    const chunks: Buffer[] = [];
    let size = 0;
    stream.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= maxBytes) chunks.push(chunk); // keep draining past the limit, but stop buffering
    });
    stream.on('error', (err) => {
      log.warn({ err: describeError(err) }, 'smtp: data stream failed');
    });
    stream.on('end', () => {
      if (stream.sizeExceeded || size > maxBytes) {
        stats.rejected++;
        log.warn({ bytes: size, limit: maxBytes, mail_from: envelope.mailFrom }, 'smtp: message over the size limit rejected');
        callback(smtpError(552, `Error: message exceeds fixed maximum message size ${maxBytes}`));
        return;
      }
      handle(Buffer.concat(chunks), envelope).then(
        (reply) => callback(null, reply),
        (err: unknown) => {
          if (err instanceof SmtpReplyError) {
            callback(err);
            return;
          }
          if (isStorageFull(err)) {
            stats.storageFull++;
            log.warn({ err: describeError(err), mail_from: envelope.mailFrom }, 'smtp: no disk space to keep the message, answering 452 so the client retries');
            callback(insufficientStorage());
            return;
          }
          if (isRetryable(err)) {
            stats.deferred++;
            log.warn({ err: describeError(err), mail_from: envelope.mailFrom }, 'smtp: handler failed, answering 451 so the client retries');
            callback(smtpError(451, 'Error: temporary local problem, try again later'));
          } else {
            stats.rejected++;
            log.error({ err: describeError(err), mail_from: envelope.mailFrom }, 'smtp: handler refused the message, answering 554');
            callback(smtpError(554, `Error: message refused: ${oneLine(describeError(err))}`));
          }
        },
      );
    });
  };

  // smtp-server loads only in the process that hosts the ingress (not in agents importing channels/)
  const { SMTPServer } = await import('smtp-server');
  const server = new SMTPServer({
    name: opts.serverName ?? 'keel.local',
    banner: 'Keel SMTP ingress',
    size: maxBytes,
    rejectOversized: true,
    authOptional: true,
    disabledCommands: opts.tls ? ['AUTH'] : ['AUTH', 'STARTTLS'],
    ...(opts.tls ? { key: opts.tls.key, cert: opts.tls.cert } : { hideSTARTTLS: true }),
    maxClients: opts.maxClients ?? 50,
    socketTimeout: opts.socketTimeoutMs ?? 60_000,
    closeTimeout: 5_000,
    logger: false,
    onMailFrom(address, session, cb) {
      const takeRate = () => {
        if (!opts.rateLimit) return cb();
        opts.rateLimit.take(address.address).then(
          (refused) => {
            if (!refused) return cb();
            log.warn({ scope: refused.scope, remote: session.remoteAddress, retry_after_ms: refused.retryAfterMs }, 'smtp: sender over its rate limit, answering 421');
            cb(rateLimited(refused));
          },
          // the limiter is in memory and should not fail; if it does, the mail is not refused for it
          (err: unknown) => {
            log.error({ err: describeError(err) }, 'smtp: rate limiter failed, letting the message through');
            cb();
          },
        );
      };
      if (!opts.admit) return takeRate();
      // the disk guard first: a refused transaction does not count against the sender's limit
      opts.admit().then(takeRate, (err: unknown) => {
        if (isStorageFull(err)) {
          stats.storageFull++;
          log.warn({ err: describeError(err), remote: session.remoteAddress }, 'smtp: disk space below the reserve, answering 452 to MAIL FROM');
          cb(insufficientStorage());
        } else {
          stats.deferred++;
          log.warn({ err: describeError(err), remote: session.remoteAddress }, 'smtp: not taking mail now, answering 451 to MAIL FROM');
          cb(smtpError(451, '4.3.0 temporary local problem, try again later'));
        }
      });
    },
    onRcptTo(address, session, cb) {
      if (opts.acceptRecipient && !safeCall(() => opts.acceptRecipient!(address.address))) {
        log.info({ rcpt_to: address.address, remote: session.remoteAddress }, 'smtp: recipient refused (not an accepted domain or address)');
        return cb(smtpError(550, `5.1.1 <${oneLine(address.address)}>: recipient not accepted here (no mailbox by that name)`));
      }
      cb();
    },
    onData,
  });
  // per-connection failures (resets, timeouts, TLS errors) arrive here; without a listener they would crash the process
  server.on('error', (err) => log.warn({ err: describeError(err) }, 'smtp: connection error'));

  await new Promise<void>((resolve, reject) => {
    const onErr = (err: Error) => reject(new ChannelListenError(host, port, err));
    server.server.once('error', onErr);
    server.listen(port, host, () => {
      server.server.off('error', onErr);
      resolve();
    });
  });
  const bound = (server.server.address() as AddressInfo).port;
  log.info({ host, port: bound, max_message_bytes: maxBytes }, 'smtp: ingress listening');

  return {
    host,
    port: bound,
    stats: () => ({ ...stats }),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/**
 * A recipient filter from a list of domains (`example.com`, also `@example.com`) and addresses
 * (`support@example.com`), compared case-insensitively; `*` accepts every recipient. For
 * {@link SmtpIngressOptions.acceptRecipient}, e.g. from `KEEL_SMTP_ACCEPT`.
 */
export function recipientMatcher(accept: readonly string[]): (address: string) => boolean {
  const all = accept.some((a) => a.trim() === '*');
  const addresses = new Set(accept.map((a) => a.trim().toLowerCase()).filter((a) => /^[^@]+@[^@]+$/.test(a)));
  const domains = new Set(accept.map((a) => a.trim().toLowerCase().replace(/^@/, '')).filter((a) => a && a !== '*' && !a.includes('@')));
  return (address: string) => {
    if (all) return true;
    const a = address.trim().toLowerCase();
    const at = a.lastIndexOf('@');
    return addresses.has(a) || (at > 0 && domains.has(a.slice(at + 1)));
  };
}

function safeCall(fn: () => boolean): boolean {
  try {
    return fn();
  } catch {
    return false;
  }
}

function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, ' ').slice(0, 200);
}
