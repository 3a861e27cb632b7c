/**
 * Operator identity on the HTTP API (issue 14), against `keel start` as its own process over real
 * HTTP, with the real CLI: operator tokens, the 401/403 answers (and that nothing changes behind
 * them), browser sessions with CSRF, revocation on the next request, and the audit record of every
 * decision naming the authenticated operator.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { REPO_ROOT, inheritedEnv } from '../../config/index.ts';
import { bootstrapOperatorToken } from '../../engine/index.ts';
import { startEngineProcess, waitFor, type EngineProcess } from '../helpers/index.ts';

const WORKFLOW = join(REPO_ROOT, 'tests', 'engine', 'fixtures', 'review-workflow.ts');
let engine: EngineProcess | undefined;

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Record<string, unknown>;
}
/** One request on a fresh connection (spawnSync blocks this loop for a while: no stale keep-alive sockets). */
function http(method: string, path: string, o: { headers?: Record<string, string>; body?: unknown } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const data = o.body === undefined ? undefined : JSON.stringify(o.body);
    const headers = { ...(data !== undefined ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(data)) } : {}), ...o.headers };
    const req = request(`${engine!.httpUrl}${path}`, { method, agent: false, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => {
        let body: Record<string, unknown>;
        try {
          body = text ? (JSON.parse(text) as Record<string, unknown>) : {};
        } catch {
          body = { text };
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
      });
    });
    req.once('error', reject);
    req.end(data);
  });
}
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

function keel(args: string[]): { status: number | null; stdout: string; stderr: string; json: <T = Record<string, unknown>>() => T } {
  const r = spawnSync(process.execPath, [join(REPO_ROOT, 'cli', 'keel.ts'), ...args], {
    env: { ...process.env, KEEL_DATA_DIR: engine!.dataDir, KEEL_NATS_PORT: String(engine!.natsPort), KEEL_WORKFLOWS: WORKFLOW, KEEL_LOG_LEVEL: 'silent', KEEL_OPERATOR: 'cli-user' },
    encoding: 'utf8',
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, json: <T,>() => JSON.parse(r.stdout) as T };
}
interface AuditRecord { action: string; subject: string; actor: { kind: string; id: string }; details: Record<string, unknown> }
const auditOf = (subject: string) => keel(['audit', 'export']).stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as AuditRecord).filter((r) => r.subject === subject);

interface Approval { id: string; state: string; correlationId: string; payload: { text: string } }
/** A run of the one-gate workflow, as the env token's operator: its pending approval. */
async function pendingApproval(text: string): Promise<Approval> {
  const started = await http('POST', '/v1/runs', { headers: engine!.auth, body: { workflow: 'auth-review', input: { text } } });
  expect(started.status).toBe(201);
  const runId = started.body.runId as string;
  let a: Approval | undefined;
  await waitFor(async () => !!(a = ((await http('GET', '/v1/approvals', { headers: engine!.auth })).body.approvals as Approval[]).find((x) => x.correlationId === runId)), { timeoutMs: 10_000, what: 'the approval' });
  return a!;
}
const stateOf = async (id: string) => {
  for (const state of ['pending', 'approved', 'rejected']) {
    const list = (await http('GET', `/v1/approvals?state=${state}`, { headers: engine!.auth })).body.approvals as Approval[];
    if (list.some((a) => a.id === id)) return state;
  }
  return 'missing';
};

beforeAll(async () => {
  engine = await startEngineProcess({ KEEL_AGENTS: 'none', KEEL_WORKFLOWS: WORKFLOW, KEEL_LOG_LEVEL: 'warn', KEEL_OPERATOR: 'ada' });
}, 90_000);

afterAll(async () => {
  if (engine) {
    await engine.stop('SIGINT');
    engine.cleanup();
  }
});

