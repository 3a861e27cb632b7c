/**
 * Operator identity on the HTTP API: operator tokens, the auth middleware on `/v1/*`, browser
 * sessions with a CSRF token.
 *
 * ```ts
 * const { token } = createOperatorToken(cfg.dataDir, { name: 'laptop', operator: 'ada' }); // shown once
 * mountAuth(app, new OperatorAuth({ dataDir: cfg.dataDir })); // before the routes it guards
 * // curl -H "Authorization: Bearer $token" http://127.0.0.1:8080/v1/approvals
 * ```
 *
 * Tokens live in `<KEEL_DATA_DIR>/operators.json` (mode 0600), hashed (SHA-256): a file, not the
 * state store, because the CLI creates and revokes tokens while the engine is stopped (and
 * before any store exists), and in compose the data dir is a volume both see. The engine rereads
 * the file when it changes, so a revocation holds from the next request.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Context, Hono, MiddlewareHandler } from 'hono';
import { deleteCookie, getCookie, setCookie } from 'hono/cookie';
import type { Logger } from 'pino';
import { KeelError } from '../config/index.ts';
import { httpError } from './http.ts';

/** The browser session cookie. */
export const SESSION_COOKIE = 'keel_session';
/** The header a cookie-authenticated unsafe request carries its CSRF token in. */
export const CSRF_HEADER = 'X-CSRF-Token';
/**
 * Customer-facing routes that ingress mounts under `/v1` (the chat channel): open to anyone (their
 * own rate limits apply). Every other `/v1/*` path needs an operator; `/healthz` and `/metrics`
 * are outside `/v1` and stay open.
 */
export const OPEN_ROUTES: readonly string[] = ['/v1/chat/messages', '/v1/chat/ws'];

export type OperatorAuthErrorCode =
  /** `keel operator token revoke ID`: no token has that id */
  | 'AUTH_TOKEN_NOT_FOUND'
  /** operators.json is not a token file */
  | 'AUTH_FILE_INVALID'
  /** another process holds the token file's lock for too long */
  | 'AUTH_FILE_LOCKED'
  /** a route that needs an operator was reached without one */
  | 'AUTH_REQUIRED';

export class OperatorAuthError extends KeelError {
  declare readonly code: OperatorAuthErrorCode;
  constructor(code: OperatorAuthErrorCode, message: string, opts: { cause?: unknown } = {}) {
    super(code, message, opts);
    this.name = 'OperatorAuthError';
  }
}

/** A stored token: never the token itself, only its SHA-256. */
interface TokenRecord {
  id: string;
  name: string;
  operator: string;
  /** hex SHA-256 of the whole token string */
  hash: string;
  createdAt: string;
  revokedAt: string | null;
}
export type OperatorTokenView = Omit<TokenRecord, 'hash'>;

/** Who made a request: the operator and the token that proved it (`env` for KEEL_OPERATOR_TOKEN). */
export interface OperatorIdentity {
  operator: string;
  tokenId: string;
  via: 'bearer' | 'session';
}

declare module 'hono' {
  interface ContextVariableMap {
    keelOperator: OperatorIdentity;
  }
}

/** The authenticated operator of a request (set by the middleware); throws on a route it does not guard. */
export function operatorOf(c: Context): OperatorIdentity {
  const who = c.get('keelOperator');
  if (!who) throw new OperatorAuthError('AUTH_REQUIRED', `${c.req.method} ${c.req.path} has no authenticated operator (is mountAuth registered before it?)`);
  return who;
}

/** `<dataDir>/operators.json` */
export const operatorsFile = (dataDir: string) => join(dataDir, 'operators.json');

const TOKEN_RE = /^keel_op_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$/;
const sha256 = (s: string) => createHash('sha256').update(s).digest();
const view = ({ hash: _h, ...r }: TokenRecord): OperatorTokenView => r;
const sleep = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/**
 * The token file. Writers (the CLI, `keel start`'s first token) take a lock file and replace the
 * file atomically (temp file + rename), so a reader never sees half a file and two writers do
 * not lose each other's tokens. Readers reread it when it changed (inode, mtime, size).
 */
class TokenFile {
  private cache: { key: string; tokens: TokenRecord[] } | undefined;
  readonly path: string;
  constructor(path: string) {
    this.path = path;
  }

