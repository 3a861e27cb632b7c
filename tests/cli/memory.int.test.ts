/**
 * `keel memory` against a running engine (`keel start` as a process, with the intake and
 * memorizer agents): email arrives over real SMTP (nodemailer as the client), the memory agent
 * writes memories from the change log through its triggered workflows, and the CLI recalls,
 * shows provenance, changes the policy (audited) and forgets a customer (audited, the audit
 * chain intact). Uses the real default embedder; skips, saying so, when it is not provisioned.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { loadConfig, REPO_ROOT } from '../../config/index.ts';
import { localMiniLMPresent } from '../../memory/index.ts';
import { startEngineProcess, waitFor, type EngineProcess } from '../helpers/index.ts';

const cfg = loadConfig();
const provisioned = await localMiniLMPresent(cfg.modelsDir);
const skip = provisioned ? '' : `the default embedding model is not provisioned in ${cfg.modelsDir} (run npm run provision)`;
let engine: EngineProcess | undefined;

function keel(args: string[]) {
  const r = spawnSync(process.execPath, [join(REPO_ROOT, 'cli', 'keel.ts'), ...args], {
    env: { ...process.env, KEEL_DATA_DIR: engine!.dataDir, KEEL_STATE: '', KEEL_MEMORY: '', KEEL_NATS_PORT: String(engine!.natsPort), KEEL_LOG_LEVEL: 'silent', KEEL_OPERATOR: 'ada' },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, json: <T = Record<string, unknown>>() => JSON.parse(r.stdout) as T };
}

async function send(from: string, subject: string, text: string): Promise<void> {
  const t = nodemailer.createTransport({ host: '127.0.0.1', port: engine!.smtpPort, secure: false, ignoreTLS: true });
  try {
    await t.sendMail({ from, to: 'support@keel.local', subject, text });
  } finally {
    t.close();
  }
}

interface Hit { id: string; text: string; score: number; kind: string; customerId: string | null; entityId: string | null; source: { entityType: string | null; entityId: string | null; eventIds: string[] }; createdAt: string; components?: Record<string, number> }

beforeAll(async () => {
  if (skip) return;
  engine = await startEngineProcess({ KEEL_AGENTS: 'intake,memorizer', KEEL_LOG_LEVEL: 'warn', KEEL_MEMORY: '' });
}, 120_000);
afterAll(async () => {
  if (engine) {
    await engine.stop('SIGINT');
    engine.cleanup();
  }
});

describe('keel memory against a running engine', () => {
  let alice: Hit | undefined;

  it('two emails of one customer on different topics plus noise from others: a paraphrase of the first recalls it on top, with its provenance', async (ctx) => {
    if (skip) return ctx.skip(skip);
    await send('Alice Smith <alice@example.com>', 'Refund for order 1234', 'Hello, I was charged twice for order 1234. Please refund the second charge.');
    await send('Alice Smith <alice@example.com>', 'Label printer setup', 'How do I connect the label printer to the office wifi? It does not show up in the list.');
    await send('Bob <bob@example.com>', 'Invoice copy', 'Could you send me a copy of my last invoice? I was charged and need it for my taxes.');
    await send('Carol <carol@example.com>', 'Refund of my subscription', 'Please refund my annual subscription, I cancelled it yesterday.');
    // the memorizer writes one memory per inbound message (through the triggered workflows)
    await waitFor(() => keel(['memory', 'search', 'customer message', '--limit', '20', '--json']).json<Hit[]>().length >= 4, { timeoutMs: 90_000, intervalMs: 1_000, what: 'four memories' });

    const r = keel(['memory', 'search', 'I paid two times for my purchase and want the money back', '--customer', 'alice@example.com', '--explain', '--json']);
    expect(r.code).toBe(0);
    const hits = r.json<Hit[]>();
    expect(hits.length).toBe(2); // only alice's
    alice = hits[0]!;
    expect(alice.text).toContain('charged twice for order 1234');
    expect(alice.kind).toBe('message');
    expect(alice.score).toBeGreaterThan(hits[1]!.score);
    expect(alice.components!.vector).toBeGreaterThan(hits[1]!.components!.vector!);
    // provenance: the ticket, the change-log event it was written from, the customer
    const tickets = keel(['tickets', '--customer', 'alice@example.com', '--json']).json<{ tickets: Array<{ id: string; subject: string }>; customer: { id: string } }>();
    const refundTicket = tickets.tickets.find((t) => t.subject === 'Refund for order 1234')!;
    expect(alice.entityId).toBe(refundTicket.id);
    expect(alice.customerId).toBe(tickets.customer.id);
    const history = keel(['entity', 'show', refundTicket.id, '--type', 'ticket', '--history', '--json']).json<{ events: Array<{ eventId: string; type: string }> }>().events;
    expect(alice.source).toEqual({ entityType: 'ticket', entityId: refundTicket.id, eventIds: [history.find((e) => e.type === 'message_added')!.eventId] });
    const shown = keel(['memory', 'show', alice.id, '--json']).json<{ writtenBy: string; embedding: { model: string; dim: number }; meta: { subject: string } }>();
    expect(shown).toMatchObject({ writtenBy: 'memorizer', embedding: { model: 'local:all-minilm-l6-v2', dim: 384 }, meta: { subject: 'Refund for order 1234' } });
    expect(keel(['memory', 'show', alice.id]).stdout).toMatch(/written by memorizer/);
    expect(keel(['memory', 'show', 'mem-nope', '--json']).json()).toMatchObject({ error: 'MEMORY_NOT_FOUND' });
  }, 180_000);

  it('`keel memory policy` says what is kept and why; `policy set` changes it, audited', async (ctx) => {
    if (skip) return ctx.skip(skip);
    const p = keel(['memory', 'policy', '--json']).json<{ policies: Array<{ entityType: string; rawDays: number; source: string; remembered: string[]; memories: { active: number } }> }>();
    const ticket = p.policies.find((x) => x.entityType === 'ticket')!;
    expect(ticket).toMatchObject({ rawDays: 30, source: 'default' });
    expect(ticket.remembered).toContain('ticket.message_added');
    expect(ticket.memories.active).toBeGreaterThanOrEqual(4);
    const set = keel(['memory', 'policy', 'set', '--type', 'ticket', '--raw-days', '7', '--json']).json<{ changed: boolean; after: { rawDays: number; updatedBy: string } }>();
    expect(set).toMatchObject({ changed: true, after: { rawDays: 7, updatedBy: 'human:ada' } });
    expect(keel(['memory', 'policy']).stdout).toMatch(/raw messages kept 7 day\(s\), then summarized \(set by human:ada/);
    expect(keel(['memory', 'policy', 'set', '--type', 'ticket', '--raw-days', '400', '--json']).json()).toMatchObject({ error: 'MEMORY_BAD_POLICY' });
  }, 120_000);

  it('`keel memory forget --customer` removes every memory of that customer, records it in the audit log, and the chain stays intact', async (ctx) => {
    if (skip || !alice) return ctx.skip(skip || 'needs the first test');
    const f = keel(['memory', 'forget', '--customer', 'alice@example.com', '--json']);
    expect(f.code).toBe(0);
    expect(f.json()).toMatchObject({ removed: 2, selector: { customer: 'alice@example.com', customerId: alice.customerId } });
    expect(keel(['memory', 'search', 'I paid two times for my purchase and want the money back', '--customer', 'alice@example.com', '--json']).json<Hit[]>()).toEqual([]);
    const everyone = keel(['memory', 'search', 'charged twice refund order printer wifi', '--limit', '50', '--json']).json<Hit[]>();
    expect(everyone.length).toBe(2); // bob's and carol's stay
    expect(everyone.some((h) => h.customerId === alice!.customerId)).toBe(false);
    expect(keel(['memory', 'show', alice.id, '--json']).json()).toMatchObject({ error: 'MEMORY_NOT_FOUND' });
    const audit = keel(['audit', 'export']).stdout.trim().split('\n').map((l) => JSON.parse(l) as { action: string; subject: string; details: Record<string, unknown>; actor: { id: string } });
    expect(audit.find((a) => a.action === 'memory.forgotten')).toMatchObject({ subject: `customer/${alice.customerId}`, actor: { id: 'ada' }, details: { removed: 2 } });
    expect(audit.some((a) => a.action === 'memory.policy.changed')).toBe(true);
    const v = keel(['audit', 'verify', '--json']);
    expect(v.code).toBe(0);
    expect(v.json()).toMatchObject({ ok: true });
    expect(keel(['memory', 'forget', '--json']).json()).toMatchObject({ error: 'MEMORY_BAD_SELECTOR' });
  }, 120_000);
});
