/**
 * `keel ticket retriage`, `keel triage examples`, `keel triage forget`, each run as a real
 * process against a real SQLite store (no engine: the retrain request says so).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { openStore, type StateStore } from '../../../shared-state/index.ts';
import { TICKET, TRIAGE_EXAMPLE, type TicketState } from '../../../agents/inbound/index.ts';
import { REPO_ROOT } from '../../../config/index.ts';
import { tempDir } from '../../../testkit/index.ts';
import { ALL_ENTITY_TYPES } from '../../helpers/types.ts';

let dir: ReturnType<typeof tempDir>;
let state: string;

function keel(args: string[]) {
  const r = spawnSync(process.execPath, [join(REPO_ROOT, 'cli', 'keel.ts'), ...args], {
    cwd: REPO_ROOT,
    // no engine: a port nothing listens on, so the retrain request fails at once
    env: { ...process.env, KEEL_STATE: state, KEEL_LOG_LEVEL: 'silent', KEEL_NATS_URL: 'nats://127.0.0.1:1', KEEL_OPERATOR: 'ada' },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- CLI JSON, asserted field by field
const json = (r: { stdout: string }) => JSON.parse(r.stdout) as Record<string, any>;
const withStore = async <T>(fn: (s: StateStore) => Promise<T>): Promise<T> => {
  const s = await openStore(state, { types: ALL_ENTITY_TYPES });
  try {
    return await fn(s);
  } finally {
    await s.close();
  }
};

beforeAll(async () => {
  dir = tempDir('keel-triage-cli-');
  state = `sqlite:${join(dir.path, 'keel.db')}`;
  await withStore((s) =>
    s.append(TICKET, 'tkt-0000000000000001', 0, [{ type: 'created', data: {
      subject: 'Winter break', status: 'open', priority: 'normal', channel: 'email', traceIds: [], tags: [],
      messages: [{ id: 'm1', direction: 'in', channel: 'email', from: 'mo@example.com', text: 'Please put our seats on hold from December until March.', at: new Date().toISOString() }],
      triage: { intent: 'question', urgency: 'normal', sentiment: 'neutral', entities: [], confidence: 0.55, tier: 0, escalate: false, reasons: ['intent question: request frame'] },
    } }], { actor: { kind: 'system', id: 'test' } }),
  );
});
afterAll(() => dir.remove());

describe('keel ticket retriage / keel triage', () => {
  it('retriage relabels the ticket and records an audited example; examples lists it; forget takes it out', async () => {
    const r = keel(['ticket', 'retriage', 'tkt-0000000000000001', '--intent', 'cancellation', '--urgency', 'low', '--no-escalate', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const out = json(r);
    expect(out).toMatchObject({ ticketId: 'tkt-0000000000000001', messageId: 'm1', previous: { intent: 'question' }, triage: { intent: 'cancellation', urgency: 'low', escalate: false }, retrain: { queued: false } });
    const id = out.example.id as string;
    expect(id).toMatch(/^tex-[0-9a-f]{16}$/);

    await withStore(async (s) => {
      const t = (await s.get<TicketState>(TICKET, 'tkt-0000000000000001'))!.state;
      expect(t.triage).toMatchObject({ intent: 'cancellation', urgency: 'low', confidence: 1 });
      expect(t.triage!.reasons[0]).toMatch(/^operator ada retriaged: intent cancellation, urgency low, no escalation \(was question, normal\)/);
      const h = await s.history(TRIAGE_EXAMPLE, id);
      expect(h.map((e) => [e.type, e.meta.actor])).toEqual([['created', { kind: 'human', id: 'ada' }]]);
    });

    const list = json(keel(['triage', 'examples', '--json']));
    expect(list.examples).toHaveLength(1);
    expect(list.examples[0]).toMatchObject({ id, intent: 'cancellation', source: 'retriage', by: 'ada', status: 'active', previous: { intent: 'question' }, ticketId: 'tkt-0000000000000001' });
    expect(keel(['triage', 'examples']).stdout).toContain(id);

    const f = keel(['triage', 'forget', id, '--json']);
    expect(f.code, f.stderr).toBe(0);
    expect(json(f)).toMatchObject({ id, status: 'forgotten', forgottenBy: 'ada' });
    expect(json(keel(['triage', 'examples', '--json'])).examples).toEqual([]);
    expect(json(keel(['triage', 'examples', '--all', '--json'])).examples[0]).toMatchObject({ id, status: 'forgotten' });
  });

  it('retriage while the ticket keeps changing (an agent appending to it): every retriage lands, on top of the latest version', async () => {
    const id = 'tkt-0000000000000002';
    const keelAsync = (args: string[]) =>
      new Promise<{ code: number | null; out: string }>((resolve) => {
        const c = spawn(process.execPath, [join(REPO_ROOT, 'cli', 'keel.ts'), ...args], { cwd: REPO_ROOT, env: { ...process.env, KEEL_STATE: state, KEEL_LOG_LEVEL: 'silent', KEEL_NATS_URL: 'nats://127.0.0.1:1', KEEL_OPERATOR: 'ada' } });
        let out = '';
        c.stdout.on('data', (d: Buffer) => (out += d.toString()));
        c.stderr.on('data', (d: Buffer) => (out += d.toString()));
        c.once('close', (code) => resolve({ code, out }));
      });
    const s = await openStore(state, { types: ALL_ENTITY_TYPES });
    try {
      await s.append(TICKET, id, 0, [{ type: 'created', data: {
        subject: 'Seats', status: 'open', priority: 'normal', channel: 'email', traceIds: [], tags: [],
        messages: [{ id: 'm1', direction: 'in', channel: 'email', from: 'jo@example.com', text: 'Where is my order?', at: new Date().toISOString() }],
      } }], { actor: { kind: 'system', id: 'test' } });
      // another writer, like an agent working on the ticket: an append every few milliseconds until the retriages are done
      let busy = true;
      let writes = 0;
      const writer = (async () => {
        while (busy) {
          const t = await s.get<TicketState>(TICKET, id);
          await s.append(TICKET, id, t!.version, [{ type: 'updated', data: { tags: [`w${writes}`] } }], { actor: { kind: 'agent', id: 'sender' } }).then(() => writes++, () => undefined);
          await new Promise((r) => setTimeout(r, 5));
        }
      })();
      const runs = await Promise.all(['bug', 'billing', 'question'].map((intent) => keelAsync(['ticket', 'retriage', id, '--intent', intent, '--json'])));
      busy = false;
      await writer;
      for (const r of runs) expect(r.code, r.out).toBe(0);
      expect(writes).toBeGreaterThan(0);
      const triaged = (await s.history(TICKET, id)).filter((e) => e.type === 'triaged');
      expect(triaged.map((e) => (e.data as { intent: string }).intent).sort()).toEqual(['billing', 'bug', 'question']);
      expect(triaged.every((e) => e.meta.actor.id === 'ada')).toBe(true);
    } finally {
      await s.close();
    }
  });

  it('errors are clear, with codes, and --help documents the commands', () => {
    const bad = keel(['ticket', 'retriage', 'tkt-0000000000000001', '--intent', 'nonsense', '--json']);
    expect(bad.code).toBe(1);
    expect(json(bad)).toMatchObject({ error: 'CLI_BAD_ARGUMENT', option: '--intent' });
    const missing = keel(['ticket', 'retriage', 'tkt-nope', '--intent', 'bug', '--json']);
    expect(missing.code).toBe(1);
    expect(json(missing)).toMatchObject({ error: 'TICKET_NOT_FOUND' });
    expect(json(keel(['triage', 'forget', 'tex-nope', '--json']))).toMatchObject({ error: 'NOT_FOUND' });
    expect(keel(['ticket', 'retriage', '--help']).stdout).toMatch(/--intent <intent>[\s\S]*--no-escalate/);
    expect(keel(['triage', '--help']).stdout).toMatch(/examples[\s\S]*forget/);
  });
});
