/**
 * The operator's daily loop against a running engine (`keel start` as a process, with the intake
 * agent): customers named by email or chat handle, attachments on the ticket, SMTP refusing
 * other domains with 550, and the HTTP API's one error shape (404/405/400/422).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../../config/index.ts';
import { startEngineProcess, waitFor, type EngineProcess } from '../helpers/index.ts';

const hasSwaks = spawnSync('swaks', ['--version']).status === 0;
let engine: EngineProcess | undefined;

function keel(args: string[]) {
  const r = spawnSync(process.execPath, [join(REPO_ROOT, 'bin', 'keel.js'), ...args], {
    env: { ...process.env, KEEL_DATA_DIR: engine!.dataDir, KEEL_STATE: '', KEEL_NATS_PORT: String(engine!.natsPort), KEEL_LOG_LEVEL: 'silent' },
    encoding: 'utf8',
    timeout: 30_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, json: <T = Record<string, unknown>>() => JSON.parse(r.stdout) as T };
}

function swaks(args: string[]): string {
  const r = spawnSync('swaks', ['--server', `127.0.0.1:${engine!.smtpPort}`, '--timeout', '20s', ...args], { encoding: 'utf8' });
  return r.stdout + r.stderr;
}

interface TicketRow { id: string; customer: string; subject: string }

beforeAll(async () => {
  engine = await startEngineProcess({ KEEL_AGENTS: 'intake', KEEL_LOG_LEVEL: 'warn' });
}, 120_000);
afterAll(async () => {
  if (engine) {
    await engine.stop('SIGINT');
    engine.cleanup();
  }
});

describe('the daily loop against a running engine', () => {
  let aliceTicket: string | undefined;

  it('SMTP takes mail for the accepted domain (with its attachment) and answers 550 5.1.1 for another domain', async (ctx) => {
    if (!hasSwaks) return ctx.skip('swaks (Debian package) is not installed');
    const pdf = join(engine!.dataDir, 'invoice-1234.pdf');
    writeFileSync(pdf, `%PDF-1.4\n${'x'.repeat(3000)}\n%%EOF\n`);
    const ok = swaks(['--to', 'support@keel.local', '--from', 'alice@example.com', '--header', 'Subject: Invoice 1234 is wrong', '--body', 'Hello, the attached invoice charges me twice. Please fix it.', '--attach-type', 'application/pdf', '--attach-name', 'invoice-1234.pdf', '--attach', `@${pdf}`]);
    expect(ok).toMatch(/<- +250 OK: queued as/);
    const refused = swaks(['--to', 'ceo@other.example', '--from', 'spammer@example.net', '--body', 'buy now']);
    expect(refused).toMatch(/<\*\* +550 5\.1\.1 <ceo@other\.example>: recipient not accepted here/);

    await waitFor(() => (keel(['tickets', '--json']).json<{ tickets: TicketRow[] }>().tickets.some((t) => t.customer === 'alice@example.com')), { timeoutMs: 60_000, intervalMs: 500, what: "alice's ticket" });
    const all = keel(['tickets', '--json']).json<{ tickets: TicketRow[] }>().tickets;
    expect(all).toHaveLength(1); // nothing was opened for the refused recipient
    aliceTicket = all[0]!.id;
  });

  it('`keel tickets|runs|cost --customer` take an email or a chat handle, not only the cus- id', async (ctx) => {
    if (!aliceTicket) return ctx.skip('needs the email ticket');
    const r = await fetch(`${engine!.httpUrl}/v1/chat/messages`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ customer: { handle: 'bob42', name: 'Bob' }, text: 'How do I export my invoices?' }) });
    expect(r.status).toBe(202);
    await waitFor(() => keel(['tickets', '--json']).json<{ tickets: TicketRow[] }>().tickets.length === 2, { timeoutMs: 60_000, intervalMs: 500, what: "bob's ticket" });

    const byEmail = keel(['tickets', '--customer', 'alice@example.com', '--json']).json<{ tickets: TicketRow[]; customer: { id: string; by: string; found: boolean } }>();
    expect(byEmail.tickets.map((t) => t.id)).toEqual([aliceTicket]);
    expect(byEmail.customer).toMatchObject({ by: 'email', found: true, id: expect.stringMatching(/^cus-[0-9a-f]{16}$/) });
    const aliceId = byEmail.customer.id;
    expect(keel(['tickets', '--customer', 'Alice@Example.COM', '--json']).json<{ tickets: TicketRow[] }>().tickets).toHaveLength(1);
    expect(keel(['tickets', '--customer', aliceId, '--json']).json<{ tickets: TicketRow[] }>().tickets).toHaveLength(1);
    const human = keel(['tickets', '--customer', 'alice@example.com']);
    expect(human.stdout).toMatch(new RegExp(`${aliceTicket}\\s+open\\s+normal\\s+email\\s+alice@example\\.com`));
    const bob = keel(['tickets', '--customer', 'bob42', '--json']).json<{ tickets: TicketRow[]; customer: { by: string } }>();
    expect(bob.tickets.map((t) => t.customer)).toEqual(['bob42']);
    expect(bob.customer.by).toBe('handle');
    expect(keel(['tickets', '--customer', 'nobody@example.com']).stdout).toMatch(/no tickets for nobody@example\.com \(no customer has that email/);

    const runs = keel(['runs', '--customer', 'alice@example.com', '--json']).json<{ runs: Array<{ customer: string }> }>().runs;
    expect(runs.length).toBeGreaterThanOrEqual(1);
    expect(runs.every((x) => x.customer === aliceId)).toBe(true);
    expect(keel(['runs', '--customer', 'bob42', '--json']).json<{ runs: Array<{ customer: string }> }>().runs.every((x) => x.customer !== aliceId)).toBe(true);

    await waitFor(() => keel(['cost', '--customer', 'alice@example.com', '--json']).json<{ totals: { count: number } }>().totals.count >= 1, { timeoutMs: 30_000, intervalMs: 500, what: "the intake's cost record for alice" });
    const cost = keel(['cost', '--by', 'customer', '--customer', 'alice@example.com', '--json']).json<{ filters: { customerId: string }; groups: Array<{ key: { customerId: string } }> }>();
    expect(cost.filters.customerId).toBe(aliceId);
    expect(cost.groups.map((g) => g.key.customerId)).toEqual([aliceId]);
  });

  it('`keel ticket show` lists the attachments: name, type, size and where the content is stored', async (ctx) => {
    if (!aliceTicket) return ctx.skip('needs the email ticket');
    const d = keel(['ticket', 'show', aliceTicket, '--json']).json<{ attachments: Array<{ messageId: string; filename: string; contentType: string; size: number; stored: boolean; path: string }>; messages: Array<{ id: string; attachments?: unknown[] }> }>();
    expect(d.attachments).toHaveLength(1);
    const a = d.attachments[0]!;
    expect(a).toMatchObject({ filename: 'invoice-1234.pdf', contentType: 'application/pdf', stored: true, messageId: d.messages[0]!.id });
    expect(a.size).toBeGreaterThan(3000);
    expect(a.path.startsWith(join(engine!.dataDir, 'attachments'))).toBe(true);
    expect(readFileSync(a.path, 'utf8')).toMatch(/^%PDF-1\.4/);
    expect(d.messages[0]!.attachments).toHaveLength(1); // on the ticket's message itself
    const human = keel(['ticket', 'show', aliceTicket]).stdout;
    expect(human).toMatch(/attachment: invoice-1234\.pdf \(application\/pdf, \d+\.\d KiB\) stored at .*attachments\/[0-9a-f]{64}/);
    expect(existsSync(a.path)).toBe(true);
  });

  it('HTTP errors have one shape: UPPER_SNAKE code and a message; a wrong method on a known route is 405 with Allow', async () => {
    const url = engine!.httpUrl;
    // the keel commands of the tests before run with spawnSync, which blocks this process's event
    // loop for seconds: an idle keep-alive socket can outlive the server's keep-alive timeout
    // unnoticed, and the next request is sent on a socket the server closed. Like any HTTP client,
    // send such a request again on a new connection.
    const fetch = async (u: string, init?: RequestInit): Promise<Response> => {
      try {
        return await globalThis.fetch(u, init);
      } catch (err) {
        if ((err as { cause?: { code?: string } }).cause?.code !== 'UND_ERR_SOCKET') throw err;
        return globalThis.fetch(u, init);
      }
    };
    const get = await fetch(`${url}/v1/chat/messages`);
    expect(get.status).toBe(405);
    expect(get.headers.get('allow')).toBe('OPTIONS, POST');
    expect(await get.json()).toEqual({ error: 'METHOD_NOT_ALLOWED', message: 'GET is not allowed on /v1/chat/messages; allowed: OPTIONS, POST' });
    // the operator routes need the engine's operator token (the chat route above is the customers')
    const op = engine!.auth;
    const del = await fetch(`${url}/v1/runs/in-123`, { method: 'DELETE', headers: op });
    expect(del.status).toBe(405);
    expect(del.headers.get('allow')).toBe('GET, HEAD, OPTIONS');
    const opt = await fetch(`${url}/v1/approvals`, { method: 'OPTIONS', headers: op });
    expect(opt.status).toBe(204);
    expect(opt.headers.get('allow')).toBe('GET, HEAD, OPTIONS');
    expect((await fetch(`${url}/healthz`, { method: 'POST' })).status).toBe(405);

    const missing = await fetch(`${url}/v1/nothing-here`, { headers: op });
    expect(missing.status).toBe(404);
    expect(await missing.json()).toEqual({ error: 'NOT_FOUND', message: 'no route for GET /v1/nothing-here' });
    const run = await fetch(`${url}/v1/runs/in-does-not-exist`, { headers: op });
    expect(run.status).toBe(404);
    expect(await run.json()).toEqual({ error: 'WORKFLOW_RUN_NOT_FOUND', message: expect.stringMatching(/^no workflow run 'in-does-not-exist'/) });
    const junk = await fetch(`${url}/v1/runs`, { method: 'POST', headers: { 'content-type': 'application/json', ...op }, body: '{"workflow": ' });
    expect(junk.status).toBe(400);
    expect(await junk.json()).toEqual({ error: 'INVALID_JSON', message: 'the body is not JSON' });
    const bad = await fetch(`${url}/v1/runs`, { method: 'POST', headers: { 'content-type': 'application/json', ...op }, body: '{"workflow": ""}' });
    expect(bad.status).toBe(422);
    expect(await bad.json()).toMatchObject({ error: 'INVALID_REQUEST', message: 'invalid fields: workflow', issues: [{ path: 'workflow' }] });
    const state = await fetch(`${url}/v1/approvals?state=bogus`, { headers: op });
    expect(state.status).toBe(422);
    expect(await state.json()).toMatchObject({ error: 'INVALID_REQUEST', message: expect.stringMatching(/^state takes pending, approved, rejected, expired/) });
    const chat = await fetch(`${url}/v1/chat/messages`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{' });
    expect(chat.status).toBe(400);
    expect(await chat.json()).toMatchObject({ error: 'INVALID_JSON', message: expect.any(String) });
    // without the token, an operator route answers 401 in the same shape, before any 404/405
    const anon = await fetch(`${url}/v1/nothing-here`);
    expect(anon.status).toBe(401);
    expect(anon.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect(await anon.json()).toMatchObject({ error: 'AUTH_REQUIRED', message: expect.any(String) });
  });
});
