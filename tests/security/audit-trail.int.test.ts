/**
 * The audit trail (issue 14): one SQLite store shared by real processes — `keel start` twice
 * (policy change), the sender agent on a real nats-server (email and chat sends, the secret it
 * reads), `keel budget set|clear` and `keel customer erase` — then `keel audit export` as JSON
 * Lines and as CSV (parsed back, and each v2 record's hash recomputed from the CSV alone), and
 * `keel audit verify` green after all of it.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InMemorySpanExporter } from '@opentelemetry/sdk-trace-base';
import { REPO_ROOT, loadConfig } from '../../config/index.ts';
import { connectBus, createBus, defineMessage } from '../../bus/index.ts';
import { auditHash, openStore, type AuditRecord } from '../../shared-state/index.ts';
import { createCapabilityTestKit, runAgent, taskType } from '../../runtime/index.ts';
import { LAUNCH_ENTITY_TYPES } from '../../agents/launch/index.ts';
import { recallEmails, sendEmails } from '../../agents/launch/publishing.ts';
import { initTelemetry } from '../../observability/index.ts';
import senderAgent, { SendInput } from '../../agents/inbound/sender.ts';
import { closeMailSenders } from '../../agents/inbound/mail.ts';
import { customerIdFor } from '../../agents/inbound/index.ts';
import { AUDIT_CSV_COLUMNS, csvField, csvLine } from '../../cli/commands/state.ts';
import { startEngineProcess, startNats, tempDir, uniqueName, waitFor, type NatsHandle } from '../helpers/index.ts';
import { ALL_ENTITY_TYPES } from '../helpers/types.ts';

let nats: NatsHandle | undefined;
let skip = '';
const dir = tempDir('keel-audit-trail-');
const closers: Array<() => Promise<unknown>> = [];
beforeAll(async () => {
  const n = await startNats();
  if (n.ok) nats = n.server;
  else skip = n.reason;
});
afterAll(async () => {
  for (const c of closers.reverse()) await c().catch(() => undefined);
  await closeMailSenders();
  await nats?.stop();
  dir.remove();
});

const EMAIL = 'grace.hopper@example.org';
const SECRET = 'smtp-pw-7f3a91';

function keel(args: string[], env: Record<string, string>) {
  const r = spawnSync(process.execPath, ['--no-warnings', join(REPO_ROOT, 'cli', 'keel.ts'), ...args], { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** RFC 4180 parser (quoted fields with doubled quotes, commas and line breaks inside quotes, CRLF records). */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (ch === '"') quoted = false;
      else field += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ',') {
      row.push(field);
      field = '';
    } else if (ch === '\r' && text[i + 1] === '\n') {
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
      i++;
    } else field += ch;
  }
  if (field !== '' || row.length) throw new Error('CSV does not end with CRLF');
  return rows;
}

describe('CSV quoting', () => {
  it('quotes only what needs it and parses back to the same fields', () => {
    const fields = ['plain', 'a,b', 'say "hi"', 'line\nbreak', 'cr\r\nlf', ' lead', 'trail ', '', '{"to":"x, y"}', 'ünïcödé'];
    expect(fields.map(csvField)).toEqual(['plain', '"a,b"', '"say ""hi"""', '"line\nbreak"', '"cr\r\nlf"', '" lead"', '"trail "', '', '"{""to"":""x, y""}"', 'ünïcödé']);
    expect(parseCsv(csvLine(fields) + csvLine(['x']))).toEqual([fields, ['x']]);
  });
});