describe('operator identity on the HTTP API', () => {
  it('no token: 401 AUTH_REQUIRED with WWW-Authenticate, and nothing changes; a wrong or malformed token: 401 AUTH_INVALID; /healthz, /metrics and the chat route stay open', async () => {
    const a = await pendingApproval('Version 2 of the page.');
    const anon = await http('POST', `/v1/approvals/${a.id}`, { body: { decision: 'approved' } });
    expect(anon.status).toBe(401);
    expect(anon.headers['www-authenticate']).toMatch(/^Bearer realm="keel"/);
    expect(anon.body).toMatchObject({ error: 'AUTH_REQUIRED', message: expect.stringContaining('Authorization: Bearer') });
    for (const [headers, what] of [
      [bearer('keel_op_000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'), 'an unknown token'],
      [bearer(`${engine!.operatorToken}x`), 'the env token with one more character'],
      [{ authorization: `Basic ${Buffer.from('ada:x').toString('base64')}` }, 'not Bearer'],
    ] as const) {
      const r = await http('POST', `/v1/approvals/${a.id}`, { headers, body: { decision: 'rejected' } });
      expect(r.status, what).toBe(401);
      expect(r.body, what).toMatchObject({ error: 'AUTH_INVALID' });
    }
    expect((await http('GET', '/v1/approvals')).status).toBe(401);
    expect((await http('GET', `/v1/runs/${a.correlationId}`)).body).toMatchObject({ error: 'AUTH_REQUIRED' });
    // nothing was decided, and nothing about it audited
    expect(await stateOf(a.id)).toBe('pending');
    expect(auditOf(`approval/${a.id}`)).toEqual([]);

    expect((await http('GET', '/healthz')).status).toBe(200);
    expect((await http('GET', '/metrics')).status).toBe(200);
    // the customers' chat route: no operator needed (400 for the malformed body, not 401)
    const chat = await http('POST', '/v1/chat/messages', { body: { text: 'hi' } });
    expect(chat.status).not.toBe(401);
  });

  it('keel operator token create / list / revoke: shown once, stored hashed in a 0600 file; the token decides as its operator (audited), and is refused from the next request after revoke', async () => {
    const created = keel(['operator', 'token', 'create', '--name', 'laptop', '--operator', 'carol', '--json']);
    expect(created.status, created.stderr).toBe(0);
    const c = created.json<{ token: string; id: string; name: string; operator: string; revokedAt: string | null }>();
    expect(c).toMatchObject({ name: 'laptop', operator: 'carol', revokedAt: null });
    expect(c.token).toMatch(new RegExp(`^keel_op_${c.id}_[A-Za-z0-9_-]{43}$`));
    const file = join(engine!.dataDir, 'operators.json');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const stored = readFileSync(file, 'utf8');
    expect(stored).not.toContain(c.token);
    expect(stored).not.toContain(c.token.split('_').at(-1));
    const listed = keel(['operator', 'token', 'list', '--json']).json<{ tokens: Array<Record<string, unknown>> }>().tokens;
    expect(listed).toEqual([expect.objectContaining({ id: c.id, name: 'laptop', operator: 'carol', revokedAt: null })]);
    expect(JSON.stringify(listed)).not.toMatch(/hash|sha256/);
    expect(keel(['operator', 'token', 'list']).stdout).toMatch(new RegExp(`${c.id}\\s+laptop\\s+carol`));

    // the running engine accepts the new token at once (it rereads the file)
    const a = await pendingApproval('Publish the launch page.');
    const ok = await http('POST', `/v1/approvals/${a.id}`, { headers: bearer(c.token), body: { decision: 'rejected', reason: 'not yet' } });
    expect(ok.status).toBe(200);
    expect(ok.body).toMatchObject({ id: a.id, applied: true });
    expect(await stateOf(a.id)).toBe('rejected');
    expect(auditOf(`approval/${a.id}`)).toEqual([
      expect.objectContaining({ action: 'approval.rejected', actor: { kind: 'human', id: 'carol' }, details: expect.objectContaining({ approvalId: a.id, runId: a.correlationId, reason: 'not yet', decidedAt: expect.any(String) }) }),
    ]);
    const v = keel(['audit', 'verify', '--json']);
    expect(v.json()).toMatchObject({ ok: true });

    // a body naming `by` is refused (422 naming it), not silently ignored
    const b = await pendingApproval('Another page.');
    const claimed = await http('POST', `/v1/approvals/${b.id}`, { headers: bearer(c.token), body: { decision: 'approved', by: 'mallory' } });
    expect(claimed.status).toBe(422);
    expect(claimed.body).toMatchObject({ error: 'INVALID_REQUEST', issues: [expect.objectContaining({ path: 'by' })] });
    expect(await stateOf(b.id)).toBe('pending');

    const revoked = keel(['operator', 'token', 'revoke', c.id, '--json']);
    expect(revoked.status, revoked.stderr).toBe(0);
    expect(revoked.json()).toMatchObject({ id: c.id, changed: true, revokedAt: expect.any(String) });
    const after = await http('POST', `/v1/approvals/${b.id}`, { headers: bearer(c.token), body: { decision: 'approved' } });
    expect(after.status).toBe(401);
    expect(after.body).toMatchObject({ error: 'AUTH_INVALID' });
    expect(await stateOf(b.id)).toBe('pending');
    expect(keel(['operator', 'token', 'revoke', c.id, '--json']).json()).toMatchObject({ changed: false });
    const missing = keel(['operator', 'token', 'revoke', 'ffffffffffff', '--json']);
    expect(missing.status).toBe(1);
    expect(missing.json()).toMatchObject({ error: expect.stringMatching(/NOT_FOUND$/) });
  });

  it('a browser session: HttpOnly SameSite=Strict cookie; an unsafe request without the CSRF header is 403 (nothing changes), with it 200; an edit is audited with before and after; DELETE /v1/session ends it', async () => {
    const t = keel(['operator', 'token', 'create', '--name', 'browser', '--operator', 'dora', '--json']).json<{ token: string; id: string }>();
    const wrong = await http('POST', '/v1/session', { body: { token: 'nope' } });
    expect(wrong.status).toBe(401);
    expect(wrong.body).toMatchObject({ error: 'AUTH_INVALID' });
    const login = await http('POST', '/v1/session', { body: { token: t.token } });
    expect(login.status).toBeLessThan(300);
    expect(login.body).toMatchObject({ operator: 'dora', csrfToken: expect.any(String) });
    const setCookie = String(login.headers['set-cookie']);
    expect(setCookie).toMatch(/^keel_session=[^;]+;/);
    expect(setCookie).toMatch(/HttpOnly/i);
    expect(setCookie).toMatch(/SameSite=Strict/i);
    expect(setCookie).not.toMatch(/Secure/i); // plain http here
    const cookie = setCookie.split(';')[0]!;
    const csrf = login.body.csrfToken as string;
    // behind an https proxy the cookie is Secure
    expect(String((await http('POST', '/v1/session', { headers: { 'x-forwarded-proto': 'https' }, body: { token: t.token } })).headers['set-cookie'])).toMatch(/Secure/i);

    // safe methods need no CSRF header
    expect((await http('GET', '/v1/approvals', { headers: { cookie } })).status).toBe(200);
    const a = await pendingApproval('Launch on Monday.');
    const noCsrf = await http('POST', `/v1/approvals/${a.id}`, { headers: { cookie }, body: { decision: 'approved' } });
    expect(noCsrf.status).toBe(403);
    expect(noCsrf.body).toMatchObject({ error: 'AUTH_CSRF' });
    const badCsrf = await http('POST', `/v1/approvals/${a.id}`, { headers: { cookie, 'x-csrf-token': `${csrf.slice(0, -2)}AA` }, body: { decision: 'approved' } });
    expect(badCsrf.status).toBe(403);
    expect(await stateOf(a.id)).toBe('pending');

    const ok = await http('POST', `/v1/approvals/${a.id}`, { headers: { cookie, 'x-csrf-token': csrf }, body: { decision: 'approved', text: 'Launch on Tuesday.' } });
    expect(ok.status).toBe(200);
    expect(await stateOf(a.id)).toBe('approved');
    expect(auditOf(`approval/${a.id}`)).toEqual([
      expect.objectContaining({ action: 'approval.edited', actor: { kind: 'human', id: 'dora' }, details: expect.objectContaining({ before: 'Launch on Monday.', after: 'Launch on Tuesday.' }) }),
    ]);

    // revoking the token ends its sessions on their next request
    const b = await pendingApproval('Second launch.');
    keel(['operator', 'token', 'revoke', t.id]);
    const dead = await http('POST', `/v1/approvals/${b.id}`, { headers: { cookie, 'x-csrf-token': csrf }, body: { decision: 'approved' } });
    expect(dead.status).toBe(401);
    expect(dead.body).toMatchObject({ error: 'AUTH_INVALID' });
    expect(await stateOf(b.id)).toBe('pending');

    // log out: the session is gone
    const t2 = keel(['operator', 'token', 'create', '--operator', 'dora', '--json']).json<{ token: string }>();
    const l2 = await http('POST', '/v1/session', { body: { token: t2.token } });
    const cookie2 = String(l2.headers['set-cookie']).split(';')[0]!;
    expect((await http('DELETE', '/v1/session', { headers: { cookie: cookie2 } })).status).toBe(403); // CSRF applies to logging out too
    const out = await http('DELETE', '/v1/session', { headers: { cookie: cookie2, 'x-csrf-token': l2.body.csrfToken as string } });
    expect(out.status).toBeLessThan(300);
    expect((await http('GET', '/v1/approvals', { headers: { cookie: cookie2 } })).status).toBe(401);

    // an approval with the suggested text unchanged is a plain approval; the env token (KEEL_OPERATOR_TOKEN) is operator ada
    const same = await http('POST', `/v1/approvals/${b.id}`, { headers: engine!.auth, body: { decision: 'approved', text: 'Second launch.' } });
    expect(same.status).toBe(200);
    expect(auditOf(`approval/${b.id}`)).toEqual([expect.objectContaining({ action: 'approval.approved', actor: { kind: 'human', id: 'ada' } })]);
    expect(auditOf(`approval/${b.id}`)[0]!.details).not.toHaveProperty('before');
  });

  it('runs started over HTTP are audited under the operator; `keel start` prints a first token only when none exists; agents never inherit KEEL_OPERATOR_TOKEN', async () => {
    const started = await http('POST', '/v1/runs', { headers: engine!.auth, body: { workflow: 'auth-review', input: { text: 'x' } } });
    expect(started.status).toBe(201);
    expect(auditOf(`run/${started.body.runId as string}`)).toEqual([expect.objectContaining({ action: 'run.started', actor: { kind: 'human', id: 'ada' }, details: expect.objectContaining({ workflow: 'auth-review' }) })]);
    // this engine has KEEL_OPERATOR_TOKEN: it created no token, and the dir has tokens now anyway
    expect(engine!.output()).not.toMatch(/keel_op_/);
    expect(bootstrapOperatorToken(engine!.dataDir, { operator: 'x', envToken: undefined })).toBeUndefined();
    expect(inheritedEnv({ KEEL_OPERATOR_TOKEN: 'secret-secret-secret-secret', KEEL_OPERATOR: 'ada' })).toEqual({ KEEL_OPERATOR: 'ada' });
  });
});

