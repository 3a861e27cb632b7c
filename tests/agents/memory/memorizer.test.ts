/**
 * The memorizer and inbound's recall, in process through the capability test kit: a real SQLite
 * store, a real sqlite-vec memory store with the real default embedder (all-MiniLM-L6-v2, from
 * `npm run provision`; the tests skip, saying so, when it is not there). Intake writes tickets,
 * `memory.record` turns their events into memories (with provenance), and a returning customer's
 * reply draft, summary and escalation mail refer to the earlier ticket.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../../config/index.ts';
import { createCapabilityTestKit, type CapabilityTestKit } from '../../../runtime/index.ts';
import { createEmbeddings, localMiniLMPresent, openMemory, type MemoryStore } from '../../../memory/index.ts';
import type { InboundMessage } from '../../../channels/index.ts';
import { BUILTIN_FEATURES, entityTypesOf } from '../../../agents/index.ts';
import { RECALL_THRESHOLD } from '../../../agents/inbound/index.ts';
import { setPolicy } from '../../../agents/memory/index.ts';
import { intake } from '../../../agents/inbound/intake.ts';
import { triage } from '../../../agents/inbound/triage.ts';
import { summarize } from '../../../agents/inbound/summarizer.ts';
import { suggestReply } from '../../../agents/inbound/reply-suggester.ts';
import { escalate } from '../../../agents/inbound/escalation.ts';
import { closeMailSenders } from '../../../agents/inbound/mail.ts';
import { record, memoryIdFor } from '../../../agents/memory/memorizer.ts';
import { ticketDate } from '../../../agents/inbound/ticket.ts';

const cfg = loadConfig();
// this year's dates, so the memories are within the default retention and dates read "May 3"
const Y = new Date().getUTCFullYear();
const MAY3 = ticketDate(`${Y}-05-03T09:00:00.000Z`);
const provisioned = await localMiniLMPresent(cfg.modelsDir);
const skip = provisioned ? '' : `the default embedding model is not provisioned in ${cfg.modelsDir} (run npm run provision)`;

const dir = mkdtempSync(join(tmpdir(), 'keel-memorizer-'));
let kit: CapabilityTestKit;
let memory: MemoryStore;

function email(o: { from: string; name?: string; subject: string; text: string; at: string }): InboundMessage {
  const messageId = `<${randomUUID()}@example.com>`;
  return {
    id: randomUUID(), channel: 'email', receivedAt: o.at, customer: { email: o.from, ...(o.name ? { name: o.name } : {}) }, conversationId: messageId, idempotencyKey: messageId,
    subject: o.subject, text: o.text, messageId, references: [], headers: {}, attachments: [],
    flags: { autoReply: false, bulk: false, htmlOnly: false, encodingRepaired: false, attachmentsDropped: false, truncated: false, fromMismatch: false },
    envelope: { mailFrom: o.from, rcptTo: ['support@keel.local'] },
  };
}

/** Intake, then the memorizer on every event intake appended (as the memory workflows would run it). */
async function arrive(m: InboundMessage): Promise<{ ticketId: string; customerId: string; memories: string[] }> {
  const r = await kit.run(intake, { message: m }, { agent: 'intake' });
  const out = r.output as { ticketId: string; customerId: string };
  const memories: string[] = [];
  for (const e of r.events) {
    const rec = await kit.run(record, { event: e }, { agent: 'memorizer' });
    memories.push(...rec.output.written);
  }
  return { ...out, memories };
}

beforeAll(async () => {
  if (!provisioned) return;
  memory = await openMemory(`sqlite-vec:${join(dir, 'memory.db')}`, { embeddings: createEmbeddings({ spec: 'local:all-minilm-l6-v2', modelsDir: cfg.modelsDir, modelEnv: {} }) });
  const dataDir = join(dir, 'data');
  mkdirSync(dataDir);
  kit = await createCapabilityTestKit({ entities: entityTypesOf(BUILTIN_FEATURES), memory, config: { dataDir } });
}, 60_000);

afterAll(async () => {
  await kit?.close();
  await memory?.close();
  await closeMailSenders();
  rmSync(dir, { recursive: true, force: true });
});

