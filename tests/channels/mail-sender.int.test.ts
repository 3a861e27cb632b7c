import { afterEach, describe, expect, it } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { SMTPServer } from 'smtp-server';
import { simpleParser } from 'mailparser';
import {
  buildReply,
  createMailSender,
  isChannelError,
  parseInboundEmail,
  threadRootOf,
  type InboundMessage,
  type MailSender,
} from '../../channels/index.ts';
import { freePort, tempDir } from '../../testkit/common.ts';
import { startTestIngress, swaks, type IngressFixture } from './smtp-helpers.ts';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function outbox(): string {
  const d = tempDir('keel-outbox-');
  cleanups.push(d.remove);
  return d.path;
}

function sender(opts: Partial<Parameters<typeof createMailSender>[0]> & { outboxDir: string }): MailSender {
  const s = createMailSender({ from: 'Keel Support <support@keel.local>', ...opts });
  cleanups.push(() => s.close());
  return s;
}

/** A customer mail received over real SMTP, to reply to. */
async function receiveCustomerMail(fx: IngressFixture): Promise<InboundMessage> {
  const r = await swaks(fx.smtp.port, [
    '--to', 'support@keel.local',
    '--from', 'alice@example.com',
    '--header', 'From: Alice <alice@example.com>',
    '--header', 'Subject: Re: RE: Refund for order 7',
    '--header', 'Message-Id: <c2@example.com>',
    '--header', 'In-Reply-To: <k1@keel.local>',
    '--header', 'References: <c1@example.com> <k1@keel.local>',
    '--body', 'still waiting for the refund',
  ]);
  expect(r.lastReply, r.output).toBe(250);
  return fx.messages[0]!;
}

