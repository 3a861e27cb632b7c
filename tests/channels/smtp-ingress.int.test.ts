import { afterEach, describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { connect } from 'node:net';
import { ChannelHandlerError, InboundMessageSchema, recipientMatcher, threadRootOf } from '../../channels/index.ts';
import { emlFile, startTestIngress, swaks, type IngressFixture } from './smtp-helpers.ts';

let fx: IngressFixture | undefined;
afterEach(async () => {
  await fx?.stop();
  fx = undefined;
});

const base = ['--to', 'support@keel.local', '--from', 'alice@example.com'];

describe('SMTP ingress (swaks against a real listener)', () => {
  it('accepts a plain mail with 250 and parses customer, subject, text and Message-ID', async () => {
    fx = await startTestIngress();
    const r = await swaks(fx.smtp.port, [
      ...base,
      '--header', 'Subject: Refund',
      '--header', 'From: Alice Example <alice@example.com>',
      '--header', 'Message-Id: <first-1@example.com>',
      '--body', 'hello, I want a refund',
    ]);
    expect(r.lastReply, r.output).toBe(250);
    expect(r.code).toBe(0);
    expect(fx.messages).toHaveLength(1);
    const m = fx.messages[0]!;
    expect(InboundMessageSchema.parse(m)).toEqual(m);
    expect(m.channel).toBe('email');
    expect(m.customer).toEqual({ email: 'alice@example.com', name: 'Alice Example' });
    expect(m.subject).toBe('Refund');
    expect(m.text.trim()).toBe('hello, I want a refund');
    expect(m.messageId).toBe('<first-1@example.com>');
    expect(m.conversationId).toBe('<first-1@example.com>');
    expect(m.idempotencyKey).toBe('<first-1@example.com>');
    expect(m.envelope).toMatchObject({ mailFrom: 'alice@example.com', rcptTo: ['support@keel.local'], remoteAddress: '127.0.0.1' });
    expect(m.flags).toMatchObject({ autoReply: false, htmlOnly: false, encodingRepaired: false });
    expect(fx.smtp.stats()).toEqual({ accepted: 1, quarantined: 0, rejected: 0, deferred: 0, storageFull: 0 });
    // 250 carries our id: the client can correlate
    expect(r.output).toContain(m.id);
  });

  it('gives a reply (In-Reply-To / References) the same thread root as the original', async () => {
    fx = await startTestIngress();
    await swaks(fx.smtp.port, [...base, '--header', 'Subject: Refund', '--header', 'Message-Id: <root-7@example.com>', '--body', 'first']);
    // the operator answered with <op-1@keel.local>; the customer's reply to that:
    const r = await swaks(fx.smtp.port, [
      ...base,
      '--header', 'Subject: Re: Refund',
      '--header', 'Message-Id: <reply-8@example.com>',
      '--header', 'In-Reply-To: <op-1@keel.local>',
      '--header', 'References: <root-7@example.com> <op-1@keel.local>',
      '--body', 'thanks',
    ]);
    expect(r.lastReply, r.output).toBe(250);
    const [first, reply] = fx.messages;
    expect(reply!.references).toEqual(['<root-7@example.com>', '<op-1@keel.local>']);
    expect(reply!.inReplyTo).toBe('<op-1@keel.local>');
    expect(threadRootOf(reply!)).toBe(threadRootOf(first!));
    expect(reply!.conversationId).toBe(first!.conversationId);
    expect(reply!.conversationId).toBe('<root-7@example.com>');
  });

  it('lets resolveConversation map a reply whose client dropped References', async () => {
    const known = new Map([['<op-1@keel.local>', 'conv-42']]);
    fx = await startTestIngress({ resolveConversation: async (m) => (m.inReplyTo ? known.get(m.inReplyTo) : undefined) });
    await swaks(fx.smtp.port, [...base, '--header', 'In-Reply-To: <op-1@keel.local>', '--body', 'thanks']);
    expect(fx.messages[0]!.conversationId).toBe('conv-42');
  });

  it('derives text from an HTML-only mail', async () => {
    fx = await startTestIngress();
    const file = emlFile(fx.dir, 'html.eml', [
      'From: bob@example.com',
      'To: support@keel.local',
      'Subject: Order',
      'Message-ID: <html-1@example.com>',
      'MIME-Version: 1.0',
      'Content-Type: text/html; charset=utf-8',
      '',
      '<html><body><p>My order <b>#123</b> never arrived.</p><script>alert(1)</script></body></html>',
      '',
    ].join('\n'));
    const r = await swaks(fx.smtp.port, [...base, '--data', `@${file}`]);
    expect(r.lastReply, r.output).toBe(250);
    const m = fx.messages[0]!;
    expect(m.flags.htmlOnly).toBe(true);
    expect(m.text).toContain('My order #123 never arrived.');
    expect(m.text).not.toContain('<b>');
    expect(m.html).toContain('<b>#123</b>');
  });

  it('decodes ISO-8859-1 and windows-1252 bodies and flags undeclared invalid 8-bit', async () => {
    fx = await startTestIngress();
    const mk = (charset: string | undefined, body: number[], id: string) =>
      Buffer.concat([
        Buffer.from(
          [
            'From: carla@example.com',
            'To: support@keel.local',
            'Subject: Cafe',
            `Message-ID: <${id}@example.com>`,
            'MIME-Version: 1.0',
            ...(charset ? [`Content-Type: text/plain; charset=${charset}`, 'Content-Transfer-Encoding: 8bit'] : []),
            '',
            '',
          ].join('\r\n'),
          'ascii',
        ),
        Buffer.from(body),
        Buffer.from('\r\n'),
      ]);
    // "café à 5€" in latin1 / cp1252 (0x80 is € in windows-1252)
    const bytes = [0x63, 0x61, 0x66, 0xe9, 0x20, 0xe0, 0x20, 0x35, 0x80];
    for (const [charset, id] of [['ISO-8859-1', 'l1'], ['windows-1252', 'cp'], [undefined, 'raw']] as const) {
      const r = await swaks(fx.smtp.port, [...base, '--data', `@${emlFile(fx.dir, `${id}.eml`, mk(charset, bytes, id))}`]);
      expect(r.lastReply, r.output).toBe(250);
    }
    const byId = (id: string) => fx!.messages.find((m) => m.messageId === `<${id}@example.com>`)!;
    expect(byId('cp').text.trim()).toBe('café à 5€');
    expect(byId('cp').flags.encodingRepaired).toBe(false);
    expect(byId('l1').text.trim()).toMatch(/^café à 5/);
    expect(byId('l1').flags.encodingRepaired).toBe(false);
    // no charset declared and not UTF-8: invalid sequences replaced, the message flagged, nothing crashed
    expect(byId('raw').text).toContain('\uFFFD');
    expect(byId('raw').flags.encodingRepaired).toBe(true);
  });

  it('survives malformed MIME: answers 250 and quarantines, or hands over what it could parse', async () => {
    fx = await startTestIngress();
    const broken = emlFile(fx.dir, 'broken.eml', [
      'From: dave@example.com',
      'Subject: =?utf-8?B?not base64!!?=',
      'Content-Type: multipart/mixed; boundary=',
      'Content-Transfer-Encoding: base64',
      '',
      '--',
      'Content-Type: application/octet-stream; name="../../etc/passwd"',
      'Content-Transfer-Encoding: base64',
      '',
      '!!!!====not base64====!!!!',
      '--',
      '',
    ].join('\n'));
    const garbage = emlFile(fx.dir, 'garbage.eml', Buffer.from([0x00, 0xff, 0xfe, 0x0d, 0x0a, 0x3a, 0x3a, 0x3a, 0x0d, 0x0a, 0x0d, 0x0a, 0xc3, 0x28, 0x0d, 0x0a]));
    const r1 = await swaks(fx.smtp.port, [...base, '--data', `@${broken}`]);
    const r2 = await swaks(fx.smtp.port, [...base, '--data', `@${garbage}`]);
    expect(r1.lastReply, r1.output).toBe(250);
    expect(r2.lastReply, r2.output).toBe(250);
    // the garbage has no From: quarantined with the raw bytes kept
    const q = fx.quarantined.find((x) => x.raw.includes(Buffer.from([0xc3, 0x28])));
    expect(q?.reason).toBe('missing_from');
    // the listener is still alive
    const r3 = await swaks(fx.smtp.port, [...base, '--body', 'still there?']);
    expect(r3.lastReply).toBe(250);
    expect(fx.smtp.stats().accepted + fx.smtp.stats().quarantined).toBe(3);
  });

  it('rejects a message over maxMessageBytes with 552 and hands nothing over', async () => {
    fx = await startTestIngress({ maxMessageBytes: 20_000 });
    const big = emlFile(fx.dir, 'big.eml', `From: eve@example.com\nSubject: big\n\n${'x'.repeat(76)}\n`.repeat(1) + `${'y'.repeat(76)}\n`.repeat(2000));
    const r = await swaks(fx.smtp.port, [...base, '--data', `@${big}`]);
    expect(r.lastReply, r.output).toBe(552);
    expect(r.output).toMatch(/SIZE 20000/); // announced in the EHLO answer
    expect(fx.messages).toHaveLength(0);
    expect(fx.quarantined).toHaveLength(0);
    expect(fx.smtp.stats().rejected).toBe(1);
  });

  it('quarantines auto-replies, bulk mail, loops, bounces, missing From and empty bodies with a reason (answer 250)', async () => {
    fx = await startTestIngress({ parse: { maxReceivedHeaders: 5 } });
    const cases: { args: string[]; reason: string }[] = [
      { args: ['--header', 'Auto-Submitted: auto-replied', '--header', 'Subject: Out of office', '--body', 'I am away'], reason: 'auto_reply' },
      { args: ['--header', 'X-Autoreply: yes', '--body', 'away'], reason: 'auto_reply' },
      { args: ['--header', 'Precedence: bulk', '--body', 'newsletter'], reason: 'bulk_mail' },
      { args: ['--header', 'List-Id: Deals <deals.example.com>', '--body', 'deal'], reason: 'bulk_mail' },
      { args: ['--header', 'X-Keel-Loop: keel.local', '--body', 'our own mail'], reason: 'mail_loop' },
      { args: ['--add-header', Array.from({ length: 6 }, (_, i) => `Received: from hop${i} by hop${i + 1}`).join('\\n'), '--body', 'loop'], reason: 'mail_loop' },
      { args: ['--data', `@${emlFile(fx.dir, 'empty.eml', 'From: alice@example.com\nSubject: (no subject)\n\n\n')}`], reason: 'empty_body' },
    ];
    for (const c of cases) {
      const r = await swaks(fx.smtp.port, [...base, ...c.args]);
      expect(r.lastReply, r.output).toBe(250);
    }
    // null envelope sender: a bounce
    const bounce = await swaks(fx.smtp.port, ['--to', 'support@keel.local', '--from', '<>', '--body', 'Delivery failed']);
    expect(bounce.lastReply, bounce.output).toBe(250);
    // no From header at all
    const noFrom = emlFile(fx.dir, 'nofrom.eml', 'Subject: who am I\nTo: support@keel.local\n\nbody\n');
    expect((await swaks(fx.smtp.port, [...base, '--data', `@${noFrom}`])).lastReply).toBe(250);
    // two From headers: forged or broken
    const twoFrom = emlFile(fx.dir, 'twofrom.eml', 'From: ceo@example.com\nFrom: attacker@evil.test\nSubject: pay\n\nwire money\n');
    expect((await swaks(fx.smtp.port, [...base, '--data', `@${twoFrom}`])).lastReply).toBe(250);

    expect(fx.messages).toHaveLength(0);
    expect(fx.quarantined.map((q) => q.reason)).toEqual([...cases.map((c) => c.reason), 'bounce', 'missing_from', 'missing_from']);
    expect(fx.quarantined[0]!.detail).toContain('auto-replied');
    expect(fx.quarantined[0]!.message?.flags.autoReply).toBe(true);
    expect(fx.quarantined[0]!.raw.toString()).toContain('I am away');
    expect(fx.smtp.stats().quarantined).toBe(cases.length + 3);
  });

  it('answers 451 when onMessage fails retryably, so the client retries; 554 when it says not retryable', async () => {
    let fail: Error | undefined = new ChannelHandlerError('bus down', { retryable: true });
    fx = await startTestIngress({
      onMessage: async () => {
        if (fail) throw fail;
      },
    });
    const r1 = await swaks(fx.smtp.port, [...base, '--body', 'try 1']);
    expect(r1.lastReply, r1.output).toBe(451);
    expect(r1.code).not.toBe(0);
    fail = new Error('unexpected'); // unknown errors count as retryable: never lose a message
    expect((await swaks(fx.smtp.port, [...base, '--body', 'try 2'])).lastReply).toBe(451);
    fail = Object.assign(new Error('schema says no'), { retryable: false });
    const r3 = await swaks(fx.smtp.port, [...base, '--body', 'try 3']);
    expect(r3.lastReply, r3.output).toBe(554);
    fail = undefined;
    expect((await swaks(fx.smtp.port, [...base, '--body', 'try 4'])).lastReply).toBe(250);
    expect(fx.smtp.stats()).toEqual({ accepted: 1, quarantined: 0, rejected: 1, deferred: 2, storageFull: 0 });
  });

  it('stores attachments by sha256 under the attachments dir and drops those over the limit', async () => {
    fx = await startTestIngress({ parse: { attachments: { maxBytes: 1000 } } });
    // maxBytes given without dir: nothing stored
    const small = Buffer.from('small attachment content');
    const r = await swaks(fx.smtp.port, [...base, '--body', 'see attached', '--attach-type', 'text/plain', '--attach-name', '../x.txt', '--attach', `@${emlFile(fx.dir, 'a.txt', small)}`]);
    expect(r.lastReply, r.output).toBe(250);
    const a = fx.messages[0]!.attachments[0]!;
    expect(a).toMatchObject({ filename: 'x.txt', contentType: 'text/plain', size: small.length, stored: false });
    expect(a.sha256).toBe(createHash('sha256').update(small).digest('hex'));
    expect(fx.messages[0]!.flags.attachmentsDropped).toBe(true);
  });

  it('writes attachment contents under the attachments dir', async () => {
    fx = await startTestIngress();
    const content = Buffer.from('%PDF-1.4 fake pdf');
    const r = await swaks(fx.smtp.port, [...base, '--body', 'invoice', '--attach-type', 'application/pdf', '--attach-name', 'invoice.pdf', '--attach', `@${emlFile(fx.dir, 'inv.pdf', content)}`]);
    expect(r.lastReply, r.output).toBe(250);
    const a = fx.messages[0]!.attachments[0]!;
    expect(a.stored).toBe(true);
    expect(a.path && existsSync(a.path)).toBe(true);
    expect(readFileSync(a.path!)).toEqual(content);
    expect(fx.messages[0]!.flags.attachmentsDropped).toBe(false);
  });
});

/** A bare SMTP conversation over a socket, for what swaks will not do (lie about SIZE, hang up mid-DATA). */
async function rawSmtp(port: number): Promise<{ say(line: string): Promise<string>; write(s: string): void; destroy(): void }> {
  const sock = connect(port, '127.0.0.1');
  let buf = '';
  let waiter: (() => void) | undefined;
  sock.on('data', (d: Buffer) => {
    buf += d.toString();
    waiter?.();
  });
  sock.on('error', () => undefined);
  const reply = () =>
    new Promise<string>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no reply, got: ${buf}`)), 5_000);
      const check = () => {
        // a complete reply: its last line is "NNN text"
        const m = /(?:^|\r\n)(\d{3}) [^\r\n]*\r\n$/.exec(buf);
        if (!m) return;
        clearTimeout(t);
        const out = buf;
        buf = '';
        waiter = undefined;
        resolve(out);
      };
      waiter = check;
      check();
    });
  await reply(); // greeting
  return {
    say: (line) => {
      sock.write(`${line}\r\n`);
      return reply();
    },
    write: (s) => sock.write(s),
    destroy: () => sock.destroy(),
  };
}

describe('SMTP ingress (raw protocol edges)', () => {
  it('refuses a declared SIZE over the limit at MAIL FROM with 552', async () => {
    fx = await startTestIngress({ maxMessageBytes: 10_000 });
    const c = await rawSmtp(fx.smtp.port);
    expect(await c.say('EHLO client.example')).toMatch(/250[- ]SIZE 10000/);
    expect(await c.say('MAIL FROM:<a@example.com> SIZE=50000')).toMatch(/^552 /);
    expect(await c.say('QUIT')).toMatch(/^221/);
    c.destroy();
  });

  it('hands nothing over when the client hangs up mid-DATA, and keeps serving', async () => {
    fx = await startTestIngress();
    const c = await rawSmtp(fx.smtp.port);
    await c.say('EHLO client.example');
    await c.say('MAIL FROM:<a@example.com>');
    await c.say('RCPT TO:<support@keel.local>');
    expect(await c.say('DATA')).toMatch(/^354/);
    c.write('From: a@example.com\r\nSubject: cut\r\n\r\nhalf a mess');
    c.destroy();
    await new Promise((r) => setTimeout(r, 200));
    const r = await swaks(fx.smtp.port, [...base, '--body', 'after the hang-up']);
    expect(r.lastReply).toBe(250);
    expect(fx.messages.map((m) => m.text.trim())).toEqual(['after the hang-up']);
    expect(fx.quarantined).toHaveLength(0);
  });

  it('answers 550 5.1.1 to a recipient outside the accepted domains and addresses, and takes the mail for the others', async () => {
    fx = await startTestIngress({ acceptRecipient: recipientMatcher(['keel.local', 'sales@acme.example']) });
    const c = await rawSmtp(fx.smtp.port);
    await c.say('EHLO client.example');
    expect(await c.say('MAIL FROM:<alice@example.com>')).toMatch(/^250/);
    expect(await c.say('RCPT TO:<someone@elsewhere.example>')).toMatch(/^550 5\.1\.1 <someone@elsewhere\.example>: recipient not accepted here/);
    expect(await c.say('RCPT TO:<info@acme.example>')).toMatch(/^550 5\.1\.1 /);
    expect(await c.say('RCPT TO:<Support@KEEL.local>')).toMatch(/^250/);
    expect(await c.say('RCPT TO:<sales@acme.example>')).toMatch(/^250/);
    expect(await c.say('DATA')).toMatch(/^354/);
    expect(await c.say('From: alice@example.com\r\nSubject: hi\r\n\r\nhello\r\n.')).toMatch(/^250/);
    c.destroy();
    expect(fx.messages).toHaveLength(1);
    expect(fx.messages[0]!.envelope?.rcptTo).toEqual(['Support@KEEL.local', 'sales@acme.example']);
    // swaks, a real client, sees the refusal too
    const r = await swaks(fx.smtp.port, ['--to', 'ceo@other.example', '--from', 'alice@example.com', '--body', 'x']);
    expect(r.output).toMatch(/<\*\* 550 5\.1\.1 <ceo@other\.example>/);
    expect(fx.messages).toHaveLength(1);
  });

  it('does not offer AUTH or STARTTLS on the embedded default', async () => {
    fx = await startTestIngress();
    const c = await rawSmtp(fx.smtp.port);
    const ehlo = await c.say('EHLO client.example');
    expect(ehlo).not.toMatch(/AUTH|STARTTLS/);
    expect(await c.say('STARTTLS')).toMatch(/^5\d\d /);
    c.destroy();
  });
});