describe('launch emails in the audit trail', () => {
  it('a launch email task records one email.sent with the count of mails it sent (a redelivery records nothing); its recall records the recall', async () => {
    const kit = await createCapabilityTestKit({ entities: LAUNCH_ENTITY_TYPES, agent: 'marketer' });
    closers.push(() => kit.close());
    const op = { actor: { kind: 'human' as const, id: 'op' } };
    const at = '2030-01-01T09:00:00.000Z';
    await kit.store.append('product', 'kit', 0, [{ type: 'created', data: { name: 'Kite Kit', pitch: 'A kite.', audience: 'parents', subscribers: ['a@example.com', 'b@example.com', 'c@example.com'] } }], op);
    await kit.store.append('content_asset', 'kit-email-1', 0, [{ type: 'created', data: { productId: 'kit', kind: 'email', slot: 'email-1', title: 'Kite Kit is here', status: 'approved', current: 1, approvedVersion: 1, versions: [{ version: 1, title: 'Kite Kit is here', body: 'Hi!', by: 'agent:writer', at, tier: 0 }] } }], op);
    const r = await kit.run(sendEmails, { productId: 'kit', slot: 'email-1' }, { idempotencyKey: 'send-1' });
    await kit.run(sendEmails, { productId: 'kit', slot: 'email-1' }, { idempotencyKey: 'send-1' });
    await kit.run(recallEmails, r.output, { idempotencyKey: 'recall-1' });
    const sent = (await kit.store.exportAudit()).filter((a) => a.action === 'email.sent');
    expect(sent.map((a) => [a.actor, a.subject, a.details.kind, a.details.recipients, a.details.total])).toEqual([
      [{ kind: 'agent', id: 'marketer' }, 'product/kit', 'launch', 3, 3],
      [{ kind: 'agent', id: 'marketer' }, 'product/kit', 'recall', 3, 3],
    ]);
    expect(JSON.stringify(sent)).not.toContain('@example.com');
    expect((await kit.store.verifyAudit()).ok).toBe(true);
  });
});

