import { createHash, createHmac, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Server } from 'node:http';
import type { Hono } from 'hono';
import type { Logger } from 'pino';
import { startSmtpIngress, recipientMatcher, createChatRoutes, attachChatWebSocket, createIngressRateLimiter, createDiskGuard, formatRateLimit, InboundMessageSchema, type DiskGuard, type InboundMessage, type ChatWebSocketHub, type QuarantinedMessage, type RateRefusal } from '../../channels/index.ts';
import type { StateStore, CommittedEvent } from '../../shared-state/index.ts';
import { defineMessage, type Bus } from '../../bus/index.ts';
import type { WorkflowEngine } from '../../workflows/index.ts';
import type { Ingress, IngressContext } from '../../runtime/index.ts';
import { customerIdFor } from './ticket.ts';
import { INBOUND_WORKFLOW } from './workflow.ts';
import { withSpan, getTracer, SpanKind } from '../../observability/index.ts';

/** One run per inbound message: the same message delivered twice (SMTP retry, chat retry) starts one run. */
export function runIdFor(msg: InboundMessage): string {
  const key = msg.idempotencyKey ?? msg.messageId ?? msg.id;
  return `in-${createHash('sha256').update(`${msg.channel}\n${key}`).digest('hex').slice(0, 24)}`;
}

/**
 * Hands an inbound message to the bus: records it on `<p>.in.<channel>` and starts the
 * `inbound-message` workflow run (persisted in the state, its first task published to JetStream)
 * before the channel acknowledges it, so an accepted message is never lost.
 */
const InboundMessageType = defineMessage('inbound.message', InboundMessageSchema);

export function inboundHandler(workflows: WorkflowEngine, bus: Bus, log: Logger, disk?: DiskGuard) {
  return async (msg: InboundMessage): Promise<void> => {
    // below KEEL_MIN_FREE_MB nothing new is taken (SMTP 452, chat 507): the reserve is for the runs already accepted
    await disk?.admit();
    const runId = runIdFor(msg);
    const customer = customerIdFor(msg.customer);
    const r = await withSpan(getTracer('keel.channels'), `${msg.channel}.receive`, { kind: SpanKind.SERVER, attributes: { 'keel.channel': msg.channel, 'keel.run_id': runId, 'keel.message.id': msg.messageId ?? msg.id } }, async () => {
      // the raw signal, kept on `<p>.in.<channel>` for audit and replay (deduplicated like the run)
      await bus.publish(bus.subjects.in(msg.channel), InboundMessageType, msg, { id: runId, correlationId: runId, ...(customer ? { customer } : {}) });
      return workflows.start(INBOUND_WORKFLOW, { message: msg }, { runId, customer, causationId: msg.id });
    });
    log.info({ runId, channel: msg.channel, customer: msg.customer.email ?? msg.customer.handle, duplicate: !r.created, traceId: r.traceId }, 'inbound message accepted');
  };
}

/** Quarantined mail: the raw bytes and the reason under KEEL_DATA_DIR/quarantine, and an audit record. */
export function quarantineHandler(dataDir: string, store: StateStore, log: Logger, disk?: DiskGuard) {
  const dir = join(dataDir, 'quarantine');
  return async (q: QuarantinedMessage): Promise<void> => {
    await disk?.admit();
    mkdirSync(dir, { recursive: true });
    const id = `${q.receivedAt.replace(/[:.]/g, '-')}-${createHash('sha256').update(q.raw).digest('hex').slice(0, 12)}`;
    writeFileSync(join(dir, `${id}.eml`), q.raw);
    writeFileSync(join(dir, `${id}.json`), JSON.stringify({ reason: q.reason, detail: q.detail, envelope: q.envelope, receivedAt: q.receivedAt }, null, 2));
    await store.appendAudit({ actor: { kind: 'system', id: 'smtp' }, action: 'message.quarantined', subject: `quarantine/${id}`, details: { reason: q.reason, detail: q.detail, from: q.envelope.mailFrom } });
    log.warn({ reason: q.reason, detail: q.detail, file: `${id}.eml` }, 'inbound mail quarantined');
  };
}

/**
 * The salt of the sender hashes in `ingress.rate_limited` audit records: random, kept in
 * KEEL_DATA_DIR/ingress-salt so one sender hashes alike across restarts (and only on this engine).
 */
export function ingressSalt(dataDir: string): Buffer {
  const file = join(dataDir, 'ingress-salt');
  if (existsSync(file)) {
    const s = Buffer.from(readFileSync(file, 'utf8').trim(), 'hex');
    if (s.length >= 16) return s;
  }
  const s = randomBytes(32);
  mkdirSync(dataDir, { recursive: true });
  writeFileSync(file, `${s.toString('hex')}\n`, { mode: 0o600 });
  return s;
}

/** What an audit record may keep of a sender (data minimization): its domain and a salted hash, never the address. */
export function senderDigest(salt: Buffer, sender: string): { senderDomain?: string; senderHash: string } {
  const key = sender.trim().toLowerCase();
  const at = key.lastIndexOf('@');
  return { ...(at > 0 && !key.startsWith('handle:') ? { senderDomain: key.slice(at + 1) } : {}), senderHash: createHmac('sha256', salt).update(key).digest('hex').slice(0, 16) };
}

