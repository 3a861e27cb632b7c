/**
 * engine/auth.ts in-process (Hono's app.request, a temp data dir, no servers): the token file,
 * the `/v1/*` guard, browser sessions with their CSRF token. tests/engine/auth.int.test.ts runs
 * the same over real HTTP against `keel start`.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { readFileSync, statSync } from 'node:fs';
import { Hono } from 'hono';
import {
  OPEN_ROUTES,
  OperatorAuth,
  SESSION_COOKIE,
  bootstrapOperatorToken,
  createOperatorToken,
  listOperatorTokens,
  mountAuth,
  operatorOf,
  operatorsFile,
  revokeOperatorToken,
} from '../../engine/auth.ts';
import { tempDir } from '../../testkit/common.ts';

const dirs: Array<{ remove(): void }> = [];
afterEach(() => {
  for (const d of dirs.splice(0)) d.remove();
});

function setup(envToken?: { token: string; operator: string }) {
  const dir = tempDir('keel-auth-');
  dirs.push(dir);
  const app = new Hono();
  app.get('/healthz', (c) => c.json({ status: 'ok' }));
  mountAuth(app, new OperatorAuth({ dataDir: dir.path, envToken }));
  // a customer route mounted after the guard, like ingress's chat route
  app.post('/v1/chat/messages', (c) => c.json({ open: true }, 202));
  app.get('/v1/whoami', (c) => c.json(operatorOf(c)));
  app.post('/v1/decide', (c) => c.json({ by: operatorOf(c).operator }));
  return { app, dataDir: dir.path };
}
const bearer = (t: string) => ({ authorization: `Bearer ${t}` });
const cookieOf = (r: Response) => /keel_session=([^;]*)/.exec(r.headers.get('set-cookie') ?? '')?.[1];

describe('operator tokens (operators.json)', () => {
  it('are stored hashed in a 0600 file, listed without secrets, revoked once', () => {
    const { dataDir } = setup();
    const a = createOperatorToken(dataDir, { name: 'laptop', operator: 'ada' });
    const b = createOperatorToken(dataDir, { operator: 'bob' });
    expect(a.token).toMatch(new RegExp(`^keel_op_${a.record.id}_[A-Za-z0-9_-]{43}$`));
    const file = readFileSync(operatorsFile(dataDir), 'utf8');
    expect(file).not.toContain(a.token.split('_').pop());
    expect(file).toContain(a.record.id);
    expect(statSync(operatorsFile(dataDir)).mode & 0o777).toBe(0o600);
    expect(listOperatorTokens(dataDir)).toEqual([
      { id: a.record.id, name: 'laptop', operator: 'ada', createdAt: a.record.createdAt, revokedAt: null },
      { id: b.record.id, name: 'bob', operator: 'bob', createdAt: b.record.createdAt, revokedAt: null },
    ]);
    const r1 = revokeOperatorToken(dataDir, a.record.id);
    expect(r1.changed).toBe(true);
    const r2 = revokeOperatorToken(dataDir, a.record.id);
    expect(r2).toEqual({ record: r1.record, changed: false });
    expect(() => revokeOperatorToken(dataDir, 'ffffffffffff')).toThrow(expect.objectContaining({ code: 'AUTH_TOKEN_NOT_FOUND' }));
    expect(listOperatorTokens(dataDir).map((t) => t.revokedAt !== null)).toEqual([true, false]);
  });

  it('keel start creates the first token only when none was ever created and KEEL_OPERATOR_TOKEN is unset', () => {
    const { dataDir } = setup();
    expect(bootstrapOperatorToken(dataDir, { operator: 'ada', envToken: 'x'.repeat(32) })).toBeUndefined();
    expect(listOperatorTokens(dataDir)).toHaveLength(0);
    const first = bootstrapOperatorToken(dataDir, { operator: 'ada', envToken: undefined });
    expect(first?.record).toMatchObject({ operator: 'ada', revokedAt: null });
    revokeOperatorToken(dataDir, first!.record.id);
    // all revoked is a decision of the operator, not a fresh install
    expect(bootstrapOperatorToken(dataDir, { operator: 'ada', envToken: undefined })).toBeUndefined();
  });
});

describe('the /v1 guard', () => {
  it('answers 401 AUTH_REQUIRED with WWW-Authenticate without credentials; /healthz and the chat route stay open', async () => {
    const { app } = setup();
    const r = await app.request('/v1/whoami');
    expect(r.status).toBe(401);
    expect(r.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect(await r.json()).toEqual({ error: 'AUTH_REQUIRED', message: expect.stringContaining('Authorization: Bearer') });
    expect((await app.request('/healthz')).status).toBe(200);
    expect(OPEN_ROUTES).toContain('/v1/chat/messages');
    expect((await app.request('/v1/chat/messages', { method: 'POST' })).status).toBe(202);
  });

  it('takes a file token or KEEL_OPERATOR_TOKEN as Bearer; refuses unknown, malformed and (on the next request) revoked ones', async () => {
    const env = { token: 'compose-token-0123456789abcdef', operator: 'ci' };
    const { app, dataDir } = setup(env);
    const { token, record } = createOperatorToken(dataDir, { operator: 'ada' });
    const ok = await app.request('/v1/whoami', { headers: bearer(token) });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ operator: 'ada', tokenId: record.id, via: 'bearer' });
    expect(await (await app.request('/v1/whoami', { headers: bearer(env.token) })).json()).toEqual({ operator: 'ci', tokenId: 'env', via: 'bearer' });

    for (const headers of [bearer(`${token.slice(0, -1)}${token.endsWith('A') ? 'B' : 'A'}`), bearer('nope'), { authorization: `Basic ${token}` }]) {
      const r = await app.request('/v1/whoami', { headers });
      expect(r.status).toBe(401);
      expect((await r.json() as { error: string }).error).toBe('AUTH_INVALID');
    }
    revokeOperatorToken(dataDir, record.id);
    const revoked = await app.request('/v1/whoami', { headers: bearer(token) });
    expect(revoked.status).toBe(401);
    expect(await revoked.json()).toMatchObject({ error: 'AUTH_INVALID' });
  });

  it('a browser session: HttpOnly SameSite=Strict cookie, CSRF header required on unsafe methods, logout, revocation ends it', async () => {
    const { app, dataDir } = setup();
    const { token, record } = createOperatorToken(dataDir, { operator: 'ada' });
    const post = (body: string, headers: Record<string, string> = { 'content-type': 'application/json' }) => app.request('/v1/session', { method: 'POST', headers, body });
    expect((await post(JSON.stringify({ token }), { 'content-type': 'text/plain' })).status).toBe(415);
    expect(await (await post('{}')).json()).toMatchObject({ error: 'INVALID_REQUEST', issues: [{ path: 'token' }] });
    expect(await (await post(JSON.stringify({ token: 'keel_op_nope' }))).json()).toMatchObject({ error: 'AUTH_INVALID' });

    const login = await post(JSON.stringify({ token }));
    expect(login.status).toBe(200);
    const { csrfToken, operator } = (await login.json()) as { csrfToken: string; operator: string };
    expect(operator).toBe('ada');
    const setCookie = login.headers.get('set-cookie')!;
    expect(setCookie).toMatch(/HttpOnly/);
    expect(setCookie).toMatch(/SameSite=Strict/);
    expect(setCookie).not.toMatch(/Secure/); // plain http here
    const sid = cookieOf(login)!;
    const cookie = { cookie: `${SESSION_COOKIE}=${sid}` };

    expect(await (await app.request('/v1/whoami', { headers: cookie })).json()).toEqual({ operator: 'ada', tokenId: record.id, via: 'session' });
    const noCsrf = await app.request('/v1/decide', { method: 'POST', headers: cookie });
    expect(noCsrf.status).toBe(403);
    expect(await noCsrf.json()).toMatchObject({ error: 'AUTH_CSRF' });
    expect((await app.request('/v1/decide', { method: 'POST', headers: { ...cookie, 'x-csrf-token': `${csrfToken}x` } })).status).toBe(403);
    const withCsrf = await app.request('/v1/decide', { method: 'POST', headers: { ...cookie, 'x-csrf-token': csrfToken } });
    expect(withCsrf.status).toBe(200);
    expect(await withCsrf.json()).toEqual({ by: 'ada' });

    // a CSRF token is bound to its session
    const other = await post(JSON.stringify({ token }));
    const otherCookie = { cookie: `${SESSION_COOKIE}=${cookieOf(other)!}` };
    expect((await app.request('/v1/decide', { method: 'POST', headers: { ...otherCookie, 'x-csrf-token': csrfToken } })).status).toBe(403);

    // logout is an unsafe method too
    expect((await app.request('/v1/session', { method: 'DELETE', headers: cookie })).status).toBe(403);
    expect((await app.request('/v1/session', { method: 'DELETE', headers: { ...cookie, 'x-csrf-token': csrfToken } })).status).toBe(204);
    expect(await (await app.request('/v1/whoami', { headers: cookie })).json()).toMatchObject({ error: 'AUTH_INVALID' });

    // revoking the token ends the sessions it opened
    expect((await app.request('/v1/whoami', { headers: otherCookie })).status).toBe(200);
    revokeOperatorToken(dataDir, record.id);
    expect((await app.request('/v1/whoami', { headers: otherCookie })).status).toBe(401);
  });

  it('sets a Secure cookie over https', async () => {
    const { app, dataDir } = setup();
    const { token } = createOperatorToken(dataDir, { operator: 'ada' });
    const r = await app.request('https://keel.example/v1/session', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token }) });
    expect(r.headers.get('set-cookie')).toMatch(/; Secure/);
  });
});