  records(): TokenRecord[] {
    let key: string;
    try {
      const st = statSync(this.path);
      key = `${st.ino}:${st.mtimeMs}:${st.size}`;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    if (this.cache?.key !== key) this.cache = { key, tokens: this.parse(readFileSync(this.path, 'utf8')) };
    return this.cache.tokens;
  }

  active(id: string): boolean {
    return this.records().some((t) => t.id === id && t.revokedAt === null);
  }

  verify(token: string): { operator: string; tokenId: string } | undefined {
    const m = TOKEN_RE.exec(token);
    if (!m) return undefined;
    const rec = this.records().find((t) => t.id === m[1]);
    if (!rec || rec.revokedAt !== null || !/^[0-9a-f]{64}$/.test(rec.hash)) return undefined;
    return timingSafeEqual(Buffer.from(rec.hash, 'hex'), sha256(token)) ? { operator: rec.operator, tokenId: rec.id } : undefined;
  }

  private parse(text: string): TokenRecord[] {
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch (err) {
      throw new OperatorAuthError('AUTH_FILE_INVALID', `${this.path} is not JSON: ${(err as Error).message}`, { cause: err });
    }
    const tokens = (doc as { tokens?: unknown } | null)?.tokens;
    if (!Array.isArray(tokens)) throw new OperatorAuthError('AUTH_FILE_INVALID', `${this.path} has no "tokens" list`);
    return tokens as TokenRecord[];
  }

  update<T>(fn: (tokens: TokenRecord[]) => { tokens: TokenRecord[]; result: T }): T {
    mkdirSync(join(this.path, '..'), { recursive: true });
    const lock = `${this.path}.lock`;
    const deadline = Date.now() + 5_000;
    for (;;) {
      try {
        closeSync(openSync(lock, 'wx', 0o600));
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        let age: number;
        try {
          age = Date.now() - statSync(lock).mtimeMs;
        } catch {
          continue; // released meanwhile
        }
        // a lock older than 30 s belongs to a writer that died: move it aside atomically (of two
        // processes that both judge it stale only one can rename it; the other finds it gone)
        if (age > 30_000) {
          const aside = `${lock}.stale.${process.pid}`;
          try {
            renameSync(lock, aside);
            unlinkSync(aside);
          } catch (e) {
            if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
          }
        }
        else if (Date.now() > deadline) throw new OperatorAuthError('AUTH_FILE_LOCKED', `${lock} is held by another process; remove it if no keel command is running`);
        else sleep(20);
      }
    }
    try {
      this.cache = undefined;
      const { tokens, result } = fn(this.records());
      const tmp = `${this.path}.${process.pid}.tmp`;
      const fd = openSync(tmp, 'w', 0o600);
      try {
        writeSync(fd, `${JSON.stringify({ version: 1, tokens }, null, 2)}\n`);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, this.path);
      return result;
    } finally {
      unlinkSync(lock);
    }
  }
}

/** A new token for `operator`; the plaintext is in the answer only (it is never shown again). */
export function createOperatorToken(dataDir: string, o: { name?: string; operator: string }): { token: string; record: OperatorTokenView } {
  const id = randomBytes(6).toString('hex');
  const token = `keel_op_${id}_${randomBytes(32).toString('base64url')}`;
  const rec: TokenRecord = { id, name: o.name ?? o.operator, operator: o.operator, hash: sha256(token).toString('hex'), createdAt: new Date().toISOString(), revokedAt: null };
  new TokenFile(operatorsFile(dataDir)).update((tokens) => ({ tokens: [...tokens, rec], result: undefined }));
  return { token, record: view(rec) };
}

/** Every token, revoked ones included, without hashes. */
export function listOperatorTokens(dataDir: string): OperatorTokenView[] {
  return new TokenFile(operatorsFile(dataDir)).records().map(view);
}

/** Revokes the token with this id; `changed` is false when it was revoked already (the first time stays). */
export function revokeOperatorToken(dataDir: string, id: string): { record: OperatorTokenView; changed: boolean } {
  const file = new TokenFile(operatorsFile(dataDir));
  return file.update((tokens) => {
    const hit = tokens.find((t) => t.id === id);
    if (!hit) throw new OperatorAuthError('AUTH_TOKEN_NOT_FOUND', `no operator token '${id}' in ${file.path} (see \`keel operator token list\`)`);
    const changed = hit.revokedAt === null;
    const rec = changed ? { ...hit, revokedAt: new Date().toISOString() } : hit;
    return { tokens: tokens.map((t) => (t === hit ? rec : t)), result: { record: view(rec), changed } };
  });
}

/**
 * `keel start`: when no operator token was ever created and KEEL_OPERATOR_TOKEN is unset, creates
 * one. The caller prints it once to the terminal (never through the logs).
 */
export function bootstrapOperatorToken(dataDir: string, o: { operator: string; envToken: string | undefined }): { token: string; record: OperatorTokenView } | undefined {
  if (o.envToken || listOperatorTokens(dataDir).length > 0) return undefined;
  return createOperatorToken(dataDir, { name: 'first start', operator: o.operator });
}

interface Session {
  operator: string;
  tokenId: string;
  expiresAt: number;
}

const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
const MAX_SESSIONS = 10_000;

/**
 * The engine's view of operators: the token file, KEEL_OPERATOR_TOKEN (a token of its
 * operator, compared by hash too), and the browser sessions of this process (a restart logs
 * browsers out; a revoked token ends its sessions at their next request).
 */
export class OperatorAuth {
  private readonly file: TokenFile;
  private readonly envHash: Buffer | undefined;
  private readonly key = randomBytes(32);
  private readonly sessions = new Map<string, Session>();
  readonly sessionTtlMs: number;
  private readonly o: { dataDir: string; envToken?: { token: string; operator: string }; logger?: Logger; sessionTtlMs?: number };
  constructor(o: { dataDir: string; envToken?: { token: string; operator: string }; logger?: Logger; sessionTtlMs?: number }) {
    this.o = o;
    this.file = new TokenFile(operatorsFile(o.dataDir));
    this.envHash = o.envToken ? sha256(o.envToken.token) : undefined;
    this.sessionTtlMs = o.sessionTtlMs ?? 12 * 3_600_000;
  }

