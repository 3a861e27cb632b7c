/**
 * Issue #20, the operator's daily loop, with the engine run as processes (`keel start`, every
 * agent its own process), a real SMTP client (swaks), the CLI and the HTTP API:
 *
 * - a three-message email thread ends with one pending approval (the earlier ones superseded, and
 *   approving one is refused naming the current one) and one reply sent once it is approved;
 * - `keel approve ID --text ""` is refused (exit 1, HTTP 422 naming `text`);
 * - decisions keep their facts (who, when, the edited text, the reason) on every path;
 * - a run whose first task dead-letters fails within seconds with the reason, the operator is
 *   told, and `keel dlq list --json` shows the letter.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { REPO_ROOT } from '../../../config/index.ts';
import { startEngineProcess, waitFor, type EngineProcess } from '../../helpers/index.ts';

const hasSwaks = spawnSync('swaks', ['--version']).status === 0;
let engine: EngineProcess | undefined;
let skip = '';

function keel(args: string[]): { status: number | null; stdout: string; stderr: string; json: <T = Record<string, unknown>>() => T } {
  const r = spawnSync(process.execPath, [join(REPO_ROOT, 'cli', 'keel.ts'), ...args], {
    env: { ...process.env, KEEL_DATA_DIR: engine!.dataDir, KEEL_NATS_PORT: String(engine!.natsPort), KEEL_LOG_LEVEL: 'silent', KEEL_OPERATOR: 'ada' },
    encoding: 'utf8',
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, json: <T,>() => JSON.parse(r.stdout) as T };
}

const swaksArgs = (args: string[]) => ['--server', `127.0.0.1:${engine!.smtpPort}`, '--to', 'support@keel.local', ...args];
function swaks(args: string[]): string {
  const r = spawnSync('swaks', swaksArgs(args), { encoding: 'utf8' });
  return r.stdout + r.stderr;
}
/** swaks without waiting: for messages that arrive together */
function swaksAsync(args: string[]): Promise<string> {
  return new Promise((resolve) => {
    let out = '';
    const c = spawn('swaks', swaksArgs(args));
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr.on('data', (d: Buffer) => (out += d.toString()));
    c.once('close', () => resolve(out)); // 'close', not 'exit': exit can come before the last output is read
  });
}

interface Approval { id: string; state: string; correlationId: string; payload: { ticketId: string; text: string }; customer: string | null; about: string | null; firstLine: string | null; reason: string | null; text: string | null; decidedBy: { kind: string; id: string } | null; decidedAt: string | null }
const approvals = (state = 'pending') => keel(['approvals', '--state', state, '--json']).json<{ approvals: Approval[] }>().approvals;
interface Ticket { entityId: string; state: { customerEmail?: string; customerHandle?: string; messages: Array<{ direction: string; messageId?: string }> } }
const tickets = () => keel(['entity', 'list', '--type', 'ticket', '--json']).json<{ items: Ticket[] }>().items;
const auditOf = (subject: string) =>
  keel(['audit', 'export']).stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { action: string; subject: string; actor: { kind: string; id: string }; details: Record<string, unknown> }).filter((r) => r.subject === subject);
const emlsTo = (to: string) => {
  const outbox = join(engine!.dataDir, 'outbox');
  if (!existsSync(outbox)) return [];
  return readdirSync(outbox).filter((f) => f.endsWith('.eml')).map((f) => readFileSync(join(outbox, f), 'utf8')).filter((t) => new RegExp(`^To: ${to.replace(/\./g, '\\.')}$`, 'm').test(t));
};
/** POST on a fresh connection (a reused keep-alive socket can meet the server closing it: "other side closed"), as the engine's operator */
function post(path: string, body: unknown): Promise<{ status: number; json(): Promise<unknown> }> {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = request(`${engine!.httpUrl}${path}`, { method: 'POST', agent: false, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data), ...engine!.auth } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: async () => JSON.parse(text) as unknown }));
    });
    req.once('error', reject);
    req.end(data);
  });
}