/**
 * Records a rate-limit refusal: every one is counted (the ingress stats) and logged; the FIRST
 * of each key in its window also becomes an audit record `ingress.rate_limited` (actor
 * `system:smtp` / `system:chat`, subject `channel/<name>`), so a flood does not flood the chain.
 */
export function rateLimitAuditor(store: StateStore, salt: Buffer, log: Logger) {
  return async (r: RateRefusal): Promise<void> => {
    if (!r.first) return;
    const actor = { kind: 'system' as const, id: r.channel === 'email' ? 'smtp' : 'chat' };
    const details = { channel: r.channel, scope: r.scope, limit: formatRateLimit(r.limit), retryAfterS: Math.ceil(r.retryAfterMs / 1000), ...senderDigest(salt, r.sender) };
    try {
      await store.appendAudit({ actor, action: 'ingress.rate_limited', subject: `channel/${r.channel}`, details });
    } catch (err) {
      log.error({ err, ...details }, 'rate-limit refusal could not be audited');
      return;
    }
    log.warn(details, 'inbound sender rate limited (audited; later refusals in this window are only counted)');
  };
}

/**
 * Chat replies reach the customer live: every `reply_sent` event of a chat ticket (published by
 * the outbox relay on `<p>.evt.ticket.<id>`) is pushed to the sockets in that conversation.
 */
export function startChatPush(o: { bus: Bus; store: StateStore; hub: () => ChatWebSocketHub | undefined; log: Logger }): { stop(): void } {
  return o.bus.subscribeEvents('ticket', async (m) => {
    const e = m.json<CommittedEvent>();
    if (e.type !== 'reply_sent') return;
    const t = await o.store.get<{ channel?: string; threadKey?: string; conversationId?: string }>('ticket', e.entityId);
    const conversation = t?.state.conversationId ?? t?.state.threadKey;
    if (!t || t.state.channel !== 'chat' || !conversation) return;
    const n = o.hub()?.pushToConversation(conversation, { kind: 'reply', ticketId: e.entityId, message: e.data }) ?? 0;
    o.log.info({ ticket: e.entityId, conversation, sockets: n }, 'chat reply pushed');
  }, { onError: (err) => o.log.warn({ err }, 'chat push failed') });
}

/**
 * The feature's ingress, hosted by the engine: SMTP on `KEEL_SMTP_HOST:KEEL_SMTP_PORT`, chat on
 * the engine's HTTP API (`POST /v1/chat/messages`) and WebSocket, quarantine, and live chat replies.
 */
export async function startIngress(ctx: IngressContext): Promise<Ingress> {
  const { config, workflows, store, bus, logger: log } = ctx;
  // the data dir's free space (KEEL_MIN_FREE_MB), checked before any new message is taken
  const disk = createDiskGuard({ dir: config.dataDir, minFreeBytes: config.minFreeBytes });
  const onMessage = inboundHandler(workflows, bus, log, disk);
  // KEEL_RATE_LIMIT_SENDER / KEEL_RATE_LIMIT_CHANNEL: one limiter per channel (chat HTTP and WebSocket share theirs)
  const onRefused = rateLimitAuditor(store, ingressSalt(config.dataDir), log);
  const limits = { sender: config.rateLimits.sender, total: config.rateLimits.channel, onRefused };
  const emailLimit = createIngressRateLimiter({ channel: 'email', ...limits });
  const chatLimit = createIngressRateLimiter({ channel: 'chat', ...limits });
  const smtp = await startSmtpIngress({
    host: config.smtpHost,
    port: config.smtpPort,
    maxMessageBytes: config.smtpMaxBytes,
    onMessage,
    onQuarantine: quarantineHandler(config.dataDir, store, log, disk),
    // KEEL_SMTP_ACCEPT (default: the domain of KEEL_SMTP_FROM); other recipients get 550 5.1.1
    acceptRecipient: recipientMatcher(config.smtpAccept),
    logger: log,
    parse: { attachments: { dir: join(config.dataDir, 'attachments') } },
    rateLimit: emailLimit,
    admit: disk.admit,
  });
  log.info({ smtp: `${config.smtpHost}:${smtp.port}`, accept: config.smtpAccept }, 'SMTP ingress listening');
  let hub: ChatWebSocketHub | undefined;
  const push = startChatPush({ bus, store, hub: () => hub, log });
  return {
    mount: (app: Hono) => void app.route('/', createChatRoutes({ onMessage, rateLimit: chatLimit, admit: disk.admit, logger: log })),
    attach: (server: Server) => void (hub = attachChatWebSocket(server, { onMessage, rateLimit: chatLimit, logger: log })),
    // refusals by channel and scope (`email_sender`, `email_channel`, `chat_sender`, `chat_channel`)
    stats: () => ({ keel_smtp_messages: { ...smtp.stats() }, keel_ingress_rate_limited: { ...emailLimit.stats(), ...chatLimit.stats() } }),
    close: async () => {
      push.stop();
      await hub?.close();
      await smtp.close();
    },
  };
}
