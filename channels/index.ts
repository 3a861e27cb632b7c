/**
 * Keel's channels: the transport edge of the inbound-customer scenario. Email comes in over
 * SMTP, chat over HTTP and WebSocket; both become one {@link InboundMessage} handed to a
 * callback, and nothing is acknowledged to the sender before that callback resolved.
 *
 * ```ts
 * import { startSmtpIngress, createMailSender, buildReply, createChatRoutes, attachChatWebSocket } from './channels/index.ts';
 *
 * const smtp = await startSmtpIngress({
 *   port: 2525,
 *   onMessage: async (msg) => publish('keel.in.email', msg),        // 250 only after this resolved
 *   onQuarantine: async (q) => store(q.reason, q.raw),               // auto-replies, loops, empty mail...
 * });
 * const mail = createMailSender({ outboxDir: '.keel/outbox', from: 'support@example.com', relay: cfg.smtpRelay });
 * await mail.send(buildReply(msg, { text: 'Refund issued.', idempotencyKey: `reply-${msg.id}` }));
 *
 * app.route('/', createChatRoutes({ onMessage: async (msg) => publish('keel.in.chat', msg) }));
 * const hub = attachChatWebSocket(httpServer, { onMessage: async (msg) => publish('keel.in.chat', msg) });
 * hub.pushToConversation(conversationId, { text: 'Hi, how can I help?' });
 * ```
 *
 * Shapes, SMTP answers per bad input, outbox layout and threading rules: docs/channels.md.
 */
export {
  InboundMessageSchema,
  CustomerSchema,
  AttachmentMetaSchema,
  MessageFlagsSchema,
  EnvelopeSchema,
  ChannelKindSchema,
  QUARANTINE_REASONS,
  threadRootOf,
  normalizeMessageId,
  parseMessageIdList,
} from './message.ts';
export type { InboundMessage, Customer, AttachmentMeta, MessageFlags, Envelope, ChannelKind, QuarantineReason } from './message.ts';

export { parseInboundEmail, KEPT_HEADERS } from './email-parse.ts';
export type { EmailParseOptions, ParsedInbound } from './email-parse.ts';
export type { AttachmentStoreOptions } from './attachments.ts';

export { startSmtpIngress, recipientMatcher } from './smtp-ingress.ts';
export type { SmtpIngress, SmtpIngressOptions, SmtpIngressStats, QuarantinedMessage } from './smtp-ingress.ts';

export { createMailSender, buildReply, replySubject } from './mail-sender.ts';
export type { MailSender, MailSenderOptions, OutboundMail, SendResult } from './mail-sender.ts';

export { chatMessageInputSchema, toInboundChat } from './chat-message.ts';
export type { ChatMessageInput } from './chat-message.ts';
export { createChatRoutes } from './chat-http.ts';
export type { ChatRoutesOptions, ChatPostResponse } from './chat-http.ts';
export { attachChatWebSocket } from './chat-ws.ts';
export type { ChatWebSocketHub, ChatWebSocketOptions, ChatServerFrame } from './chat-ws.ts';

export { createIngressRateLimiter, chatSenderKey, formatRateLimit } from './rate-limit.ts';
export { createDiskGuard } from './disk-guard.ts';
export type { DiskGuard, DiskGuardOptions, DiskStatus } from './disk-guard.ts';
export type { IngressRateLimiter, IngressRateLimiterOptions, RateRefusal, RateScope } from './rate-limit.ts';

export * from './errors.ts';
