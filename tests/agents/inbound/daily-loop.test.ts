/**
 * The operator's daily loop, capability by capability (capability test kit, SQLite, no servers):
 * attachments are recorded on the ticket's message; customers are found by id, email or chat
 * handle; a German mail goes through intake → triage → suggested reply in German.
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCapabilityTestKit, type CapabilityTestKit } from '../../../runtime/index.ts';
import type { InboundMessage } from '../../../channels/index.ts';
import { INBOUND_ENTITY_TYPES, TICKET, customerIdFor, resolveCustomer, type TicketState } from '../../../agents/inbound/index.ts';
import { intake } from '../../../agents/inbound/intake.ts';
import { triage } from '../../../agents/inbound/triage.ts';
import { suggestReply } from '../../../agents/inbound/reply-suggester.ts';

const root = mkdtempSync(join(tmpdir(), 'keel-daily-loop-'));
const kits: CapabilityTestKit[] = [];
afterEach(async () => {
  for (const k of kits.splice(0)) await k.close();
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

async function kit(): Promise<CapabilityTestKit> {
  const dataDir = join(root, randomUUID());
  mkdirSync(dataDir);
  const k = await createCapabilityTestKit({ entities: INBOUND_ENTITY_TYPES, agent: 'intake', config: { dataDir } });
  kits.push(k);
  return k;
}

const flags = { autoReply: false, bulk: false, htmlOnly: false, encodingRepaired: false, attachmentsDropped: false, truncated: false, fromMismatch: false };

function message(o: { channel?: 'email' | 'chat'; email?: string; handle?: string; name?: string; subject?: string; text: string; attachments?: InboundMessage['attachments'] }): InboundMessage {
  const mid = `<${randomUUID()}@example.com>`;
  return {
    id: randomUUID(),
    channel: o.channel ?? 'email',
    receivedAt: new Date().toISOString(),
    customer: { ...(o.email ? { email: o.email } : {}), ...(o.handle ? { handle: o.handle } : {}), ...(o.name ? { name: o.name } : {}) },
    conversationId: o.channel === 'chat' ? randomUUID() : mid,
    ...(o.channel === 'chat' ? {} : { messageId: mid, idempotencyKey: mid }),
    ...(o.subject ? { subject: o.subject } : {}),
    text: o.text,
    references: [],
    headers: {},
    attachments: o.attachments ?? [],
    flags,
    ...(o.channel === 'chat' ? {} : { envelope: { mailFrom: o.email ?? '', rcptTo: ['support@keel.local'] } }),
  };
}

describe('the operator\'s daily loop at the capability level', () => {
  it('intake records each attachment (name, type, size, where it is stored) on the ticket message', async () => {
    const k = await kit();
    const sha = 'a'.repeat(64);
    const big = 'b'.repeat(64);
    const msg = message({
      email: 'alice@example.com',
      subject: 'Invoice question',
      text: 'Please see the attached invoice.',
      attachments: [
        { filename: 'invoice-1234.pdf', contentType: 'application/pdf', size: 48213, sha256: sha, stored: true, path: `/data/attachments/${sha}` },
        { filename: 'video.mov', contentType: 'video/quicktime', size: 50_000_000, sha256: big, stored: false },
      ],
    });
    const r = await k.run(intake, { message: msg });
    const t = (await k.store.get<TicketState>(TICKET, r.output.ticketId))!;
    expect(t.state.messages[0]!.attachments).toEqual([
      { filename: 'invoice-1234.pdf', contentType: 'application/pdf', size: 48213, sha256: sha, stored: true, path: `/data/attachments/${sha}` },
      { filename: 'video.mov', contentType: 'video/quicktime', size: 50_000_000, sha256: big, stored: false },
    ]);
    // a message without files records none
    const r2 = await k.run(intake, { message: message({ email: 'bob@example.com', text: 'hello' }) });
    expect((await k.store.get<TicketState>(TICKET, r2.output.ticketId))!.state.messages[0]).not.toHaveProperty('attachments');
  });

  it('resolveCustomer finds a customer by id, email (any case) or chat handle, and says when none matches', async () => {
    const k = await kit();
    const alice = await k.run(intake, { message: message({ email: 'Alice@Example.com', name: 'Alice', text: 'hi' }) });
    const bob = await k.run(intake, { message: message({ channel: 'chat', handle: 'Bob42', name: 'Bob', text: 'hi' }) });
    expect(await resolveCustomer(k.store, alice.output.customerId)).toMatchObject({ id: alice.output.customerId, by: 'id', found: true, name: 'Alice' });
    expect(await resolveCustomer(k.store, 'alice@example.com')).toMatchObject({ id: alice.output.customerId, by: 'email', found: true });
    expect(await resolveCustomer(k.store, ' ALICE@example.COM ')).toMatchObject({ id: alice.output.customerId, found: true });
    expect(await resolveCustomer(k.store, 'bob42')).toMatchObject({ id: bob.output.customerId, by: 'handle', found: true, name: 'Bob' });
    expect(await resolveCustomer(k.store, '@Bob42')).toMatchObject({ id: bob.output.customerId, found: true });

    // a chat customer who later gave an email: found by that email although the id came from the handle
    await k.store.append('customer', bob.output.customerId, (await k.store.get('customer', bob.output.customerId))!.version, [{ type: 'updated', data: { email: 'bob@example.org' } }], { actor: { kind: 'human', id: 'op' } });
    expect(await resolveCustomer(k.store, 'bob@example.org')).toMatchObject({ id: bob.output.customerId, by: 'email', found: true });

    // nobody: an address maps to the id intake would give it; anything else is taken as an id (the cost ledger's own ids)
    expect(await resolveCustomer(k.store, 'carol@example.com')).toEqual({ id: customerIdFor({ email: 'carol@example.com' }), by: 'email', found: false, email: 'carol@example.com' });
    expect(await resolveCustomer(k.store, 'acme')).toEqual({ id: 'acme', by: 'id', found: false });
  });

  it('a German mail: intake → triage (language de, refund) → a suggested reply in German', async () => {
    const k = await kit();
    const msg = message({
      email: 'anna.schmidt@example.de',
      name: 'Anna Schmidt',
      subject: 'Rückerstattung für Bestellung 48213',
      text: 'Sehr geehrte Damen und Herren,\n\ndie Jacke aus meiner Bestellung 48213 passt leider nicht. Ich habe sie gestern zurückgeschickt und bitte um Rückerstattung des Kaufpreises.\n\nMit freundlichen Grüßen\nAnna Schmidt',
    });
    const a = await k.run(intake, { message: msg });
    const t = await k.run(triage, { ticketId: a.output.ticketId });
    expect(t.output).toMatchObject({ intent: 'refund', language: 'de', tier: 0 });
    const s = await k.run(suggestReply, { ticketId: a.output.ticketId });
    expect(s.output.text).toMatch(/^Hallo Anna,\n\nvielen Dank für Ihre Nachricht zur Rückerstattung \(Bestellung 48213\)/);
    const ticket = (await k.store.get<TicketState>(TICKET, a.output.ticketId))!;
    expect(ticket.state.triage).toMatchObject({ language: 'de', intent: 'refund' });
    expect(ticket.state.suggestion?.text).toMatch(/Mit freundlichen Grüßen/);
  });
});