describe('the first start', () => {
  it('without KEEL_OPERATOR_TOKEN and without tokens, `keel start` creates one and prints it once on the terminal, not in the logs; it works', async () => {
    const e = await startEngineProcess({ KEEL_AGENTS: 'none', KEEL_LOG_LEVEL: 'info', KEEL_OPERATOR_TOKEN: '', KEEL_OPERATOR: 'owner' });
    try {
      await waitFor(() => /keel_op_/.test(e.output()), { timeoutMs: 10_000, what: 'the first token on the terminal' });
      const token = /keel_op_[0-9a-f]{12}_[A-Za-z0-9_-]{43}/.exec(e.output())![0];
      expect(e.output().split(token).length - 1).toBe(1);
      // the line it is on is not a log line
      const line = e.output().split('\n').find((l) => l.includes(token))!;
      expect(line.trim().startsWith('{')).toBe(false);
      const r = await fetch(`${e.httpUrl}/v1/approvals`, { headers: bearer(token) });
      expect(r.status).toBe(200);
      const tokens = JSON.parse(readFileSync(join(e.dataDir, 'operators.json'), 'utf8')) as { tokens: Array<{ operator: string }> };
      expect(tokens.tokens).toEqual([expect.objectContaining({ operator: 'owner' })]);
    } finally {
      await e.stop('SIGINT');
      e.cleanup();
    }
  }, 60_000);
});