describe('the audit trail', () => {
  it('records sends, secret reads, budget and policy changes and an erasure with their actors; exports as JSONL and CSV; verifies', async (ctx) => {
    if (!nats) return ctx.skip(skip);
    const dataDir = join(dir.path, 'data');
    mkdirSync(dataDir, { recursive: true });
    const cli = { KEEL_DATA_DIR: dataDir, KEEL_EMBEDDINGS: 'hashing:64', KEEL_OPERATOR: 'grace-op', KEEL_LOG_LEVEL: 'error' };
    const state = `sqlite:${join(dataDir, 'keel.db')}`;
    const customerId = customerIdFor({ email: EMAIL })!;

    // ---- policy changes: recorded at engine start when KEEL_POLICY_* differ from the last record
    const starts: Array<Record<string, string>> = [{ KEEL_POLICY_MESSAGE_SEND: 'approve' }, { KEEL_POLICY_MESSAGE_SEND: 'audit', KEEL_POLICY_LAUNCH_PUBLISH: 'approve' }, { KEEL_POLICY_LAUNCH_PUBLISH: 'approve', KEEL_POLICY_MESSAGE_SEND: 'audit' }];
    for (const policies of starts) {
      const e = await startEngineProcess({ ...policies, KEEL_LOG_LEVEL: 'warn', KEEL_EMBEDDINGS: 'hashing:64' }, { dataDir });
      expect(await e.stop()).toBe(0);
    }

    // ---- sends and the secret read: the sender agent on a real bus -----------------------------
    const spans = new InMemorySpanExporter();
    const tel = initTelemetry({ serviceName: 'audit-trail-test', exporter: spans });
    closers.push(() => tel.shutdown());
    const prefix = uniqueName('aud');
    const nc = await connectBus({ servers: nats!.url });
    closers.push(() => nc.close());
    const bus = createBus(nc, { prefix });
    await bus.provision();
    const store = await openStore(state, { types: ALL_ENTITY_TYPES });
    const at = new Date().toISOString();
    const actor = { kind: 'agent', id: 'intake' } as const;
    await store.append('customer', customerId, 0, [{ type: 'created', data: { name: 'Grace Hopper', email: EMAIL, tags: ['handle:grace42'] } }], { actor });
    for (const id of ['tkt-mail-1', 'tkt-mail-2']) {
      await store.append('ticket', id, 0, [{ type: 'created', data: { subject: 'Order status', channel: 'email', customerId, customerEmail: EMAIL, messages: [{ id: 'm1', direction: 'in', channel: 'email', from: EMAIL, subject: 'Order status', text: 'Where is my order?', at, messageId: `<${id}@example.org>` }] } }], { actor });
    }
    await store.append('ticket', 'tkt-chat-1', 0, [{ type: 'created', data: { subject: 'Chat', channel: 'chat', customerId, customerHandle: 'grace42', messages: [{ id: 'c1', direction: 'in', channel: 'chat', from: 'grace42', text: 'hi, any news?', at }] } }], { actor });
    const agent = await runAgent(senderAgent, { natsUrl: nats!.url, state: store, prefix, secrets: { SMTP_PASSWORD: SECRET }, config: loadConfig({ ...process.env, KEEL_DATA_DIR: dataDir, KEEL_LOG_LEVEL: 'warn', KEEL_SMTP_RELAY: undefined }) });
    closers.push(() => agent.stop(1_000));
    const Send = defineMessage(taskType('message.send'), SendInput);
    for (const ticketId of ['tkt-mail-1', 'tkt-mail-2', 'tkt-chat-1']) {
      await bus.publish(bus.subjects.task('message.send'), Send, { ticketId, text: 'Your order ships today.', approvedBy: 'grace-op' }, { idempotencyKey: `send-${ticketId}`, customer: customerId });
    }
    const sent = async () => (await store.exportAudit()).filter((r) => r.action === 'email.sent' || r.action === 'chat.sent');
    await waitFor(async () => (await sent()).length === 3, { timeoutMs: 30_000, what: 'three audited sends' });
    // the secret.read append is fire-and-forget: give it its turn
    await waitFor(async () => (await store.exportAudit()).some((r) => r.action === 'secret.read'), { timeoutMs: 10_000, what: 'the secret read' });
    await agent.stop(1_000);
    await store.close();

    // ---- budget changes and the erasure, through the CLI ------------------------------------------
    for (const args of [['budget', 'set', '--customer', EMAIL, '--usd', '5', '--period', 'month'], ['budget', 'set', '--customer', EMAIL, '--usd', '7.5', '--period', 'month', '--soft'], ['budget', 'clear', '--customer', EMAIL, '--period', 'month']]) {
      const r = keel([...args, '--json'], cli);
      expect(r.code, r.stderr + r.stdout).toBe(0);
    }
    const erase = keel(['customer', 'erase', EMAIL, '--yes', '--json', '--reason', 'erasure request 9'], cli);
    expect(erase.code, erase.stderr + erase.stdout).toBe(0);

    // ---- the export --------------------------------------------------------------------------------
    const ex = keel(['audit', 'export'], cli);
    expect(ex.code, ex.stderr).toBe(0);
    const recs = ex.stdout.trim().split('\n').map((l) => JSON.parse(l) as AuditRecord);
    const of = (action: string) => recs.filter((r) => r.action === action);
    console.log(`audit trail: ${recs.length} records: ${[...new Set(recs.map((r) => r.action))].map((a) => `${a} ${of(a).length}`).join(', ')}`);

    const policy = of('policy.changed');
    expect(policy).toHaveLength(2); // the third start changed nothing
    expect(policy[0]).toMatchObject({ actor: { kind: 'system', id: 'engine' }, details: { before: null, after: { 'message.send': 'approve' } } });
    expect(policy[1]).toMatchObject({ details: { before: { 'message.send': 'approve' }, after: { 'message.send': 'audit', 'launch.publish': 'approve' }, added: ['launch.publish'], changed: ['message.send'] } });

    const mails = of('email.sent');
    expect(mails.map((r) => r.subject).sort()).toEqual(['ticket/tkt-mail-1', 'ticket/tkt-mail-2']);
    for (const m of mails) {
      expect(m).toMatchObject({ actor: { kind: 'agent', id: 'sender' }, details: { recipients: 1, customerId, messageId: expect.stringMatching(/^<.+>$/) } });
      expect(m.details.traceId).toMatch(/^(?!0{32})[0-9a-f]{32}$/);
    }
    // the trace id is the task's: a span of that trace was recorded
    const traceIds = new Set(spans.getFinishedSpans().map((s) => s.spanContext().traceId));
    expect(traceIds.has(mails[0]!.details.traceId as string)).toBe(true);
    expect(of('chat.sent')).toEqual([expect.objectContaining({ subject: 'ticket/tkt-chat-1', actor: { kind: 'agent', id: 'sender' }, details: expect.objectContaining({ recipients: 1, customerId }) })]);
    // read by two tasks, recorded once per process; the name, never the value
    expect(of('secret.read')).toEqual([expect.objectContaining({ actor: { kind: 'agent', id: 'sender' }, subject: 'secret/SMTP_PASSWORD', details: expect.objectContaining({ secret: 'SMTP_PASSWORD', capability: 'message.send' }) })]);
    expect(ex.stdout).not.toContain(SECRET);

    const budget = of('budget.changed');
    const op = { kind: 'human', id: process.env.USER ?? 'operator' };
    expect(budget.map((r) => [r.actor, r.details.before, r.details.after])).toEqual([
      [op, null, { limitUsd: 5, mode: 'hard' }],
      [op, { limitUsd: 5, mode: 'hard' }, { limitUsd: 7.5, mode: 'soft' }],
      [op, { limitUsd: 7.5, mode: 'soft' }, null],
    ]);
    expect(budget[0]).toMatchObject({ subject: `budget/customer/${customerId}`, details: { scope: 'customer', key: customerId, period: 'month' } });

    expect(of('customer.erased')).toEqual([expect.objectContaining({ actor: { kind: 'human', id: 'grace-op' }, subject: `customer/${customerId}`, details: expect.objectContaining({ reason: 'erasure request 9', entities: { ticket: 3, customer: 1 } }) })]);
    // erasure leaves no address in the log, and nothing above held one
    expect(ex.stdout).not.toContain(EMAIL);
    expect(recs.filter((r) => r.erased)).toEqual([]);

    // ---- CSV: same records, parsed back; each hash recomputed from the CSV alone ------------------
    const csv = keel(['audit', 'export', '--format', 'csv'], cli);
    expect(csv.code, csv.stderr).toBe(0);
    const rows = parseCsv(csv.stdout);
    expect(rows[0]).toEqual([...AUDIT_CSV_COLUMNS]);
    expect(rows).toHaveLength(recs.length + 1);
    for (const [i, row] of rows.slice(1).entries()) {
      const o = Object.fromEntries(AUDIT_CSV_COLUMNS.map((c, j) => [c, row[j]!]));
      const r = recs[i]!;
      expect(o).toMatchObject({ seq: String(r.seq), time: r.time, actor_kind: r.actor.kind, actor_id: r.actor.id, action: r.action, subject: r.subject, prev_hash: r.prevHash, hash: r.hash, version: '2' });
      expect(JSON.parse(o.details!)).toEqual(r.details);
      expect(auditHash({ v: 2, seq: Number(o.seq), time: o.time!, actor: { kind: o.actor_kind as 'agent', id: o.actor_id! }, action: o.action!, subject: o.subject!, details: {}, detailsDigest: o.details_digest!, prevHash: o.prev_hash! })).toBe(o.hash);
    }
    expect(keel(['audit', 'export', '--format', 'xml', '--json'], cli)).toMatchObject({ code: 1, stdout: expect.stringContaining('STATE_INVALID_QUERY') });

    const v = keel(['audit', 'verify', '--json'], cli);
    expect(v.code, v.stdout + v.stderr).toBe(0);
    expect(JSON.parse(v.stdout)).toMatchObject({ ok: true, records: recs.length });
  }, 120_000);
});