beforeAll(async () => {
  if (!hasSwaks) {
    skip = 'swaks (Debian package) is not installed';
    return;
  }
  // the HTTP API's operator (its KEEL_OPERATOR_TOKEN) is bob; the CLI's (KEEL_OPERATOR of keel()) is ada
  engine = await startEngineProcess({ KEEL_AGENTS: '', KEEL_LOG_LEVEL: 'warn', KEEL_WORKFLOW_SWEEP_MS: '500', KEEL_OPERATOR: 'bob' });
  await waitFor(() => keel(['agents', '--json']).json<{ agents: unknown[] }>().agents.length >= 6, { timeoutMs: 60_000, intervalMs: 500, what: 'six agent processes' });
}, 180_000);

afterAll(async () => {
  if (engine) {
    await engine.stop('SIGINT');
    engine.cleanup();
  }
});

describe('the operator\'s daily loop', () => {
  it('a three-message thread: one live approval, the earlier ones superseded (and refused naming the current one), one reply once approved', async (ctx) => {
    if (!engine) return ctx.skip(skip);
    expect(swaks(['--from', 'carol@example.com', '--header', 'Subject: Invoice INV-77 is wrong', '--header', 'Message-Id: <t1-77@example.com>', '--body', 'Hello, invoice INV-77 charged me twice. Please fix it.'])).toMatch(/250 OK/);
    let first: Approval | undefined;
    await waitFor(() => !!(first = approvals().find((a) => a.customer === 'carol@example.com')), { timeoutMs: 60_000, intervalMs: 500, what: 'the first approval' });
    expect(first!.about).toBe('Invoice INV-77 is wrong');
    // the reply's first line that says something (the salutation is skipped)
    expect(first!.firstLine).toMatch(/invoice INV-77/i);

    // two more messages in the thread, together
    const outs = await Promise.all([
      swaksAsync(['--from', 'carol@example.com', '--header', 'Subject: Re: Invoice INV-77 is wrong', '--header', 'Message-Id: <t2-77@example.com>', '--header', 'In-Reply-To: <t1-77@example.com>', '--header', 'References: <t1-77@example.com>', '--body', 'Also, my order 5521 has not arrived yet.']),
      swaksAsync(['--from', 'carol@example.com', '--header', 'Subject: Re: Invoice INV-77 is wrong', '--header', 'Message-Id: <t3-77@example.com>', '--header', 'In-Reply-To: <t1-77@example.com>', '--header', 'References: <t1-77@example.com>', '--body', 'And please update my billing address to 5 Elm Street.']),
    ]);
    for (const o of outs) expect(o).toMatch(/250 OK/);
    const ticket = () => tickets().find((t) => t.state.customerEmail === 'carol@example.com')!;
    await waitFor(() => ticket()?.state.messages.filter((m) => m.direction === 'in').length === 3, { timeoutMs: 60_000, intervalMs: 500, what: 'three messages on one ticket' });
    expect(tickets().filter((t) => t.state.customerEmail === 'carol@example.com')).toHaveLength(1);
    const ticketId = ticket().entityId;
    // the runs settle: one waits for the operator, the others are superseded
    const runs = () => keel(['ticket', 'show', ticketId, '--json']).json<{ runs: Array<{ id: string; status: string; supersededBy: string | null }> }>().runs;
    await waitFor(() => {
      const r = runs();
      return r.length === 3 && r.filter((x) => x.status === 'superseded').length === 2 && approvals().filter((a) => a.payload.ticketId === ticketId).length === 1;
    }, { timeoutMs: 60_000, intervalMs: 500, what: 'one live approval for the thread' });
    const [current] = approvals().filter((a) => a.payload.ticketId === ticketId);
    expect(current!.id).not.toBe(first!.id);
    expect(approvals('superseded').map((a) => a.id)).toContain(first!.id);
    const old = keel(['approval', 'show', first!.id, '--json']).json<{ approval: Approval; current: { approvalId?: string } }>();
    expect(old.approval).toMatchObject({ state: 'superseded', reason: expect.stringMatching(/^new message .* on ticket tkt-/) });
    expect(old.current.approvalId).toBe(current!.id);

    // approving a superseded approval is refused, naming the current one
    const refused = keel(['approve', first!.id]);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toContain('WORKFLOW_APPROVAL_SUPERSEDED');
    expect(refused.stderr).toContain(`the current one is ${current!.id}`);
    const refusedJson = keel(['approve', first!.id, '--json']);
    expect(refusedJson.json()).toMatchObject({ error: 'WORKFLOW_APPROVAL_SUPERSEDED', current: current!.id });
    const http = await post(`/v1/approvals/${first!.id}`, { decision: 'approved' });
    expect(http.status).toBe(409);
    expect(await http.json()).toMatchObject({ error: 'WORKFLOW_APPROVAL_SUPERSEDED', current: current!.id });

    // the live suggestion answers the whole thread
    const shown = keel(['approval', 'show', current!.id, '--json']).json<{ reply: string; answers: Array<{ from: string; text: string }> }>();
    expect(shown.answers.map((m) => m.text)).toEqual(expect.arrayContaining([expect.stringContaining('INV-77'), expect.stringContaining('5521'), expect.stringContaining('Elm Street')]));
    expect(shown.reply).toMatch(/^(Hi|Hello)\b/);

    // an empty edit is refused before anything is recorded: exit 1 naming the field, HTTP 422
    const empty = keel(['approve', current!.id, '--text', '', '--json']);
    expect(empty.status).toBe(1);
    expect(empty.json()).toMatchObject({ error: 'WORKFLOW_INVALID_INPUT', issues: [expect.objectContaining({ path: 'text' })] });
    const emptyHttp = await post(`/v1/approvals/${current!.id}`, { decision: 'approved', text: '' });
    expect(emptyHttp.status).toBe(422);
    expect(await emptyHttp.json()).toMatchObject({ error: 'WORKFLOW_INVALID_INPUT', issues: [expect.objectContaining({ path: 'text' })] });
    expect(approvals().map((a) => a.id)).toContain(current!.id);

    // approved by a unique prefix of its id: exactly one reply goes out
    // …and the operator corrects the triage as they decide: the message becomes a labeled example
    const approved = keel(['approve', current!.id.slice(0, current!.id.length - 4), '--intent', 'billing', '--urgency', 'low', '--json']);
    expect(approved.status, approved.stderr + approved.stdout).toBe(0);
    expect(approved.json()).toMatchObject({ id: current!.id, applied: true, by: 'human:ada', retriaged: { ticketId, triage: { intent: 'billing', urgency: 'low', confidence: 1 }, example: { id: expect.stringMatching(/^tex-/) } } });
    const examples = keel(['triage', 'examples', '--json']).json<{ examples: Array<{ source: string; ticketId: string; intent: string; by: string }> }>().examples;
    expect(examples).toEqual(expect.arrayContaining([expect.objectContaining({ source: 'approval', ticketId, intent: 'billing', by: 'ada' })]));
    await waitFor(() => emlsTo('carol@example.com').length === 1, { timeoutMs: 30_000, what: 'one reply to carol' });
    await new Promise((r) => setTimeout(r, 1_500));
    expect(emlsTo('carol@example.com')).toHaveLength(1);
    expect(emlsTo('carol@example.com')[0]).toMatch(/^References: .*<t1-77@example\.com>/m);
    expect(keel(['approve', first!.id]).status).toBe(1);
    // one audit record of the applied decision (CLI: the actor is KEEL_OPERATOR), none of the refused ones
    expect(auditOf(`approval/${current!.id}`)).toEqual([expect.objectContaining({ action: 'approval.approved', actor: { kind: 'human', id: 'ada' }, details: expect.objectContaining({ approvalId: current!.id, runId: current!.correlationId }) })]);
    expect(auditOf(`approval/${first!.id}`)).toEqual([]);

    const t = keel(['ticket', 'show', ticketId, '--json']).json<{ messages: Array<{ direction: string }>; approvals: Array<{ id: string; state: string; by: string | null; decidedAt: string | null; reason: string | null }>; suggestion: { supersededAt?: string } }>();
    expect(t.messages.map((m) => m.direction)).toEqual(['in', 'in', 'in', 'out']);
    expect(t.approvals.find((a) => a.id === current!.id)).toMatchObject({ state: 'approved', by: 'human:ada', decidedAt: expect.any(String) });
    expect(t.approvals.find((a) => a.id === first!.id)).toMatchObject({ state: 'superseded', reason: expect.stringContaining('new message') });
    expect(t.suggestion.supersededAt).toBeUndefined();
    const why = keel(['why', ticketId]).stdout;
    expect(why).toMatch(/approval_superseded approve .*superseded by run/);
    expect(why).toMatch(/approval_decided approve approved by human:ada/);
  });

  it('decisions keep their facts over HTTP: the named operator, the time, the reason', async (ctx) => {
    if (!engine) return ctx.skip(skip);
    const r = await post('/v1/chat/messages', { customer: { handle: 'dave9', name: 'Dave' }, text: 'Do you ship to Norway?' });
    expect(r.status).toBe(202);
    let a: Approval | undefined;
    await waitFor(() => !!(a = approvals().find((x) => x.customer === 'dave9')), { timeoutMs: 60_000, intervalMs: 500, what: 'the chat approval' });
    // the decider is the authenticated operator: a self-asserted `by` is refused, not ignored
    const claimed = await post(`/v1/approvals/${a!.id}`, { decision: 'rejected', reason: 'x', by: 'mallory' });
    expect(claimed.status).toBe(422);
    expect(await claimed.json()).toMatchObject({ error: 'INVALID_REQUEST', issues: [expect.objectContaining({ path: 'by' })] });
    expect(approvals().map((x) => x.id)).toContain(a!.id);
    const ok = await post(`/v1/approvals/${a!.id}`, { decision: 'rejected', reason: 'answered by phone' });
    expect(ok.status).toBe(200);
    const shown = keel(['approval', 'show', a!.id, '--json']).json<{ approval: Approval }>().approval;
    expect(shown).toMatchObject({ state: 'rejected', decidedBy: { kind: 'human', id: 'bob' }, reason: 'answered by phone', decidedAt: expect.any(String) });
    expect(approvals('rejected').find((x) => x.id === a!.id)).toMatchObject({ reason: 'answered by phone' });
    const ticketId = a!.payload.ticketId;
    expect(keel(['ticket', 'show', ticketId, '--json']).json<{ approvals: Array<{ by: string; reason: string }> }>().approvals[0]).toMatchObject({ by: 'human:bob', reason: 'answered by phone' });
    const why = keel(['why', ticketId, '--json']).json<{ chain: Array<{ steps: Array<{ event: string; by: string; reason: string | null }> }> }>();
    expect(why.chain[0]!.steps.find((s) => s.event === 'approval_decided')).toMatchObject({ by: 'human:bob', reason: 'answered by phone' });
    // the decision is on the audit hash chain, by the authenticated operator
    expect(auditOf(`approval/${a!.id}`)).toEqual([expect.objectContaining({ action: 'approval.rejected', actor: { kind: 'human', id: 'bob' }, details: expect.objectContaining({ approvalId: a!.id, reason: 'answered by phone' }) })]);
    expect(keel(['audit', 'verify', '--json']).json()).toMatchObject({ ok: true });
  });

  it('bad input is refused before a run exists; a run whose first task dead-letters fails within seconds, tells the operator, and `keel dlq list` shows it', async (ctx) => {
    if (!engine) return ctx.skip(skip);
    const refused = keel(['run', 'start', 'inbound-message', '--input', '{}', '--json']);
    expect(refused.status).toBe(1);
    expect(refused.json()).toMatchObject({ error: 'WORKFLOW_INVALID_INPUT', issues: [expect.objectContaining({ path: 'message' })] });
    const http = await post('/v1/runs', { workflow: 'inbound-message', input: {} });
    expect(http.status).toBe(422);
    expect(await http.json()).toMatchObject({ error: 'WORKFLOW_INVALID_INPUT', issues: [expect.objectContaining({ path: 'input.message' })] });

    // a well-formed message that names nobody: intake refuses it for good (dead letter)
    const message = {
      id: randomUUID(), channel: 'email', receivedAt: new Date().toISOString(), customer: { name: 'Nobody' }, text: 'who am I?', references: [], headers: {}, attachments: [],
      flags: { autoReply: false, bulk: false, htmlOnly: false, encodingRepaired: false, attachmentsDropped: false, truncated: false, fromMismatch: false },
    };
    const t0 = Date.now();
    const started = keel(['run', 'start', 'inbound-message', '--input', JSON.stringify({ message }), '--json']);
    expect(started.status).toBe(0);
    const runId = started.json<{ runId: string }>().runId;
    const show = () => keel(['run', 'show', runId.slice(0, 12), '--json']).json<{ run: { id: string; status: string; error?: string; steps: Record<string, { status: string; deadLetter?: { reason: string; seq: number } }> } }>().run;
    await waitFor(() => show().status === 'failed', { timeoutMs: 15_000, intervalMs: 250, what: 'the run to fail' });
    expect(Date.now() - t0).toBeLessThan(10_000);
    const run = show();
    expect(run.id).toBe(runId);
    expect(run.error).toMatch(/step 'intake' failed: permanent_error: .*names no customer/);
    expect(run.steps.intake).toMatchObject({ status: 'failed', deadLetter: { reason: 'permanent_error' } });
    const dlq = keel(['dlq', 'list', '--json']).json<{ letters: Array<{ seq: number; capability: string; reason: string; run: { id: string; step: string } | null }> }>();
    const letter = dlq.letters.find((l) => l.run?.id === runId);
    expect(letter).toMatchObject({ capability: 'inbound.intake', reason: 'permanent_error', run: { step: 'intake' }, seq: run.steps.intake!.deadLetter!.seq });
    expect(keel(['dlq', 'show', String(letter!.seq), '--json']).json()).toMatchObject({ runState: { status: 'failed' } });
    expect(keel(['why', runId]).stdout).toMatch(/dead letter \d+ \(permanent_error\)/);
    // re-driven, the task runs again (and, still naming nobody, dead-letters again): recorded on the letter and the run
    const redrive = keel(['dlq', 'redrive', String(letter!.seq), '--json']);
    expect(redrive.status).toBe(0);
    expect(redrive.json()).toMatchObject({ seq: letter!.seq, run: { id: runId, step: 'intake', reopened: true } });
    type Letters = { letters: Array<{ seq: number; run: { id: string } | null; redriven: Array<{ by: string }> }> };
    await waitFor(() => keel(['dlq', 'list', '--json']).json<Letters>().letters.filter((l) => l.run?.id === runId).length === 2, { timeoutMs: 15_000, what: 'the second dead letter' });
    expect(keel(['dlq', 'list', '--json']).json<Letters>().letters.find((l) => l.seq === letter!.seq)!.redriven).toEqual([expect.objectContaining({ by: 'human:ada' })]);
    await waitFor(() => show().status === 'failed', { timeoutMs: 15_000, what: 'the run to fail again' });
    expect(keel(['run', 'show', runId, '--json']).json<{ history: Array<{ type: string }> }>().history.map((h) => h.type)).toContain('step_redriven');
    // the operator is told by the escalation policy
    await waitFor(() => emlsTo('operator@keel.local').some((t) => t.includes(`Run failed: ${runId}`)), { timeoutMs: 15_000, what: 'the operator notification' });
  });
});
