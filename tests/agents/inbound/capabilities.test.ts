/**
 * The inbound agents' capabilities, one at a time, through the capability test kit: a real
 * SQLite store in a temp dir, real effects, the real model path with a scripted model. No
 * nats-server (the end-to-end version is inbound.int.test.ts).
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCapabilityTestKit, type CapabilityTestKit, type CapabilityTestKitOptions } from '../../../runtime/index.ts';
import { createModelRegistry, type ScriptedChatModel } from '../../../models/index.ts';
import type { BaseMessage } from '@langchain/core/messages';
import { inboundEmail } from '../../helpers/inbound-email.ts';
import { INBOUND_ENTITY_TYPES, TICKET, type CustomerState, type TicketState } from '../../../agents/inbound/index.ts';
import { intake } from '../../../agents/inbound/intake.ts';
import { triage } from '../../../agents/inbound/triage.ts';
import { summarize } from '../../../agents/inbound/summarizer.ts';
import { suggestReply } from '../../../agents/inbound/reply-suggester.ts';
import { send } from '../../../agents/inbound/sender.ts';
import { escalate } from '../../../agents/inbound/escalation.ts';
import { closeMailSenders } from '../../../agents/inbound/mail.ts';

const root = mkdtempSync(join(tmpdir(), 'keel-inbound-caps-'));
const kits: CapabilityTestKit[] = [];
afterEach(async () => {
  for (const k of kits.splice(0)) await k.close();
});
afterAll(async () => {
  await closeMailSenders();
  rmSync(root, { recursive: true, force: true });
});

/** A kit on the inbound entity types whose dataDir (outbox) is a fresh temp dir. */
async function kit(o: Partial<CapabilityTestKitOptions> = {}): Promise<CapabilityTestKit & { outbox: string; emls(): string[] }> {
  const dataDir = join(root, randomUUID());
  mkdirSync(dataDir);
  const k = await createCapabilityTestKit({ entities: INBOUND_ENTITY_TYPES, agent: 'intake', ...o, config: { dataDir, ...o.config } });
  kits.push(k);
  const outbox = join(dataDir, 'outbox');
  return Object.assign(k, { outbox, emls: () => (existsSync(outbox) ? readdirSync(outbox).filter((f) => f.endsWith('.eml')).sort() : []) });
}

const email = inboundEmail;

const refund = () =>
  email({
    name: 'Ada Lovelace',
    subject: 'Refund for order 48213',
    messageId: '<m1@example.com>',
    text: "Hi,\n\nI bought the annual plan last week but it doesn't fit our needs. Could I get a refund please? Order #48213.\n\nThanks,\nAda",
  });

/** The header block of an .eml, unfolded, as name → value (lower-case names). */
function headersOf(path: string): Record<string, string> {
  const head = readFileSync(path, 'utf8').split(/\r?\n\r?\n/, 1)[0]!.replace(/\r?\n[ \t]+/g, ' ');
  const out: Record<string, string> = {};
  for (const line of head.split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i > 0) out[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
  }
  return out;
}

const kinds = (events: { entityType: string; type: string }[]) => events.map((e) => `${e.entityType}:${e.type}`);

