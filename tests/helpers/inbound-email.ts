import { randomUUID } from 'node:crypto';
import type { InboundMessage } from '../../channels/index.ts';

/**
 * An inbound email as the SMTP ingress would put it on the bus (for tests that publish to the
 * inbound agents directly): `from` defaults to ada@example.com, the conversation is the thread's
 * first reference, else the message it answers, else its own Message-ID.
 */
export function inboundEmail(o: { from?: string; name?: string; subject: string; text: string; messageId: string; inReplyTo?: string; references?: string[]; id?: string }): InboundMessage {
  const references = o.references ?? [];
  const from = o.from ?? 'ada@example.com';
  return {
    id: o.id ?? randomUUID(),
    channel: 'email',
    receivedAt: new Date().toISOString(),
    customer: { email: from, ...(o.name ? { name: o.name } : {}) },
    conversationId: references[0] ?? o.inReplyTo ?? o.messageId,
    idempotencyKey: o.messageId,
    subject: o.subject,
    text: o.text,
    messageId: o.messageId,
    ...(o.inReplyTo ? { inReplyTo: o.inReplyTo } : {}),
    references,
    headers: {},
    attachments: [],
    flags: { autoReply: false, bulk: false, htmlOnly: false, encodingRepaired: false, attachmentsDropped: false, truncated: false, fromMismatch: false },
    envelope: { mailFrom: from, rcptTo: ['support@keel.local'] },
  };
}
