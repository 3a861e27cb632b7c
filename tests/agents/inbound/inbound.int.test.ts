import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { connectBus, createBus, defineMessage, type Bus } from '../../../bus/index.ts';
import { openStore, type StateStore } from '../../../shared-state/index.ts';
import { runAgent, taskType, type AgentDefinition, type RunningAgent } from '../../../runtime/index.ts';
import { createModelRegistry, type ModelRegistry } from '../../../models/index.ts';
import type { InboundMessage } from '../../../channels/index.ts';
import { inboundEmail } from '../../helpers/inbound-email.ts';
import intakeAgent from '../../../agents/inbound/intake.ts';
import triageAgent from '../../../agents/inbound/triage.ts';
import summarizerAgent from '../../../agents/inbound/summarizer.ts';
import replySuggesterAgent from '../../../agents/inbound/reply-suggester.ts';
import senderAgent from '../../../agents/inbound/sender.ts';
import escalationAgent from '../../../agents/inbound/escalation.ts';
import { closeMailSenders } from '../../../agents/inbound/mail.ts';
import type { TicketState, CustomerState } from '../../../agents/inbound/index.ts';
import { startNats, tempDir, uniqueName, type NatsHandle } from '../../helpers/index.ts';
import { ALL_ENTITY_TYPES } from '../../helpers/types.ts';

let nats: NatsHandle | undefined;
let skip = '';
const dir = tempDir('keel-inbound-');
const closers: Array<() => Promise<unknown>> = [];
const savedEnv = { ...process.env };

beforeAll(async () => {
  const n = await startNats();
  if (n.ok) nats = n.server;
  else skip = n.reason;
});
afterAll(async () => {
  for (const c of closers.reverse()) await c().catch(() => undefined);
  await closeMailSenders();
  await nats?.stop();
  process.env = savedEnv;
  dir.remove();
});

const ALL = [intakeAgent, triageAgent, summarizerAgent, replySuggesterAgent, senderAgent, escalationAgent];

interface World {
  bus: Bus;
  store: StateStore;
  agents: RunningAgent[];
  outbox: string;
  /** publishes a task as the workflow would and waits for its recorded output */
  task<T = Record<string, unknown>>(capability: string, input: unknown, o?: { key?: string; runId?: string }): Promise<T>;
  emls(): string[];
}

async function world(defs: AgentDefinition[] = ALL, opts: { models?: ModelRegistry } = {}): Promise<World> {
  const prefix = uniqueName('in');
  const dataDir = join(dir.path, prefix);
  process.env.KEEL_DATA_DIR = dataDir;
  delete process.env.KEEL_SMTP_RELAY;
  delete process.env.KEEL_SMTP_FROM;
  delete process.env.KEEL_OPERATOR_EMAIL;
  const nc = await connectBus({ servers: nats!.url });
  closers.push(() => nc.close());
  const bus = createBus(nc, { prefix });
  await bus.provision();
  const store = await openStore(`sqlite:${join(dir.path, `${prefix}.db`)}`, { types: ALL_ENTITY_TYPES });
  closers.push(() => store.close());
  const agents: RunningAgent[] = [];
  for (const d of defs) {
    const a = await runAgent(d, { natsUrl: nats!.url, state: store, prefix, models: opts.models });
    closers.push(() => a.stop(1_000));
    agents.push(a);
  }
  const outbox = join(dataDir, 'outbox');
  const consumerOf = (capability: string) => agents.map((a) => a.consumers[capability]).find(Boolean)!;
  return {
    bus,
    store,
    agents,
    outbox,
    emls: () => (existsSync(outbox) ? readdirSync(outbox).filter((f) => f.endsWith('.eml')).sort() : []),
    async task<T>(capability: string, input: unknown, o: { key?: string; runId?: string } = {}): Promise<T> {
      const key = o.key ?? `${capability}-${randomUUID()}`;
      const consumer = consumerOf(capability);
      const deadBefore = consumer.stats.deadLettered;
      await bus.publish(bus.subjects.task(capability), defineMessage(taskType(capability), z.unknown()), input, {
        idempotencyKey: key,
        correlationId: o.runId ?? 'run-1',
      });
      const deadline = Date.now() + 30_000;
      while (Date.now() < deadline) {
        const rec = await store.getIdempotency(`task:${capability}:${key}`);
        if (rec?.status === 'completed') return rec.result as T;
        if (consumer.stats.deadLettered > deadBefore) throw new Error(`task ${capability} was dead-lettered: ${JSON.stringify(consumer.stats.deadLetterReasons)}`);
        await new Promise((r) => setTimeout(r, 25));
      }
      throw new Error(`timed out waiting for ${capability}`);
    },
  };
}

