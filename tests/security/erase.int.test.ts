/**
 * Customer erasure (issue 14): `keel customer erase` as a process against a real SQLite store, a
 * real sqlite-vec memory, and real files (outbox, quarantine, attachments). The customer has
 * tickets (updated many times, so old row versions sit in SQLite's free space), memories, a cost
 * record, an approval, a recorded send result, audit records naming their address, outbox and
 * quarantined mail. After the erasure, the bytes of every file under the data dir (the SQLite
 * files with their WAL, the memory db, the outbox) hold neither their address nor their name,
 * another customer's data is intact, and `keel audit verify` passes.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../config/index.ts';
import { openStore, type AuditRecord, type StateStore } from '../../shared-state/index.ts';
import { createEmbeddings, openMemory } from '../../memory/index.ts';
import { customerIdFor, eraseCustomer, planCustomerErasure, type TicketState } from '../../agents/inbound/index.ts';
import { tempDir } from '../helpers/index.ts';
import { ALL_ENTITY_TYPES } from '../helpers/types.ts';

const dir = tempDir('keel-erase-');
afterAll(() => dir.remove());

const EMAIL = 'ada.lovelace@example.org';
const NAME = 'Ada Lovelace';
const BOB = 'bob.builder@example.net';
const KETTLE = 'my blue kettle exploded on Tuesday';
const actor = { kind: 'agent', id: 'intake' } as const;

function keel(args: string[], env: Record<string, string>) {
  const r = spawnSync(process.execPath, ['--no-warnings', join(REPO_ROOT, 'cli', 'keel.ts'), ...args], { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Every file under `root`, recursively. */
function filesUnder(root: string): string[] {
  return readdirSync(root, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? filesUnder(join(root, e.name)) : [join(root, e.name)]));
}

/** The files under `root` whose bytes contain `needle` (as UTF-8). */
function hits(root: string, needle: string): string[] {
  const b = Buffer.from(needle, 'utf8');
  return filesUnder(root).filter((f) => readFileSync(f).includes(b));
}

async function seedTicket(store: StateStore, id: string, o: { customerId: string; email: string; name: string; n: number; attachment?: string }): Promise<void> {
  const at = () => new Date().toISOString();
  await store.append('ticket', id, 0, [{ type: 'created', data: { subject: `Refund for ${o.name}`, customerId: o.customerId, customerEmail: o.email, channel: 'email', threadKey: `<t-${id}@mail.example.org>` } }], { actor, correlationId: `run-${id}` });
  let v = 1;
  for (let i = 0; i < o.n; i++) {
    const r = await store.append('ticket', id, v, [{ type: 'message_added', data: { id: `m${i}`, direction: 'in', channel: 'email', from: `${o.name} <${o.email}>`, text: `Hello, this is ${o.name} (${o.email}) writing for the ${i + 1}. time. ${'Please refund order 1182. '.repeat(20)}`, at: at(), messageId: `<m${i}-${id}@mail.example.org>`, ...(i === 0 && o.attachment ? { attachments: [{ filename: `${o.name} invoice.pdf`, contentType: 'application/pdf', size: 40, sha256: 'a'.repeat(64), stored: true, path: o.attachment }] } : {}) } }], { actor, correlationId: `run-${id}` });
    v = r.entity.version;
    const s = await store.append('ticket', id, v, [{ type: 'summarized', data: { summary: `${o.name} wants a refund (${i + 1})`, tier: 0 } }], { actor: { kind: 'agent', id: 'summarizer' }, correlationId: `run-${id}` });
    v = s.entity.version;
  }
  await store.append('ticket', id, v, [{ type: 'reply_suggested', data: { text: `Dear ${o.name}, your refund is on its way.`, tier: 1, confidence: 0.9 } }], { actor: { kind: 'agent', id: 'reply-suggester' }, correlationId: `run-${id}` });
}

describe('the erasure plan', () => {
  it('searches the whole store only for distinctive identifiers: a one-word name or a short handle would erase other people\'s text', async () => {
    const store = await openStore(`sqlite:${join(dir.path, 'plan.db')}`, { types: ALL_ENTITY_TYPES });
    try {
      const will = customerIdFor({ email: 'will@example.org' })!;
      await store.append('customer', will, 0, [{ type: 'created', data: { name: 'Will', email: 'will@example.org', tags: ['handle:wil', 'chat'] } }], { actor });
      await store.append('customer', 'cus-other', 0, [{ type: 'created', data: { name: 'Other Person', notes: 'Will call back on Monday' } }], { actor });
      const plan = await planCustomerErasure(store, will);
      expect(plan.values).toEqual(['will@example.org']);
      await eraseCustomer(plan, { store, actor: { kind: 'human', id: 'dpo' }, reason: 'test', vacuum: false });
      expect((await store.get('customer', 'cus-other'))!.state).toMatchObject({ notes: 'Will call back on Monday' });
      expect((await store.get('customer', will))!.state).toEqual({ name: '[erased]', status: 'lead', tags: [] });
      expect((await store.verifyAudit()).ok).toBe(true);
    } finally {
      await store.close();
    }
  });
});

