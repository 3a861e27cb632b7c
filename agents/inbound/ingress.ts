import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Server } from 'node:http';
import type { Hono } from 'hono';
import type { Logger } from 'pino';
import { startSmtpIngress, recipientMatcher, createChatRoutes, attachChatWebSocket, InboundMessageSchema, type InboundMessage, type ChatWebSocketHub, type QuarantinedMessage } from '../../channels/index.ts';
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

export function inboundHandler(workflows: WorkflowEngine, bus: Bus, log: Logger) {
  return async (msg: InboundMessage): Promise<void> => {
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
export function quarantineHandler(dataDir: string, store: StateStore, log: Logger) {
  const dir = join(dataDir, 'quarantine');
  return async (q: QuarantinedMessage): Promise<void> => {
    mkdirSync(dir, { recursive: true });
    const id = `${q.receivedAt.replace(/[:.]/g, '-')}-${createHash('sha256').update(q.raw).digest('hex').slice(0, 12)}`;
    writeFileSync(join(dir, `${id}.eml`), q.raw);
    writeFileSync(join(dir, `${id}.json`), JSON.stringify({ reason: q.reason, detail: q.detail, envelope: q.envelope, receivedAt: q.receivedAt }, null, 2));
    await store.appendAudit({ actor: { kind: 'system', id: 'smtp' }, action: 'message.quarantined', subject: `quarantine/${id}`, details: { reason: q.reason, detail: q.detail, from: q.envelope.mailFrom } });
    log.warn({ reason: q.reason, detail: q.detail, file: `${id}.eml` }, 'inbound mail quarantined');
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
  const onMessage = inboundHandler(workflows, bus, log);
  const smtp = await startSmtpIngress({
    host: config.smtpHost,
    port: config.smtpPort,
    maxMessageBytes: config.smtpMaxBytes,
    onMessage,
    onQuarantine: quarantineHandler(config.dataDir, store, log),
    // KEEL_SMTP_ACCEPT (default: the domain of KEEL_SMTP_FROM); other recipients get 550 5.1.1
    acceptRecipient: recipientMatcher(config.smtpAccept),
    logger: log,
    parse: { attachments: { dir: join(config.dataDir, 'attachments') } },
  });
  log.info({ smtp: `${config.smtpHost}:${smtp.port}`, accept: config.smtpAccept }, 'SMTP ingress listening');
  let hub: ChatWebSocketHub | undefined;
  const push = startChatPush({ bus, store, hub: () => hub, log });
  return {
    mount: (app: Hono) => void app.route('/', createChatRoutes({ onMessage, logger: log })),
    attach: (server: Server) => void (hub = attachChatWebSocket(server, { onMessage, logger: log })),
    stats: () => ({ keel_smtp_messages: { ...smtp.stats() } }),
    close: async () => {
      push.stop();
      await hub?.close();
      await smtp.close();
    },
  };
}