describe('memorizer and recall of earlier tickets', () => {
  let first: { ticketId: string; customerId: string; memories: string[] };

  it('memory.record writes one memory per inbound message, with the ticket subject and its provenance; a retry writes nothing new', async (ctx) => {
    if (skip) return ctx.skip(skip);
    first = await arrive(email({ from: 'alice@example.com', name: 'Alice Smith', subject: 'Refund for order 1234', text: 'Hello, I was charged twice for order 1234. Please refund the second charge.', at: `${Y}-05-03T09:00:00.000Z` }));
    await arrive(email({ from: 'alice@example.com', name: 'Alice Smith', subject: 'Printer setup', text: 'How do I connect the label printer to the office wifi? It does not show up.', at: `${Y}-05-10T09:00:00.000Z` }));
    await arrive(email({ from: 'bob@example.com', name: 'Bob', subject: 'Invoice copy', text: 'Could you send me a copy of my last invoice, please? I was charged and need it for taxes.', at: `${Y}-05-11T09:00:00.000Z` }));
    expect(first.memories).toHaveLength(1);
    const m = (await memory.get(first.memories[0]!))!;
    const history = await kit.store.history('ticket', first.ticketId);
    const added = history.find((e) => e.type === 'message_added')!;
    expect(m).toMatchObject({
      kind: 'message', customerId: first.customerId, entityType: 'ticket', entityId: first.ticketId, writtenBy: 'memorizer', createdAt: `${Y}-05-03T09:00:00.000Z`,
      source: { entityType: 'ticket', entityId: first.ticketId, eventIds: [added.eventId] }, meta: { subject: 'Refund for order 1234' },
    });
    expect(m.id).toBe(memoryIdFor(added.eventId, 'ticket.message_added:0'));
    expect(m.text).toContain('charged twice for order 1234');
    // the same event again (a redelivery, a replayed run): the same id, nothing new
    const before = await memory.count();
    const again = await kit.run(record, { event: added }, { agent: 'memorizer' });
    expect(again.output.written).toEqual([m.id]);
    expect(await memory.count()).toBe(before);
    // events without a rule write nothing
    const created = history.find((e) => e.type === 'created')!;
    expect((await kit.run(record, { event: created }, { agent: 'memorizer' })).output).toMatchObject({ written: [], skipped: expect.stringMatching(/no memory rule/) });
  }, 60_000);

  it('a paraphrase of the first email recalls it on top among the customer\'s memories', async (ctx) => {
    if (skip) return ctx.skip(skip);
    const hits = await memory.search({ text: 'I paid two times for my purchase and want the money back', customerId: first.customerId, limit: 5 });
    expect(hits[0]!.memory.entityId).toBe(first.ticketId);
    expect(hits[0]!.score).toBeGreaterThanOrEqual(RECALL_THRESHOLD);
    // the other topic of the same customer is below the threshold tier 0 uses
    const other = hits.find((h) => h.memory.entityId !== first.ticketId);
    expect(other!.score).toBeLessThan(RECALL_THRESHOLD);
  }, 60_000);

  it('a returning customer\'s reply draft (tier 0), summary and escalation mail refer to the earlier ticket, and the task records which memories', async (ctx) => {
    if (skip) return ctx.skip(skip);
    const back = await arrive(email({ from: 'alice@example.com', name: 'Alice Smith', subject: 'Charged two times again', text: 'Hi, my card was billed two times for the same purchase again. I want the extra payment returned.', at: `${Y}-06-01T09:00:00.000Z` }));
    expect(back.ticketId).not.toBe(first.ticketId);
    await kit.run(triage, { ticketId: back.ticketId }, { agent: 'triage' });
    const reply = await kit.run(suggestReply, { ticketId: back.ticketId }, { agent: 'reply-suggester' });
    expect(reply.output.tier).toBe(0);
    expect(reply.output.text).toContain(`As in your ticket of ${MAY3} about "Refund for order 1234"`);
    expect(reply.output.earlierTickets).toEqual([first.ticketId]);
    expect(reply.output.memories).toEqual([first.memories[0]]);
    // the recall was recorded like a side effect (a retry or a replay reads it back)
    expect(reply.effects.map((e) => e.name)).toContain('memory-recall');

    const sum = await kit.run(summarize, { ticketId: back.ticketId }, { agent: 'summarizer' });
    expect(sum.output.summary).toContain(`Earlier: ticket of ${MAY3} about "Refund for order 1234" (${first.ticketId})`);
    expect(sum.output.memories).toEqual([first.memories[0]]);

    const esc = await kit.run(escalate, { ticketId: back.ticketId, reason: 'test' }, { agent: 'escalation' });
    expect(esc.output.memories).toEqual([first.memories[0]]);
    const outbox = join(kit.config.dataDir, 'outbox');
    const eml = readdirSync(outbox).filter((f) => f.endsWith('.eml')).map((f) => readFileSync(join(outbox, f), 'utf8')).join('\n').replace(/=\r?\n/g, ''); // quoted-printable soft breaks
    expect(eml).toContain('Earlier tickets of this customer (recalled from long-term memory):');
    expect(eml).toContain(first.ticketId);
  }, 60_000);

  it('a customer with no related earlier ticket gets no reference (tier 0 stays honest)', async (ctx) => {
    if (skip) return ctx.skip(skip);
    const t = await arrive(email({ from: 'alice@example.com', name: 'Alice Smith', subject: 'Opening hours', text: 'Are you open on public holidays?', at: `${Y}-06-02T09:00:00.000Z` }));
    const reply = await kit.run(suggestReply, { ticketId: t.ticketId }, { agent: 'reply-suggester' });
    expect(reply.output.text).not.toContain('As in your ticket');
    expect(reply.output.memories).toEqual([]);
    expect(reply.output.earlierTickets).toEqual([]);
  }, 60_000);

  it('a policy that opts the type out stops new memories (the change is an event and audited; the chain stays intact)', async (ctx) => {
    if (skip) return ctx.skip(skip);
    const r = await setPolicy(kit.store, { entityType: 'ticket', optOut: true }, { kind: 'human', id: 'ada' });
    expect(r).toMatchObject({ changed: true, before: { optOut: false }, after: { optOut: true, source: 'set', updatedBy: 'human:ada' } });
    const t = await arrive(email({ from: 'carol@example.com', subject: 'Hello', text: 'Just saying hello to the team.', at: `${Y}-06-03T09:00:00.000Z` }));
    expect(t.memories).toEqual([]);
    const audit = await kit.store.exportAudit();
    expect(audit.at(-1)).toMatchObject({ action: 'memory.policy.changed', subject: 'memory_policy/ticket', details: { before: { optOut: false }, after: { optOut: true } } });
    expect((await kit.store.verifyAudit()).ok).toBe(true);
    expect(existsSync(join(dir, 'memory.db'))).toBe(true);
  }, 60_000);
});