describe('mail sender', () => {
  it('writes a threaded reply as an RFC 5322 .eml in the outbox (embedded default)', async () => {
    const fx = await startTestIngress();
    cleanups.push(() => fx.stop());
    const parent = await receiveCustomerMail(fx);
    const dir = outbox();
    const mail = sender({ outboxDir: dir });
    const res = await mail.send(buildReply(parent, { text: 'Your refund was issued today.' }));

    expect(res.relayed).toBe(false);
    expect(res.duplicate).toBe(false);
    expect(res.path.startsWith(dir)).toBe(true);
    expect(res.messageId).toMatch(/^<[^@]+@keel\.local>$/);
    expect(readdirSync(dir).filter((f) => f.endsWith('.eml'))).toHaveLength(1);
    expect(readdirSync(join(dir, '.tmp'))).toEqual([]); // no temp file left behind

    const raw = readFileSync(res.path);
    expect(raw.toString()).toMatch(/\r\n\r\n/); // CRLF line ends, as on the wire
    const eml = await simpleParser(raw);
    expect(eml.to && !Array.isArray(eml.to) ? eml.to.value[0]?.address : undefined).toBe('alice@example.com');
    expect(eml.from?.value[0]?.address).toBe('support@keel.local');
    expect(eml.subject).toBe('Re: Refund for order 7');
    expect(eml.inReplyTo).toBe('<c2@example.com>');
    expect(eml.references).toEqual(['<c1@example.com>', '<k1@keel.local>', '<c2@example.com>']);
    expect(eml.messageId).toBe(res.messageId);
    expect(eml.headers.get('x-keel-loop')).toBe('keel.local');
    // approved by default: not auto-submitted
    expect(eml.headers.has('auto-submitted')).toBe(false);
    expect(eml.text?.trim()).toBe('Your refund was issued today.');

    // the customer's next reply to our mail lands in the same thread
    const next = await parseInboundEmail(raw);
    expect(threadRootOf(next.message!)).toBe(parent.conversationId);
    // and our own mail coming straight back is recognised as a loop
    expect(next.quarantine?.reason).toBe('mail_loop');
  });

  it('marks mail sent without approval Auto-Submitted: auto-replied', async () => {
    const dir = outbox();
    const res = await sender({ outboxDir: dir }).send({ to: 'bob@example.com', subject: 'Re: hi', text: 'ack', inReplyTo: '<p@example.com>', autoSubmitted: true });
    const eml = await simpleParser(readFileSync(res.path));
    expect(eml.headers.get('auto-submitted')).toBe('auto-replied');
  });

  it('writes one file per idempotency key however often the send is retried', async () => {
    const dir = outbox();
    const mail = sender({ outboxDir: dir });
    const m = { to: 'bob@example.com', subject: 'Invoice', text: 'attached', idempotencyKey: 'reply-0b8e1c' };
    const [a, b] = await Promise.all([mail.send(m), mail.send(m)]);
    const c = await mail.send(m);
    // a fresh sender (a restarted process) sees the file too
    const d = await sender({ outboxDir: dir }).send(m);
    expect(a.path).toBe(join(dir, 'key-reply-0b8e1c.eml'));
    for (const r of [b, c, d]) {
      expect(r.path).toBe(a.path);
      expect(r.messageId).toBe(a.messageId);
      expect(r.duplicate).toBe(true);
    }
    expect(a.duplicate).toBe(false);
    expect(readdirSync(dir).filter((f) => f.endsWith('.eml'))).toEqual(['key-reply-0b8e1c.eml']);
    // keys that are not file-name safe are hashed
    const odd = await mail.send({ ...m, idempotencyKey: '../../etc/passwd' });
    expect(odd.path).toMatch(/key-[0-9a-f]{64}\.eml$/);
  });

  it('refuses header injection and missing recipients with a typed error', async () => {
    const mail = sender({ outboxDir: outbox() });
    await expect(mail.send({ to: [], subject: 's', text: 't' })).rejects.toMatchObject({ code: 'CHANNEL_INVALID_MESSAGE' });
    const err = await mail.send({ to: 'a@example.com', subject: 's', text: 't', headers: { 'X-Evil': 'a\r\nBcc: victim@example.com' } }).catch((e: unknown) => e);
    expect(isChannelError(err, 'CHANNEL_INVALID_MESSAGE')).toBe(true);
    // a subject with line breaks is folded into one line, never a new header
    const ok = await mail.send({ to: 'a@example.com', subject: 'hello\r\nBcc: victim@example.com', text: 't' });
    const eml = await simpleParser(readFileSync(ok.path));
    expect(eml.bcc).toBeUndefined();
  });

  it('sends through an SMTP relay (a second smtp-server) and records what the relay took', async () => {
    const received: { from: string; to: string[]; raw: Buffer }[] = [];
    const relay = new SMTPServer({
      authOptional: true,
      disabledCommands: ['AUTH', 'STARTTLS'],
      logger: false,
      onData(stream, session, cb) {
        const chunks: Buffer[] = [];
        const from = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
        const to = session.envelope.rcptTo.map((r) => r.address);
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => {
          received.push({ from, to, raw: Buffer.concat(chunks) });
          cb(null, 'OK: relayed');
        });
      },
    });
    await new Promise<void>((r) => relay.listen(0, '127.0.0.1', () => r()));
    cleanups.push(() => new Promise<void>((r) => relay.close(() => r())));
    const port = (relay.server.address() as AddressInfo).port;

    const dir = outbox();
    const mail = sender({ outboxDir: dir, relay: `smtp://127.0.0.1:${port}` });
    const res = await mail.send({ to: 'Carol <carol@example.com>', cc: 'dan@example.com', subject: 'Re: Shipping', text: 'Shipped today.', inReplyTo: '<x1@example.com>', references: ['<x0@example.com>', '<x1@example.com>'], idempotencyKey: 'k-relay-1' });

    expect(res.relayed).toBe(true);
    expect(res.response).toMatch(/^250/);
    expect(received).toHaveLength(1);
    expect(received[0]!.from).toBe('support@keel.local');
    expect(received[0]!.to).toEqual(['carol@example.com', 'dan@example.com']);
    const eml = await simpleParser(received[0]!.raw);
    expect(eml.messageId).toBe(res.messageId);
    expect(eml.inReplyTo).toBe('<x1@example.com>');
    expect(eml.references).toEqual(['<x0@example.com>', '<x1@example.com>']);
    const lf = (b: Buffer) => b.toString().replace(/\r\n/g, "\n");
    expect(lf(readFileSync(res.path))).toBe(lf(received[0]!.raw));

    // retried with the same key: not relayed again
    const again = await mail.send({ to: 'carol@example.com', subject: 'Re: Shipping', text: 'Shipped today.', idempotencyKey: 'k-relay-1' });
    expect(again.duplicate).toBe(true);
    expect(received).toHaveLength(1);
  });

  it('reports a relay that is down as a retryable MailSendError and writes nothing', async () => {
    const dir = outbox();
    const port = await freePort(); // nothing listens there
    const mail = sender({ outboxDir: dir, relay: `smtp://user:secret@127.0.0.1:${port}`, relayTimeoutMs: 2_000 });
    const err = await mail.send({ to: 'a@example.com', subject: 's', text: 't' }).catch((e: unknown) => e);
    expect(isChannelError(err, 'CHANNEL_SEND_FAILED')).toBe(true);
    expect((err as { retryable: boolean }).retryable).toBe(true);
    expect((err as Error).message).not.toContain('secret');
    expect(readdirSync(dir).filter((f) => f.endsWith('.eml'))).toEqual([]);
  });

  it('rejects a bad relay URL at creation', () => {
    expect(() => createMailSender({ outboxDir: '/tmp', from: 'a@b.c', relay: 'http://x' })).toThrow(expect.objectContaining({ code: 'CHANNEL_CONFIG_INVALID' }));
    expect(() => createMailSender({ outboxDir: '/tmp', from: 'nobody', relay: undefined })).toThrow(expect.objectContaining({ code: 'CHANNEL_CONFIG_INVALID' }));
  });
});