const email = inboundEmail;

function chat(o: { handle: string; name?: string; conversationId: string; text: string }): InboundMessage {
  return {
    id: randomUUID(),
    channel: 'chat',
    receivedAt: new Date().toISOString(),
    customer: { handle: o.handle, ...(o.name ? { name: o.name } : {}) },
    conversationId: o.conversationId,
    text: o.text,
    references: [],
    headers: {},
    attachments: [],
    flags: { autoReply: false, bulk: false, htmlOnly: false, encodingRepaired: false, attachmentsDropped: false, truncated: false, fromMismatch: false },
  };
}

/** The header block of an .eml, unfolded, as name → value (lower-case names). */
function headersOf(path: string): Record<string, string> {
  const raw = readFileSync(path, 'utf8');
  const head = raw.split(/\r?\n\r?\n/, 1)[0]!.replace(/\r?\n[ \t]+/g, ' ');
  const out: Record<string, string> = {};
  for (const line of head.split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i > 0) out[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
  }
  return out;
}

type Intake = { ticketId: string; customerId: string; messageId: string; isNew: boolean; text: string; subject?: string; channel: string };

describe('inbound customers end to end (all six agents in-process, one nats-server, one SQLite store)', () => {
  it('email: intake → triage → summarize + suggest-reply → send once, threaded; a reply in the thread lands on the same ticket; chat is its own customer and ticket', async (ctx) => {
    if (!nats) return ctx.skip(skip);
    const w = await world();
    const first = email({
      name: 'Ada Lovelace',
      subject: 'Refund for order 48213',
      messageId: '<m1@example.com>',
      text: "Hi,\n\nI bought the annual plan last week but it doesn't fit our needs. Could I get a refund please? Order #48213.\n\nThanks,\nAda",
    });

    const a = await w.task<Intake>('inbound.intake', { message: first }, { runId: 'run-1' });
    expect(a).toMatchObject({ isNew: true, channel: 'email', messageId: first.id, subject: 'Refund for order 48213' });
    expect(a.ticketId).toMatch(/^tkt-[0-9a-f]{16}$/);
    expect(a.customerId).toMatch(/^cus-[0-9a-f]{16}$/);
    const customer = await w.store.get<CustomerState>('customer', a.customerId);
    expect(customer?.state).toMatchObject({ name: 'Ada Lovelace', email: 'ada@example.com' });

    const triage = await w.task<Record<string, unknown>>('ticket.triage', { ticketId: a.ticketId }, { runId: 'run-1' });
    expect(triage).toMatchObject({ ticketId: a.ticketId, intent: 'refund', tier: 0, escalate: false });
    const [summary, suggestion] = await Promise.all([
      w.task<{ summary: string; tier: number }>('ticket.summarize', { ticketId: a.ticketId }, { runId: 'run-1' }),
      w.task<{ text: string; tier: number; confidence: number }>('ticket.suggest-reply', { ticketId: a.ticketId }, { runId: 'run-1' }),
    ]);
    expect(summary.tier).toBe(0);
    expect(summary.summary).toMatch(/refund/i);
    expect(suggestion).toMatchObject({ tier: 0 });
    expect(suggestion.text).toMatch(/^Hi Ada,/);
    expect(suggestion.text).toContain('48213');

    // the approval gate (the lead's workflow engine) passed: send
    const sendInput = { ticketId: a.ticketId, text: suggestion.text, approvalId: 'ap-1', approvedBy: 'operator' };
    const sent = await w.task<{ channel: string; messageId: string; to: string; path: string }>('message.send', sendInput, { key: 'send-run-1', runId: 'run-1' });
    expect(sent).toMatchObject({ ticketId: a.ticketId, channel: 'email', to: 'ada@example.com' });
    expect(w.emls()).toHaveLength(1);
    const h = headersOf(join(w.outbox, w.emls()[0]!));
    expect(h.to).toBe('ada@example.com');
    expect(h['in-reply-to']).toBe('<m1@example.com>');
    expect(h.references).toBe('<m1@example.com>');
    expect(h.subject).toBe('Re: Refund for order 48213');
    expect(h['message-id']).toBe(sent.messageId);
    expect(h['auto-submitted']).toBeUndefined(); // a human approved it

    // the workflow (or a redelivery) publishes the send again under the same idempotency key
    await w.task('message.send', sendInput, { key: 'send-run-1', runId: 'run-1' });
    expect(w.emls()).toHaveLength(1);

    let ticket = (await w.store.get<TicketState>('ticket', a.ticketId))!;
    expect(ticket.state).toMatchObject({
      status: 'pending',
      channel: 'email',
      customerId: a.customerId,
      customerEmail: 'ada@example.com',
      threadKey: '<m1@example.com>',
      triage: { intent: 'refund', tier: 0 },
      suggestion: { text: suggestion.text, tier: 0 },
      approval: { id: 'ap-1', state: 'approved', decidedBy: 'operator' },
      lastRunId: 'run-1',
    });
    expect(ticket.state.summary).toBe(summary.summary);
    expect(ticket.state.messages.map((m) => [m.direction, m.channel])).toEqual([['in', 'email'], ['out', 'email']]);
    expect(ticket.state.messages[1]).toMatchObject({ messageId: sent.messageId, inReplyTo: '<m1@example.com>', to: 'ada@example.com' });
    const types = (await w.store.history('ticket', a.ticketId)).map((e) => e.type).filter((t) => t !== 'updated');
    expect(types).toEqual(['created', 'message_added', 'triaged', ...(types.indexOf('summarized') < types.indexOf('reply_suggested') ? ['summarized', 'reply_suggested'] : ['reply_suggested', 'summarized']), 'reply_sent']);
    const actors = new Set((await w.store.history('ticket', a.ticketId)).map((e) => e.meta.actor.id));
    expect([...actors].sort()).toEqual(['intake', 'reply-suggester', 'sender', 'summarizer', 'triage']);

    // the customer answers in the thread: same ticket, reopened
    const second = email({
      subject: 'Re: Refund for order 48213',
      messageId: '<m2@example.com>',
      inReplyTo: sent.messageId,
      references: ['<m1@example.com>', sent.messageId],
      text: 'Thanks! When will the money be back on my card?\n\nOn Mon, Support wrote:\n> Hi Ada, ...',
    });
    const b = await w.task<Intake>('inbound.intake', { message: second }, { runId: 'run-2' });
    expect(b).toMatchObject({ ticketId: a.ticketId, customerId: a.customerId, isNew: false, text: 'Thanks! When will the money be back on my card?' });
    // the same mail delivered again (new id, same Message-ID) is not added twice
    const again = await w.task<Intake>('inbound.intake', { message: { ...second, id: randomUUID() } }, { runId: 'run-3' });
    expect(again).toMatchObject({ ticketId: a.ticketId, messageId: second.id, isNew: false });
    ticket = (await w.store.get<TicketState>('ticket', a.ticketId))!;
    expect(ticket.state.messages).toHaveLength(3);
    expect(ticket.state.status).toBe('open');

    // chat by handle: another customer, another ticket; a chat reply is recorded, not mailed
    const c = await w.task<Intake>('inbound.intake', { message: chat({ handle: 'ada_chat', conversationId: 'conv-77', text: 'How do I export my invoices as CSV?' }) }, { runId: 'run-4' });
    expect(c).toMatchObject({ channel: 'chat', isNew: true });
    expect(c.customerId).not.toBe(a.customerId);
    expect(c.ticketId).not.toBe(a.ticketId);
    expect((await w.store.get<CustomerState>('customer', c.customerId))?.state).toMatchObject({ name: 'ada_chat', tags: ['chat', 'handle:ada_chat'] });
    await w.task('ticket.triage', { ticketId: c.ticketId }, { runId: 'run-4' });
    const chatSent = await w.task<{ channel: string; to: string; path?: string }>('message.send', { ticketId: c.ticketId, text: 'Settings → Export → CSV.' }, { runId: 'run-4' });
    expect(chatSent).toMatchObject({ channel: 'chat', to: 'ada_chat' });
    expect(chatSent.path).toBeUndefined();
    expect(w.emls()).toHaveLength(1);
    const chatTicket = (await w.store.get<TicketState>('ticket', c.ticketId))!;
    expect(chatTicket.state).toMatchObject({ channel: 'chat', threadKey: 'conv-77', customerHandle: 'ada_chat', status: 'pending' });
    expect(chatTicket.state.messages.map((m) => m.direction)).toEqual(['in', 'out']);
  });

  it('concurrent intakes of one new thread converge on one ticket with both messages', async (ctx) => {
    if (!nats) return ctx.skip(skip);
    const w = await world([intakeAgent]);
    const root = '<root-9@example.com>';
    const msgs = [0, 1, 2, 3].map((i) => email({ from: 'grace@example.com', subject: `Re: Invoice`, messageId: `<c${i}@example.com>`, inReplyTo: root, references: [root], text: `Part ${i} of my question about the invoice.` }));
    const outs = await Promise.all(msgs.map((m) => w.task<Intake>('inbound.intake', { message: m })));
    expect(new Set(outs.map((o) => o.ticketId)).size).toBe(1);
    expect(outs.filter((o) => o.isNew)).toHaveLength(1);
    const t = (await w.store.get<TicketState>('ticket', outs[0]!.ticketId))!;
    expect(t.state.messages.map((m) => m.messageId).sort()).toEqual(msgs.map((m) => m.messageId).sort());
    expect(t.state.threadKey).toBe(root);
  });

  it('an angry urgent email escalates: triage says so and the operator gets the whole history by email', async (ctx) => {
    if (!nats) return ctx.skip(skip);
    const w = await world();
    const m1 = email({ from: 'bob@example.com', name: 'Bob', subject: 'Login problem', messageId: '<b1@example.com>', text: 'I cannot log in since this morning. Can you help?' });
    const a = await w.task<Intake>('inbound.intake', { message: m1 });
    const m2 = email({
      from: 'bob@example.com', subject: 'Re: Login problem', messageId: '<b2@example.com>', inReplyTo: '<b1@example.com>', references: ['<b1@example.com>'],
      text: "Your whole service is DOWN!!! This is UNACCEPTABLE, we are losing sales. Fix it immediately or I'm calling my lawyer.",
    });
    await w.task('inbound.intake', { message: m2 });
    const t = await w.task<{ escalate: boolean; urgency: string; sentiment: string; reasons: string[] }>('ticket.triage', { ticketId: a.ticketId });
    expect(t).toMatchObject({ escalate: true, urgency: 'high', sentiment: 'negative' });
    expect((await w.store.get<TicketState>('ticket', a.ticketId))!.state).toMatchObject({ status: 'escalated', priority: 'urgent' });
    await w.task('ticket.summarize', { ticketId: a.ticketId });

    const e = await w.task<{ notified: string; messages: number }>('operator.escalate', { ticketId: a.ticketId, reason: t.reasons.join('; ') }, { key: 'esc-1' });
    expect(e).toMatchObject({ ticketId: a.ticketId, notified: 'operator@keel.local', messages: 2 });
    await w.task('operator.escalate', { ticketId: a.ticketId, reason: 'again' }, { key: 'esc-1' });
    const emls = w.emls();
    expect(emls).toHaveLength(1);
    const raw = readFileSync(join(w.outbox, emls[0]!), 'utf8');
    const h = headersOf(join(w.outbox, emls[0]!));
    expect(h.to).toBe('operator@keel.local');
    expect(h.subject).toMatch(/^\[Keel\] URGENT: Login problem \(tkt-/);
    const body = raw.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/g, (_, x: string) => String.fromCharCode(parseInt(x, 16)));
    expect(body).toContain('I cannot log in since this morning');
    expect(body).toContain('Fix it immediately');
    expect(body).toMatch(/Triage \(tier 0/);
    expect(body).toContain('Summary:');
    expect(body).toMatch(/v1 .* created by agent:intake/);
    const ticket = (await w.store.get<TicketState>('ticket', a.ticketId))!;
    expect(ticket.state).toMatchObject({ escalated: true, status: 'escalated' });
    expect((await w.store.history('ticket', a.ticketId)).filter((ev) => ev.type === 'escalated')).toHaveLength(1);
  });

  it('low tier-0 confidence with a small model configured: the model answers (tier 1) and its call is in the cost ledger', async (ctx) => {
    if (!nats) return ctx.skip(skip);
    const registry = createModelRegistry(
      { KEEL_MODEL_SMALL: 'scripted:triage-small' },
      { scripts: { 'triage-small': [{ content: '```json\n{"intent":"bug","urgency":"normal","sentiment":"neutral","entities":[],"confidence":0.82,"escalate":false,"reasons":["widget misbehaves"]}\n```', usage: { input_tokens: 300, output_tokens: 40 } }] } },
    );
    const w = await world([intakeAgent, triageAgent], { models: registry });
    const a = await w.task<Intake>('inbound.intake', { message: email({ from: 'kim@example.com', subject: 'hmm', messageId: '<k1@example.com>', text: 'the widget thing is weird' }) });
    const t = await w.task<{ tier: number; intent: string; confidence: number; reasons: string[] }>('ticket.triage', { ticketId: a.ticketId }, { runId: 'run-m' });
    expect((await w.store.get<TicketState>('ticket', a.ticketId))!.state.triage).toMatchObject({ tier: 1, intent: 'bug' });
    expect(t).toMatchObject({ tier: 1, intent: 'bug', confidence: 0.82 });
    expect(t.reasons[0]).toBe('tier 1 model');
    const report = await w.store.costs({ capability: 'ticket.triage', records: 10 });
    const modelCall = report.records.find((r) => r.model !== null);
    expect(modelCall).toMatchObject({ agent: 'triage', capability: 'ticket.triage', runId: 'run-m', tokensIn: 300, tokensOut: 40 });
  });

  it('with no model configured an unsure agent stays at tier 0 and says so', async (ctx) => {
    if (!nats) return ctx.skip(skip);
    const w = await world([intakeAgent, triageAgent, replySuggesterAgent]);
    const a = await w.task<Intake>('inbound.intake', { message: email({ from: 'lee@example.com', subject: '?', messageId: '<l1@example.com>', text: 'asdkj qwpeo zxcmn' }) });
    const t = await w.task<{ tier: number; confidence: number; reasons: string[] }>('ticket.triage', { ticketId: a.ticketId });
    expect(t.tier).toBe(0);
    expect(t.confidence).toBeLessThan(0.6);
    expect(t.reasons).toContain('no model configured: tier 0 only');
    expect(await w.task('ticket.suggest-reply', { ticketId: a.ticketId })).toMatchObject({ tier: 0 });
  });
});
