import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import {
  buildReply,
  InboundMessageSchema,
  normalizeMessageId,
  parseInboundEmail,
  parseMessageIdList,
  replySubject,
  threadRootOf,
  toInboundChat,
  isRetryable,
  ChannelHandlerError,
} from '../../channels/index.ts';

describe('threading', () => {
  it('normalizes Message-IDs and rejects what is not one', () => {
    expect(normalizeMessageId(' abc@x ')).toBe('<abc@x>');
    expect(normalizeMessageId('<abc@x>')).toBe('<abc@x>');
    expect(normalizeMessageId('<<abc@x>>')).toBe('<abc@x>');
    expect(normalizeMessageId('')).toBeUndefined();
    expect(normalizeMessageId('two words')).toBeUndefined();
  });

  it('splits References in order without duplicates', () => {
    expect(parseMessageIdList('<a@x> <b@x>\r\n <c@x> <a@x>')).toEqual(['<a@x>', '<b@x>', '<c@x>']);
    expect(parseMessageIdList(['<a@x>', 'b@x'])).toEqual(['<a@x>', '<b@x>']);
    expect(parseMessageIdList(undefined)).toEqual([]);
  });

  it('takes the thread root from References, then In-Reply-To, then the own Message-ID', () => {
    expect(threadRootOf({ messageId: '<c@x>', inReplyTo: '<b@x>', references: ['<a@x>', '<b@x>'] })).toBe('<a@x>');
    expect(threadRootOf({ messageId: '<c@x>', inReplyTo: '<b@x>', references: [] })).toBe('<b@x>');
    expect(threadRootOf({ messageId: '<c@x>', references: [] })).toBe('<c@x>');
    expect(threadRootOf({ references: [] })).toBeUndefined();
  });

  it('prefixes Re: once', () => {
    expect(replySubject('Refund')).toBe('Re: Refund');
    expect(replySubject('Re: Refund')).toBe('Re: Refund');
    expect(replySubject('RE: re:Re[2]: Refund')).toBe('Re: Refund');
    expect(replySubject('')).toBe('Re:');
  });

  it('builds reply headers from the parent and keeps the root when References grow long', () => {
    const refs = Array.from({ length: 50 }, (_, i) => `<m${i}@x>`);
    const r = buildReply({ customer: { email: 'a@example.com' }, subject: 'Order', messageId: '<m50@x>', references: refs }, { text: 'ok' });
    expect(r.to).toBe('a@example.com');
    expect(r.subject).toBe('Re: Order');
    expect(r.inReplyTo).toBe('<m50@x>');
    expect(r.references![0]).toBe('<m0@x>');
    expect(r.references!.at(-1)).toBe('<m50@x>');
    expect(r.references!.length).toBe(30);
    expect(() => buildReply({ customer: { handle: 'h' }, messageId: '<m@x>', references: [] }, { text: 'x' })).toThrow(expect.objectContaining({ code: 'CHANNEL_INVALID_MESSAGE' }));
  });
});

describe('parseInboundEmail on hostile input', () => {
  it('never throws, whatever the bytes', async () => {
    for (let i = 0; i < 50; i++) {
      const raw = randomBytes(50 + i * 37);
      const r = await parseInboundEmail(raw);
      if (r.message) expect(InboundMessageSchema.safeParse(r.message).success).toBe(true);
      expect(r.message || r.quarantine).toBeTruthy();
    }
  });

  it('handles deep nesting and a header-only message', async () => {
    let body = 'leaf\r\n';
    for (let i = 0; i < 60; i++) body = `Content-Type: multipart/mixed; boundary="b${i}"\r\n\r\n--b${i}\r\n${body}--b${i}--\r\n`;
    const r = await parseInboundEmail(Buffer.from(`From: a@example.com\r\n${body}`));
    expect(r.message).toBeDefined();
    const h = await parseInboundEmail(Buffer.from('From: a@example.com\r\nSubject: only headers'));
    expect(h.quarantine?.reason).toBe('empty_body');
  });
});

describe('chat input', () => {
  it('builds a valid InboundMessage with stable ids for a clientMessageId', () => {
    const input = { customer: { handle: 'bob' }, text: 'hi', clientMessageId: 'x1' };
    const a = toInboundChat(input);
    const b = toInboundChat(input);
    expect(InboundMessageSchema.parse(a)).toEqual(a);
    expect(b.id).toBe(a.id);
    expect(b.conversationId).toBe(a.conversationId);
    expect(toInboundChat({ ...input, clientMessageId: 'x2' }).id).not.toBe(a.id);
  });
});

describe('errors', () => {
  it('reads retryability from any thrown value', () => {
    expect(isRetryable(new Error('x'))).toBe(true);
    expect(isRetryable({ retryable: false })).toBe(false);
    expect(isRetryable({ nonRetryable: true })).toBe(false);
    expect(isRetryable(new ChannelHandlerError('x', { retryable: false }))).toBe(false);
    expect(isRetryable('string')).toBe(true);
  });
});