describe('keel customer erase', () => {
  it('erases a customer across the store (events too), memory, the ledger, the outbox and the audit log; no byte of their address or name is left', async () => {
    const dataDir = join(dir.path, 'data');
    mkdirSync(dataDir, { recursive: true });
    const env = { KEEL_DATA_DIR: dataDir, KEEL_EMBEDDINGS: 'hashing:64', KEEL_OPERATOR: 'dpo', KEEL_LOG_LEVEL: 'error' };
    const state = `sqlite:${join(dataDir, 'keel.db')}`;
    const ada = customerIdFor({ email: EMAIL })!;
    const bob = customerIdFor({ email: BOB })!;

    // ---- seed ---------------------------------------------------------------------------------
    const store = await openStore(state, { types: ALL_ENTITY_TYPES });
    await store.append('customer', ada, 0, [{ type: 'created', data: { name: NAME, email: EMAIL, status: 'active', tags: ['vip'] } }], { actor });
    for (let i = 0; i < 5; i++) await store.append('customer', ada, i + 1, [{ type: 'updated', data: { notes: `${NAME} called about order ${i}` } }], { actor: { kind: 'human', id: 'op' } });
    await store.append('customer', bob, 0, [{ type: 'created', data: { name: 'Bob Builder', email: BOB } }], { actor });
    const attachment = join(dataDir, 'attachments', 'a'.repeat(64));
    mkdirSync(join(dataDir, 'attachments'), { recursive: true });
    writeFileSync(attachment, `%PDF invoice for ${NAME}, ${EMAIL}`);
    await seedTicket(store, 'tkt-ada-1', { customerId: ada, email: EMAIL, name: NAME, n: 4, attachment });
    await seedTicket(store, 'tkt-ada-2', { customerId: ada, email: EMAIL, name: NAME, n: 2 });
    await seedTicket(store, 'tkt-bob-1', { customerId: bob, email: BOB, name: 'Bob Builder', n: 1 });
    // what else names her: a quarantine record, an approval, a recorded send result, the ledger
    await store.appendAudit({ actor: { kind: 'system', id: 'smtp' }, action: 'message.quarantined', subject: 'quarantine/q1', details: { reason: 'spam', from: EMAIL } });
    await store.appendAudit({ actor: { kind: 'agent', id: 'sender' }, action: 'email.sent', subject: 'ticket/tkt-ada-1', details: { messageId: '<r1@keel>', recipients: 1, customerId: ada } });
    await store.createApproval({ id: 'ap-ada', action: 'reply.send', subject: 'ticket/tkt-ada-1', payload: { ticketId: 'tkt-ada-1', to: EMAIL, text: `Dear ${NAME}, your refund is on its way.` }, requestedBy: actor, deadline: new Date(Date.now() + 3_600_000).toISOString() });
    const claim = await store.claim('effect:message.send:k1:send');
    if (claim.status !== 'claimed') throw new Error('claim');
    await store.complete('effect:message.send:k1:send', claim.token, { messageId: '<r1@keel>', to: EMAIL, path: join(dataDir, 'outbox', 'key-k1.eml') });
    // the run that handled her ticket: its input, and its model call's recorded prompt, hold her words without naming her
    await store.append('workflow_run', 'run-tkt-ada-1', 0, [{ type: 'created', data: { workflow: 'inbound-message', version: 1, definition: {}, status: 'completed', input: { message: { text: KETTLE } }, steps: {}, startedAt: new Date().toISOString() } }], { actor: { kind: 'system', id: 'engine' } });
    const mc = await store.claim('effect:ticket.suggest-reply:run-tkt-ada-1.suggest.0:model-1');
    if (mc.status !== 'claimed') throw new Error('claim');
    await store.complete('effect:ticket.suggest-reply:run-tkt-ada-1.suggest.0:model-1', mc.token, { text: 'Sorry to hear that', prompt: { tier: 'small', messages: [{ role: 'user', content: KETTLE }] } });
    await store.recordCost({ customerId: ada, agent: 'reply-suggester', model: 'small', costUsd: 0.42, tokensIn: 1200, tokensOut: 300, details: { tier: 1, prompt: `Customer ${NAME} asks for a refund` } });
    await store.recordCost({ customerId: bob, agent: 'reply-suggester', model: 'small', costUsd: 0.1, details: { tier: 1 } });
    await store.close();

    const memory = await openMemory(`sqlite-vec:${join(dataDir, 'memory.db')}`, { embeddings: createEmbeddings({ spec: 'hashing:64', modelsDir: dataDir, modelEnv: {} }) });
    await memory.put([
      { id: 'm-ada-1', text: `${NAME} asked for a refund of order 1182; reply to ${EMAIL}`, kind: 'summary', customerId: ada, source: { entityType: 'ticket', entityId: 'tkt-ada-1', eventIds: [] }, writtenBy: 'memory' },
      { id: 'm-ada-2', text: `Thread notes: ${NAME} prefers email`, kind: 'history', source: { entityType: 'ticket', entityId: 'tkt-ada-2', eventIds: [] }, writtenBy: 'memory' },
      { id: 'm-bob-1', text: 'Bob Builder asked about invoices', kind: 'summary', customerId: bob, source: { entityType: 'ticket', entityId: 'tkt-bob-1', eventIds: [] }, writtenBy: 'memory' },
    ]);
    await memory.close();

    mkdirSync(join(dataDir, 'outbox'), { recursive: true });
    writeFileSync(join(dataDir, 'outbox', 'key-k1.eml'), `From: support@example.com\r\nTo: ${NAME} <${EMAIL}>\r\nSubject: Re: Refund\r\n\r\nDear ${NAME}, your refund is on its way.\r\n`);
    writeFileSync(join(dataDir, 'outbox', 'key-k2.eml'), `From: support@example.com\r\nTo: Bob Builder <${BOB}>\r\nSubject: Re: Invoice\r\n\r\nHi Bob\r\n`);
    mkdirSync(join(dataDir, 'quarantine'), { recursive: true });
    writeFileSync(join(dataDir, 'quarantine', 'q1.eml'), `From: ${NAME} <${EMAIL}>\r\nSubject: spam?\r\n\r\nbuy now\r\n`);
    writeFileSync(join(dataDir, 'quarantine', 'q1.json'), JSON.stringify({ reason: 'spam', envelope: { mailFrom: EMAIL } }));

    expect(hits(dataDir, EMAIL).length).toBeGreaterThan(3);

    // ---- without --yes: a plan, nothing changes ---------------------------------------------
    const dry = keel(['customer', 'erase', EMAIL, '--json'], env);
    expect(dry.code, dry.stderr + dry.stdout).toBe(0);
    const plan = JSON.parse(dry.stdout) as { erased: boolean; plan: { customerId: string; entities: Record<string, number> } };
    expect(plan).toMatchObject({ erased: false, plan: { customerId: ada, entities: { customer: 1, ticket: 2, workflow_run: 1 } } });
    expect(hits(dataDir, EMAIL)).toContain(join(dataDir, 'outbox', 'key-k1.eml'));

    // ---- erase -------------------------------------------------------------------------------
    const t0 = performance.now();
    const run = keel(['customer', 'erase', EMAIL, '--yes', '--json', '--reason', 'GDPR request 42'], env);
    const ms = Math.round(performance.now() - t0);
    expect(run.code, run.stderr + run.stdout).toBe(0);
    const { report } = JSON.parse(run.stdout) as { report: { state: { entities: Record<string, number>; events: number; records: Record<string, number> }; memory: { removed: number }; files: Record<string, number>; compact: { vacuumed: boolean; walTruncated: boolean }; auditSeq: number; memoryFile?: { vacuumed: boolean } } };
    expect(report.state.entities).toEqual({ customer: 1, ticket: 2, workflow_run: 1 });
    // customer: created + 5 updates; tickets: created + messages + summaries + suggestion; the run's created
    expect(report.state.events).toBe(6 + (1 + 4 * 2 + 1) + (1 + 2 * 2 + 1) + 1);
    expect(report.state.records).toMatchObject({ audit: 1, auditUnerasable: 0, approvals: 1, idempotency: 2, costs: 1 });
    expect(report.memory).toEqual({ removed: 2 });
    expect(report.files).toEqual({ outbox: 1, quarantine: 2, attachments: 1 });
    expect(report.compact).toMatchObject({ vacuumed: true, walTruncated: true });
    expect(report.memoryFile).toMatchObject({ vacuumed: true });
    console.log(`erase: ${ms} ms for the CLI process; store ${report.state.events} events rewritten`);

    // ---- no byte of her address or name anywhere under the data dir ------------------------
    expect(hits(dataDir, EMAIL)).toEqual([]);
    expect(hits(dataDir, EMAIL.toUpperCase())).toEqual([]);
    expect(hits(dataDir, NAME)).toEqual([]);
    expect(hits(dataDir, KETTLE)).toEqual([]);
    // the WAL was emptied: what was there before the erasure is gone too
    for (const wal of ['keel.db-wal', 'memory.db-wal']) if (existsSync(join(dataDir, wal))) expect(statSync(join(dataDir, wal)).size).toBe(0);
    // Bob is untouched
    expect(hits(dataDir, BOB).map((f) => f.slice(dataDir.length + 1)).sort()).toEqual(expect.arrayContaining(['keel.db', 'outbox/key-k2.eml']));

    // ---- what stays: ids, amounts, structure; the audit log verifies ---------------------------
    const after = await openStore(state, { types: ALL_ENTITY_TYPES });
    try {
      const c = await after.get('customer', ada);
      // a valid tombstone: the same address writing again is attached to it (intake updates it)
      expect(c).toMatchObject({ deleted: false, state: { name: '[erased]', status: 'active', tags: [] } });
      expect(c!.state).not.toHaveProperty('email');
      expect((await after.history('customer', ada)).slice(-2).map((e) => e.type)).toEqual(['erased', 'updated']);
      await after.append('customer', ada, c!.version, [{ type: 'updated', data: { tags: ['email'] } }], { actor });
      const t = await after.get<TicketState>('ticket', 'tkt-ada-1');
      expect(t!.state).toMatchObject({ customerId: ada, subject: '[erased]', customerEmail: '[erased]', summary: '[erased]' });
      expect(t!.state.messages).toHaveLength(4);
      expect(t!.state.messages[0]).toMatchObject({ id: 'm0', direction: 'in', from: '[erased]', text: '[erased]' });
      expect((await after.get<TicketState>('ticket', 'tkt-bob-1'))!.state).toMatchObject({ customerEmail: BOB, subject: 'Refund for Bob Builder' });
      const costs = await after.costs({ customerId: ada, records: 5 });
      expect(costs.totals).toMatchObject({ count: 1, costUsd: 0.42, tokensIn: 1200, tokensOut: 300 });
      expect(costs.records[0]!.details).toEqual({ tier: 1, prompt: '[erased]' });
      expect((await after.getApproval('ap-ada'))!.payload).toEqual({ ticketId: 'tkt-ada-1', to: '[erased]', text: '[erased]' });
      expect((await after.getIdempotency('effect:message.send:k1:send'))!.result).toMatchObject({ to: '[erased]', messageId: '<r1@keel>' });
    } finally {
      await after.close();
    }
    const mem = await openMemory(`sqlite-vec:${join(dataDir, 'memory.db')}`, { embeddings: createEmbeddings({ spec: 'hashing:64', modelsDir: dataDir, modelEnv: {} }) });
    try {
      expect(await mem.get('m-ada-1')).toBeNull();
      expect(await mem.get('m-ada-2')).toBeNull();
      expect(await mem.get('m-bob-1')).not.toBeNull();
      const recalled = (await mem.search({ text: 'Ada Lovelace refund', limit: 10 })).map((h) => h.memory.id);
      expect(recalled.filter((id) => id.startsWith('m-ada'))).toEqual([]);
    } finally {
      await mem.close();
    }

    const verify = keel(['audit', 'verify', '--json'], env);
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
    expect(JSON.parse(verify.stdout)).toMatchObject({ ok: true, records: 3, erased: 1 });
    const audit = keel(['audit', 'export'], env).stdout.trim().split('\n').map((l) => JSON.parse(l) as AuditRecord);
    const erased = audit.find((r) => r.action === 'customer.erased')!;
    expect(erased).toMatchObject({ seq: report.auditSeq, actor: { kind: 'human', id: 'dpo' }, subject: `customer/${ada}`, details: { reason: 'GDPR request 42', found: true, entities: { customer: 1, ticket: 2 }, memory: { removed: 2 } } });
    expect(audit[0]).toMatchObject({ action: 'message.quarantined', details: { reason: 'spam', from: '[erased]' }, erased: { reason: 'GDPR request 42' } });
    expect(JSON.stringify(audit)).not.toContain(EMAIL);

    // a second erasure finds nothing personal left and keeps the chain whole
    const again = keel(['customer', 'erase', ada, '--yes', '--json'], env);
    expect(again.code, again.stderr + again.stdout).toBe(0);
    expect(JSON.parse(again.stdout).report.state.records).toMatchObject({ audit: 0, approvals: 0, idempotency: 0 });
    expect(JSON.parse(keel(['audit', 'verify', '--json'], env).stdout)).toMatchObject({ ok: true, records: 4 });
  }, 90_000);
});