  /** The operator a token string proves, or undefined (unknown, malformed or revoked). */
  verify(token: string): { operator: string; tokenId: string } | undefined {
    if (this.envHash && this.o.envToken && timingSafeEqual(this.envHash, sha256(token))) return { operator: this.o.envToken.operator, tokenId: 'env' };
    try {
      return this.file.verify(token);
    } catch (err) {
      this.o.logger?.error({ err: { code: (err as { code?: string }).code, message: (err as Error).message } }, 'the operator token file cannot be read: refusing file tokens');
      return undefined;
    }
  }

  openSession(who: { operator: string; tokenId: string }): { sid: string; csrfToken: string; expiresAt: number } {
    const now = Date.now();
    for (const [id, s] of this.sessions) if (s.expiresAt <= now) this.sessions.delete(id);
    while (this.sessions.size >= MAX_SESSIONS) this.sessions.delete(this.sessions.keys().next().value!);
    const sid = randomBytes(32).toString('base64url');
    const expiresAt = now + this.sessionTtlMs;
    this.sessions.set(sid, { ...who, expiresAt });
    return { sid, csrfToken: this.csrfOf(sid), expiresAt };
  }

  /** The live session with this id, or undefined (unknown, expired, or its token revoked). */
  session(sid: string): Session | undefined {
    const s = this.sessions.get(sid);
    const valid = !!s && s.expiresAt > Date.now() && (s.tokenId === 'env' ? !!this.o.envToken : this.fileActive(s.tokenId));
    if (!valid) this.sessions.delete(sid);
    return valid ? s : undefined;
  }

  closeSession(sid: string): void {
    this.sessions.delete(sid);
  }

  /** Whether `header` is the CSRF token of session `sid` (an HMAC of the session id under this process's key). */
  csrfMatches(sid: string, header: string | undefined): boolean {
    const x = Buffer.from(header ?? '');
    const y = Buffer.from(this.csrfOf(sid));
    return x.length === y.length && timingSafeEqual(x, y);
  }

  private csrfOf(sid: string): string {
    return createHmac('sha256', this.key).update(`csrf:${sid}`).digest('base64url');
  }

