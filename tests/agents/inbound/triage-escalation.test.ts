/**
 * Issue 18 at the scenario level, through the real capabilities (capability test kit: real
 * SQLite in a temp dir, real effects, the real mail sender writing .eml files): a chargeback
 * threat and a safety incident escalate with their reasons, in the ticket and in the operator's
 * mail; repeat contacts come from the customer's history; an operator's retriage changes the
 * intent of the next similar message after `triage.learn`. Embeddings: `hashing:256` (no model
 * files needed; the learned tier's code path is the same as with MiniLM).
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCapabilityTestKit, type CapabilityTestKit, type CapabilityTestKitOptions } from '../../../runtime/index.ts';
import type { InboundMessage } from '../../../channels/index.ts';
import { INBOUND_ENTITY_TYPES, TICKET, type TicketState } from '../../../agents/inbound/index.ts';
import { intake } from '../../../agents/inbound/intake.ts';
import { learn, triage } from '../../../agents/inbound/triage.ts';
import { escalate } from '../../../agents/inbound/escalation.ts';
import { closeMailSenders } from '../../../agents/inbound/mail.ts';
import { TRIAGE_EXAMPLE, listExamples, recordExample, forgetExample, triageExampleType } from '../../../agents/inbound/learned.ts';

const root = mkdtempSync(join(tmpdir(), 'keel-triage-esc-'));
const kits: CapabilityTestKit[] = [];
afterEach(async () => {
  for (const k of kits.splice(0)) await k.close();
});
afterAll(async () => {
  await closeMailSenders();
  rmSync(root, { recursive: true, force: true });
});

async function kit(o: Partial<CapabilityTestKitOptions> = {}) {
  const dataDir = join(root, randomUUID());
  mkdirSync(dataDir);
  const k = await createCapabilityTestKit({ entities: [...INBOUND_ENTITY_TYPES, triageExampleType], agent: 'intake', ...o, config: { dataDir, embeddings: 'hashing:256', ...o.config } });
  kits.push(k);
  const outbox = join(dataDir, 'outbox');
  return Object.assign(k, { emls: () => (existsSync(outbox) ? readdirSync(outbox).filter((f) => f.endsWith('.eml')).map((f) => readFileSync(join(outbox, f), 'utf8')) : []) });
}

function email(o: { from?: string; subject: string; text: string; at?: string }): InboundMessage {
  const messageId = `<${randomUUID()}@example.com>`;
  return {
    id: randomUUID(),
    channel: 'email',
    receivedAt: o.at ?? new Date().toISOString(),
    customer: { email: o.from ?? 'ada@example.com', name: 'Ada Brooks' },
    conversationId: messageId,
    idempotencyKey: messageId,
    subject: o.subject,
    text: o.text,
    messageId,
    references: [],
    headers: {},
    attachments: [],
    flags: { autoReply: false, bulk: false, htmlOnly: false, encodingRepaired: false, attachmentsDropped: false, truncated: false, fromMismatch: false },
    envelope: { mailFrom: o.from ?? 'ada@example.com', rcptTo: ['support@keel.local'] },
  };
}

type Kit = Awaited<ReturnType<typeof kit>>;
async function triaged(k: Kit, m: InboundMessage) {
  const { output: t } = await k.run(intake, { message: m });
  const r = await k.run(triage, { ticketId: t.ticketId }, { agent: 'triage' });
  return { ticketId: t.ticketId, messageId: t.messageId, out: r.output };
}

describe('escalation rules through the triage capability', () => {
  it('a chargeback threat escalates, says why in the ticket and in the operator mail', async () => {
    const k = await kit();
    const { ticketId, out } = await triaged(k, email({ subject: 'Still waiting', text: 'Hi,\n\nYou billed me 89 EUR twice in October. I asked politely last week. If I do not hear back by Friday I will file a chargeback with my card company.\n\nAda' }));
    expect(out).toMatchObject({ escalate: true, urgency: 'high' });
    expect(out.reasons.join('\n')).toMatch(/escalate: chargeback threat \(rule threat\.chargeback: "(file a chargeback|chargeback)"\)/);
    const ticket = (await k.store.get<TicketState>(TICKET, ticketId))!.state;
    expect(ticket).toMatchObject({ status: 'escalated', priority: 'urgent' });
    expect(ticket.triage!.reasons.some((r) => r.includes('threat.chargeback'))).toBe(true);

    await k.run(escalate, { ticketId, reason: 'triage: urgent or angry message' }, { agent: 'escalation' });
    const [mail] = k.emls();
    expect(mail).toBeDefined();
    expect(mail!.replace(/=\r?\n/g, '')).toMatch(/because: chargeback threat \(rule threat\.chargeback/);
  });

  it('a safety incident escalates with the safety rule, in English and in German', async () => {
    const k = await kit();
    const en = await triaged(k, email({ from: 'sam@example.com', subject: 'Your heater', text: 'The fan heater I bought started sparking and the plug was burnt black this morning. My son was next to it.' }));
    expect(en.out.escalate).toBe(true);
    expect(en.out.reasons.join('\n')).toMatch(/escalate: safety incident \(rule safety: "(sparking|burnt)"\)/);
    const de = await triaged(k, email({ from: 'jo@example.com', subject: 'Akku', text: 'Hallo, der Akku ist heute beim Laden explodiert und hat die Decke angesengt. Zum Glück ist niemand verletzt.' }));
    expect(de.out).toMatchObject({ escalate: true, language: 'de' });
    expect(de.out.reasons.join('\n')).toMatch(/rule safety/);
  });

  it('urgent wording alone raises urgency without escalating; repeat contacts come from the history', async () => {
    const k = await kit();
    const calm = await triaged(k, email({ from: 'lee@example.com', subject: 'Invoice today please', text: 'Could you send the November invoice today? Our accountant needs it urgently.' }));
    expect(calm.out).toMatchObject({ urgency: 'high', escalate: false });

    // three earlier mails on three tickets this week, then a mild nudge
    const day = 86_400_000;
    for (const [i, ago] of [5, 3, 1].entries()) await k.run(intake, { message: email({ from: 'kim@example.com', subject: `order question ${i}`, text: 'Where is my order 7781?', at: new Date(Date.now() - ago * day).toISOString() }) });
    const nudge = await triaged(k, email({ from: 'kim@example.com', subject: 'order question', text: 'Hello, any news about my order?' }));
    expect(nudge.out.escalate).toBe(true);
    expect(nudge.out.reasons.join('\n')).toMatch(/repeat contacts \(rule repeat\.contacts: "3 earlier messages in 7 days"\)/);
    // the same nudge from a customer with no history does not escalate
    const fresh = await triaged(k, email({ from: 'new@example.com', subject: 'order question', text: 'Hello, any news about my order?' }));
    expect(fresh.out.escalate).toBe(false);
  });
});

describe('the operator teaches it', () => {
  it('a retriage changes the intent of the next similar message; forgetting it undoes that', async () => {
    const k = await kit();
    // the learned tier trains first (triage.learn waits for it)
    const first = await k.run(learn, {}, { agent: 'triage' });
    expect(first.output).toMatchObject({ trained: true, operatorExamples: 0, featurizer: 'hashing:256+ngrams:4096' });

    const text = 'Hi, we are closing the studio for the winter. Please put our seats on hold from December until March, we plan to come back in spring.';
    const a = await triaged(k, email({ from: 'mo@example.com', subject: 'Winter break', text }));
    // the operator decides otherwise than triage did (the corpus may read a pause either way)
    const taught = a.out.intent === 'cancellation' ? 'question' : 'cancellation';

    // what `keel ticket retriage <id> --intent <taught>` records (cli/commands/triage.ts)
    const ticket = (await k.store.get<TicketState>(TICKET, a.ticketId))!.state;
    const msg = ticket.messages.find((m) => m.direction === 'in')!;
    const ex = await recordExample(k.store, { text: msg.text, subject: ticket.subject, intent: taught, previous: { intent: a.out.intent }, source: 'retriage', ticketId: a.ticketId, messageId: msg.id, by: 'ada' }, { kind: 'human', id: 'ada' });
    const learned = await k.run(learn, {}, { agent: 'triage' });
    expect(learned.output).toMatchObject({ trained: true, operatorExamples: 1 });

    const similar = 'Hello, we are closing the studio for the winter. Please put our seats on hold from December until March; we plan to be back in spring.';
    const b = await triaged(k, email({ from: 'mo2@example.com', subject: 'Winter break', text: similar }));
    expect(b.out.intent).toBe(taught);
    expect(b.out.reasons.join('\n')).toContain(`operator's example ${ex.id}`);

    // the audit: who recorded it, and the example can be listed and forgotten
    expect((await listExamples(k.store)).map((e) => e.id)).toEqual([ex.id]);
    expect((await k.store.history(TRIAGE_EXAMPLE, ex.id))[0]!.meta.actor).toEqual({ kind: 'human', id: 'ada' });
    await forgetExample(k.store, ex.id, { kind: 'human', id: 'ada' });
    expect(await k.run(learn, {}, { agent: 'triage' })).toMatchObject({ output: { operatorExamples: 0 } });
    const c = await triaged(k, email({ from: 'mo3@example.com', subject: 'Winter break', text: similar }));
    expect(c.out.intent).toBe(a.out.intent);
  });

  it('without a provisioned embedding model the learned tier is off and triage says so', async () => {
    const k = await kit({ config: { embeddings: 'local:all-minilm-l6-v2', modelsDir: join(root, 'no-models-here') } });
    const { out } = await triaged(k, email({ subject: 'Refund', text: 'Please refund order 4410, it arrived broken.' }));
    expect(out.intent).toBe('refund');
    expect(out.reasons.join('\n')).toMatch(/learned tier off: embedding model local:all-minilm-l6-v2 is not provisioned/);
    expect(await k.run(learn, {}, { agent: 'triage' })).toMatchObject({ output: { trained: false } });
  });
});