describe('inbound capabilities through the capability test kit (no servers)', () => {
  it('intake: an email creates the customer and the ticket; a reply in the thread lands on the same ticket; a redelivered message is not added twice', async () => {
    const k = await kit();
    const first = refund();
    const a = await k.run(intake, { message: first }, { envelope: { correlationId: 'run-1' } });
    expect(a.output).toMatchObject({ isNew: true, channel: 'email', messageId: first.id, subject: 'Refund for order 48213' });
    expect(a.output.ticketId).toMatch(/^tkt-[0-9a-f]{16}$/);
    expect(a.output.customerId).toMatch(/^cus-[0-9a-f]{16}$/);
    expect(kinds(a.events)).toEqual(['customer:created', 'ticket:created', 'ticket:message_added', 'ticket:updated']);
    for (const e of a.events) expect(e.meta).toMatchObject({ actor: { kind: 'agent', id: 'intake' }, causationId: a.envelope.id, correlationId: 'run-1' });
    expect(a.events[3]!.data).toEqual({ lastRunId: 'run-1' }); // provenance: the run that wrote it
    const customer = await k.store.get<CustomerState>('customer', a.output.customerId);
    expect(customer?.state).toMatchObject({ name: 'Ada Lovelace', email: 'ada@example.com', status: 'lead', tags: ['email'] });

    const followUp = email({
      name: 'Ada Lovelace',
      subject: 'Re: Refund for order 48213',
      messageId: '<m2@example.com>',
      inReplyTo: '<m1@example.com>',
      references: ['<m1@example.com>'],
      text: 'Any news on my refund?',
    });
    const b = await k.run(intake, { message: followUp }, { envelope: { correlationId: 'run-2' } });
    expect(b.output).toMatchObject({ ticketId: a.output.ticketId, customerId: a.output.customerId, isNew: false, messageId: followUp.id });
    expect(kinds(b.events)).toEqual(['ticket:message_added', 'ticket:updated']);
    const ticket = (await k.store.get<TicketState>(TICKET, a.output.ticketId))!;
    expect(ticket.state.messages.map((m) => [m.id, m.messageId, m.inReplyTo])).toEqual([
      [first.id, '<m1@example.com>', undefined],
      [followUp.id, '<m2@example.com>', '<m1@example.com>'],
    ]);
    expect(ticket.state).toMatchObject({ subject: 'Refund for order 48213', status: 'open', customerEmail: 'ada@example.com', lastRunId: 'run-2' });

    // the same email delivered again: the ticket is found, nothing is appended
    const dup = await k.run(intake, { message: first }, { envelope: { correlationId: 'run-2' } });
    expect(dup.output).toMatchObject({ ticketId: a.output.ticketId, isNew: false, messageId: first.id });
    expect(dup.events).toEqual([]);
    expect(dup.logs.map((l) => l.msg)).toContain('message already on the ticket: not adding it again');
  });

  it('triage writes `triaged` at tier 0 (no model configured, none called)', async () => {
    const k = await kit();
    const { output: t } = await k.run(intake, { message: refund() });
    const r = await k.run(triage, { ticketId: t.ticketId }, { agent: 'triage' });
    expect(r.output).toMatchObject({ ticketId: t.ticketId, intent: 'refund', urgency: 'normal', escalate: false, tier: 0 });
    expect(r.output.entities).toContain('ORDER:48213');
    expect(kinds(r.events)).toEqual(['ticket:triaged']);
    expect(r.events[0]!.data).toMatchObject({ intent: 'refund', tier: 0, messageId: t.messageId });
    expect(r.events[0]!.meta.actor).toEqual({ kind: 'agent', id: 'triage' });
    expect(r.modelCalls).toEqual([]);
    expect(r.failedModelCalls).toEqual([]);
    expect((await k.store.get<TicketState>(TICKET, t.ticketId))!.state).toMatchObject({ priority: 'normal', status: 'open', triage: { intent: 'refund' } });
  });

  it('summarizer writes `summarized` (extractive, tier 0)', async () => {
    const k = await kit();
    const { output: t } = await k.run(intake, { message: refund() });
    const r = await k.run(summarize, { ticketId: t.ticketId }, { agent: 'summarizer' });
    expect(r.output).toMatchObject({ ticketId: t.ticketId, tier: 0 });
    expect(r.output.summary).toMatch(/refund/i);
    expect(kinds(r.events)).toEqual(['ticket:summarized']);
    expect(r.events[0]!.data).toEqual({ summary: r.output.summary, tier: 0 });
    expect(r.modelCalls).toEqual([]);
  });

  it('reply-suggester at tier 0: the intent template with the customer name, the order and the configured signature', async () => {
    const k = await kit({ config: { supportSignature: 'The Keel Desk' } });
    const { output: t } = await k.run(intake, { message: refund() });
    const r = await k.run(suggestReply, { ticketId: t.ticketId }, { agent: 'reply-suggester' });
    expect(r.output).toMatchObject({ ticketId: t.ticketId, tier: 0 });
    expect(r.output.confidence).toBeGreaterThanOrEqual(0.6);
    expect(r.output.text).toMatch(/^Hi Ada,/);
    expect(r.output.text).toContain('48213');
    expect(r.output.text).toContain('The Keel Desk');
    expect(kinds(r.events)).toEqual(['ticket:reply_suggested']);
    expect(r.events[0]!.data).toEqual({ text: r.output.text, tier: 0, confidence: r.output.confidence });
    expect(r.modelCalls).toEqual([]);
  });

  it('reply-suggester with a scripted small model: an unsure tier 0 climbs to tier 1; the model gets the thread; the call is in the cost ledger', async () => {
    const reply = 'Hi Grace, thanks for writing. Could you tell us which widget you mean? The Keel Desk';
    const models = createModelRegistry(
      { KEEL_MODEL_SMALL: 'scripted:drafty', KEEL_PRICE_SCRIPTED: '1,0.5,2' },
      { scripts: { drafty: [{ content: `  ${reply}\n`, usage: { input_tokens: 1200, output_tokens: 80, cached_tokens: 200 } }] } },
    );
    // what the model itself received, recorded inside it
    const model = models.get('small').chat as ScriptedChatModel;
    const received: { type: string; content: unknown }[][] = [];
    const generate = model._generate.bind(model);
    model._generate = (messages: BaseMessage[], ...rest) => {
      received.push(messages.map((m) => ({ type: m.getType(), content: m.content })));
      return generate(messages, ...rest);
    };

    const k = await kit({ models, config: { supportSignature: 'The Keel Desk' } });
    const vague = email({ from: 'grace@example.com', name: 'Grace Hopper', subject: 'Hello', messageId: '<g1@example.com>', text: 'Hello, quick thing about the widget thing from before, see attached.' });
    const { output: t } = await k.run(intake, { message: vague });
    const r = await k.run(suggestReply, { ticketId: t.ticketId }, { agent: 'reply-suggester', customer: t.customerId, budgetUsd: 0.05, idempotencyKey: 'suggest-1', envelope: { correlationId: 'run-g' } });

    expect(r.output).toMatchObject({ ticketId: t.ticketId, text: reply, tier: 1, confidence: 0.8 });
    // the reply answers every message not answered yet: here the one
    expect(r.output.answers?.map((m) => m.from)).toEqual(['grace@example.com']);
    expect(model.played).toBe(1);
    expect(received).toHaveLength(1);
    const [system, user] = received[0]!;
    expect(received[0]).toHaveLength(2);
    expect(system).toMatchObject({ type: 'system', content: expect.stringContaining('sign as "The Keel Desk"') });
    expect(user!.type).toBe('human');
    expect(user!.content).toContain('Customer: Grace Hopper');
    expect(user!.content).toContain('Hello, quick thing about the widget thing from before, see attached.');
    expect(user!.content).toContain('FROM grace@example.com via email — Hello');
    // the kit recorded the same call as ctx.llm saw it
    expect(r.modelCalls).toHaveLength(1);
    expect(r.modelCalls[0]!.messages.map((m) => (m as { content: string }).content)).toEqual(received[0]!.map((m) => m.content));
    const costUsd = (1000 * 1 + 200 * 0.5 + 80 * 2) / 1e6;
    expect(r.modelCalls[0]).toMatchObject({ tier: 'small', text: `  ${reply}\n`, model: 'drafty', usage: { inputTokens: 1200, outputTokens: 80, cachedTokens: 200 }, replayed: false });
    expect(r.modelCalls[0]!.costUsd).toBeCloseTo(costUsd, 12);

    const ledger = await k.store.costs({ capability: 'ticket.suggest-reply', records: 10 });
    expect(ledger.totals).toMatchObject({ count: 1, tokensIn: 1200, tokensOut: 80, tokensCached: 200 });
    expect(ledger.totals.costUsd).toBeCloseTo(costUsd, 12);
    expect(ledger.records[0]).toMatchObject({ agent: 'reply-suggester', capability: 'ticket.suggest-reply', runId: 'run-g', customerId: t.customerId, model: 'drafty', details: expect.objectContaining({ tier: 1, provider: 'scripted', requestModel: 'drafty' }) });
    expect(kinds(r.events)).toEqual(['ticket:reply_suggested', 'ticket:updated']);
    expect(r.events[0]!.data).toEqual({ text: reply, tier: 1, confidence: 0.8 });
  });

  it('sender writes exactly one threaded .eml into <dataDir>/outbox; the same task again (same idempotency key) writes no second one', async () => {
    const k = await kit();
    const { output: t } = await k.run(intake, { message: refund() });
    const input = { ticketId: t.ticketId, text: 'Hi Ada,\n\nYour refund is on its way.\n\nThe support team', approvalId: 'ap-1', approvedBy: 'operator' };
    const first = await k.run(send, input, { agent: 'sender', idempotencyKey: 'send-run-1' });
    expect(k.emls()).toHaveLength(1);
    expect(first.output).toMatchObject({ ticketId: t.ticketId, channel: 'email', to: 'ada@example.com', path: join(k.outbox, k.emls()[0]!) });
    expect(first.effects).toEqual([{ name: 'send', key: 'effect:message.send:send-run-1:send', result: expect.objectContaining({ messageId: first.output.messageId, duplicate: false }), replayed: false }]);
    const h = headersOf(first.output.path!);
    expect(h).toMatchObject({ to: 'ada@example.com', 'in-reply-to': '<m1@example.com>', references: '<m1@example.com>', subject: 'Re: Refund for order 48213', 'message-id': first.output.messageId });
    expect(h['auto-submitted']).toBeUndefined(); // a person approved it
    expect(kinds(first.events)).toEqual(['ticket:updated', 'ticket:reply_sent']);

    const again = await k.run(send, input, { agent: 'sender', idempotencyKey: 'send-run-1' });
    expect(k.emls()).toHaveLength(1);
    expect(again.effects).toEqual([expect.objectContaining({ name: 'send', replayed: true })]);
    expect(again.output).toEqual(first.output);
    expect(again.events).toEqual([]); // the reply is on the ticket already
    const ticket = (await k.store.get<TicketState>(TICKET, t.ticketId))!;
    expect(ticket.state.messages.filter((m) => m.direction === 'out')).toHaveLength(1);
    expect(ticket.state).toMatchObject({ status: 'pending', approval: { id: 'ap-1', state: 'approved', decidedBy: 'operator' } });

    // another task (another key) is another mail
    await k.run(send, { ...input, text: 'One more thing.' }, { agent: 'sender', idempotencyKey: 'send-run-2' });
    expect(k.emls()).toHaveLength(2);
  });

  it('escalation mails the operator the whole history once and marks the ticket escalated', async () => {
    const k = await kit({ config: { operatorEmail: 'boss@example.com' } });
    const { output: t } = await k.run(intake, { message: refund() });
    await k.run(triage, { ticketId: t.ticketId }, { agent: 'triage' });
    const r = await k.run(escalate, { ticketId: t.ticketId, reason: 'customer asked for a manager' }, { agent: 'escalation', idempotencyKey: 'esc-1' });
    expect(r.output).toEqual({ ticketId: t.ticketId, notified: 'boss@example.com', messages: 1 });
    expect(r.effects).toEqual([expect.objectContaining({ name: 'notify', key: 'effect:operator.escalate:esc-1:notify', replayed: false })]);
    expect(kinds(r.events)).toEqual(['ticket:escalated']);
    expect(r.events[0]!.data).toMatchObject({ reason: 'customer asked for a manager', notified: 'boss@example.com' });
    expect(k.emls()).toHaveLength(1);
    const path = join(k.outbox, k.emls()[0]!);
    expect(headersOf(path)).toMatchObject({ to: 'boss@example.com', 'x-keel-ticket': t.ticketId });
    const body = readFileSync(path, 'utf8').replace(/=\r?\n/g, ''); // quoted-printable soft line breaks
    expect(body).toContain('customer asked for a manager');
    expect(body).toContain('Order #48213');
    expect(body).toContain('Triage (tier 0, confidence');
    expect(body).toMatch(/v3 \S+ triaged by agent:triage/);
    expect((await k.store.get<TicketState>(TICKET, t.ticketId))!.state).toMatchObject({ status: 'escalated', escalated: true });

    // redelivered: no second mail
    await k.run(escalate, { ticketId: t.ticketId, reason: 'customer asked for a manager' }, { agent: 'escalation', idempotencyKey: 'esc-1' });
    expect(k.emls()).toHaveLength(1);
  });

  it('a capability touching an entity type it did not declare is refused, and writes nothing', async () => {
    const k = await kit();
    const narrowed = { ...intake, permissions: { entityTypes: [TICKET] } };
    await expect(k.run(narrowed, { message: refund() })).rejects.toMatchObject({
      name: 'PermissionDeniedError',
      code: 'AGENT_PERMISSION_DENIED',
      message: expect.stringContaining("agent 'intake' is not allowed to use entity type 'customer'"),
    });
    expect((await k.store.changes()).events).toEqual([]);
    // a bad message is refused before any handler runs, as the bus would dead-letter it
    await expect(k.run(intake, { message: { ...refund(), id: 'not-a-uuid' } })).rejects.toMatchObject({ code: 'BUS_INVALID_MESSAGE', reason: 'schema_mismatch' });
  });
});