  private fileActive(id: string): boolean {
    try {
      return this.file.active(id);
    } catch {
      return false;
    }
  }
}

/**
 * Guards every `/v1/*` route but {@link OPEN_ROUTES} (register it before the routes) and serves
 * `POST /v1/session` (log in with `{ token }`: an HttpOnly, SameSite=Strict cookie, Secure over
 * https, and `{ operator, csrfToken, expiresAt }`) and `DELETE /v1/session` (log out).
 *
 * A request proves its operator with `Authorization: Bearer <token>` or the session cookie; with
 * the cookie, POST/PUT/PATCH/DELETE must carry `X-CSRF-Token`. Errors: 401 `AUTH_REQUIRED` (no
 * credentials; `WWW-Authenticate: Bearer`), 401 `AUTH_INVALID` (unknown, revoked or malformed
 * token, or an ended session), 403 `AUTH_CSRF`.
 */
export function mountAuth(app: Hono, auth: OperatorAuth): void {
  const open = new Set(OPEN_ROUTES);
  const invalid = (c: Context, message: string) => {
    c.header('WWW-Authenticate', 'Bearer realm="keel", error="invalid_token"');
    return httpError(c, 401, 'AUTH_INVALID', message);
  };
  const guard: MiddlewareHandler = async (c, next) => {
    const path = c.req.path.replace(/\/+$/, '') || '/';
    if (open.has(path) || (path === '/v1/session' && c.req.method === 'POST')) return next();
    const authz = c.req.header('authorization');
    if (authz !== undefined) {
      const m = /^Bearer +(\S+) *$/i.exec(authz);
      if (!m) return invalid(c, 'the Authorization header must be `Bearer <token>`');
      const who = auth.verify(m[1]!);
      if (!who) return invalid(c, 'unknown or revoked operator token');
      c.set('keelOperator', { ...who, via: 'bearer' });
      return next();
    }
    const sid = getCookie(c, SESSION_COOKIE);
    if (sid !== undefined) {
      const s = auth.session(sid);
      if (!s) {
        deleteCookie(c, SESSION_COOKIE, { path: '/' });
        return invalid(c, 'the session has ended (logged out, expired, its token revoked, or the engine restarted): log in again with POST /v1/session');
      }
      if (UNSAFE.has(c.req.method) && !auth.csrfMatches(sid, c.req.header(CSRF_HEADER))) {
        return httpError(c, 403, 'AUTH_CSRF', `a ${c.req.method} with the session cookie needs the ${CSRF_HEADER} header that POST /v1/session returned`);
      }
      c.set('keelOperator', { operator: s.operator, tokenId: s.tokenId, via: 'session' });
      return next();
    }
    c.header('WWW-Authenticate', 'Bearer realm="keel"');
    return httpError(c, 401, 'AUTH_REQUIRED', 'this route needs an operator: send `Authorization: Bearer <token>` (keel operator token create) or log in with POST /v1/session');
  };
  app.use('/v1/*', guard);

  app.post('/v1/session', async (c) => {
    const type = (c.req.header('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
    // JSON only: a cross-site form cannot send it without a CORS preflight
    if (type !== 'application/json') return httpError(c, 415, 'UNSUPPORTED_MEDIA_TYPE', `Content-Type must be application/json, got '${type || '(none)'}'`);
    let body: unknown;
    try {
      body = await c.req.json();
    } catch {
      return httpError(c, 400, 'INVALID_JSON', 'the body is not JSON');
    }
    const token = (body as { token?: unknown } | null)?.token;
    if (typeof token !== 'string' || token === '') return httpError(c, 422, 'INVALID_REQUEST', 'invalid fields: token', [{ path: 'token', message: 'an operator token (keel operator token create)' }]);
    const who = auth.verify(token);
    if (!who) return invalid(c, 'unknown or revoked operator token');
    const s = auth.openSession(who);
    const https = new URL(c.req.url).protocol === 'https:' || c.req.header('x-forwarded-proto') === 'https';
    setCookie(c, SESSION_COOKIE, s.sid, { httpOnly: true, sameSite: 'Strict', secure: https, path: '/', maxAge: Math.floor(auth.sessionTtlMs / 1000) });
    return c.json({ operator: who.operator, csrfToken: s.csrfToken, expiresAt: new Date(s.expiresAt).toISOString() });
  });
  app.delete('/v1/session', (c) => {
    const sid = getCookie(c, SESSION_COOKIE);
    if (sid !== undefined) auth.closeSession(sid);
    deleteCookie(c, SESSION_COOKIE, { path: '/' });
    return c.body(null, 204);
  });
}
