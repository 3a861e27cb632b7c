import { Hono, type Context } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { serve, type ServerType } from '@hono/node-server';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { isStorageFull } from '../channels/index.ts';
import { EngineError } from './errors.ts';

export interface HealthReport {
  status: 'ok' | 'degraded';
  version: string;
  uptime_s: number;
  bus: Record<string, unknown> & { status: 'up' | 'down' };
  state: Record<string, unknown> & { status: 'up' | 'down' };
  /** free space under the data dir: `low` below KEEL_MIN_FREE_MB (new work is refused; the report is `degraded`) */
  disk?: Record<string, unknown> & { status: 'ok' | 'low' | 'unknown'; free_bytes: number; min_free_bytes: number };
}

export interface HttpApi {
  app: Hono;
  port: number;
  server: Server;
  close(): Promise<void>;
}

/** The body of every HTTP error: an UPPER_SNAKE `error` code, a `message` for people, the bad fields in `issues`. */
export interface HttpErrorBody {
  error: string;
  message: string;
  issues?: { path: string; message: string }[];
}

/** Answers an error in the one shape (`HttpErrorBody`); `code` is UPPER_SNAKE. */
export function httpError(c: Context, status: ContentfulStatusCode, code: string, message: string, issues?: HttpErrorBody['issues']): Response {
  const body: HttpErrorBody = { error: code, message, ...(issues ? { issues } : {}) };
  return c.json(body, status);
}

/** A Keel error code for anything thrown (`WORKFLOW_NOT_FOUND` stays; a lowercase or missing code becomes `INTERNAL`). */
export function errorCode(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[A-Z][A-Z0-9_]*$/.test(code) ? code : 'INTERNAL';
}

/** `/v1/runs/:id` → a RegExp matching the paths it serves. */
function routeRegExp(path: string): RegExp {
  let re = '';
  for (const part of path.split('/').filter(Boolean)) {
    if (part === '*') re += '(?:/.*)?';
    else if (part.startsWith(':')) {
      const m = /^:[^{?]+(\{(.+)\})?(\?)?$/.exec(part);
      const inner = m?.[2] ?? '[^/]+';
      re += m?.[3] ? `(?:/(?:${inner}))?` : `/(?:${inner})`;
    } else re += `/${part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`;
  }
  return new RegExp(`^${re || '/'}/?$`);
}

/** The methods the app serves on `path` (HEAD with GET), for 405 and its `Allow` header. */
export function allowedMethods(app: Hono, path: string): string[] {
  const out = new Set<string>();
  for (const r of app.routes) if (r.method !== 'ALL' && routeRegExp(r.path).test(path)) out.add(r.method.toUpperCase());
  if (out.has('GET')) out.add('HEAD');
  if (out.size) out.add('OPTIONS');
  return [...out].sort();
}

/**
 * A failure of the system of record or the disk as an HTTP answer, or undefined for any other:
 * 507 `STORAGE_FULL` (with Retry-After) when the disk is full, 503 `STATE_UNAVAILABLE` (with
 * Retry-After) when the store cannot be reached.
 */
export function outageFailure(c: Context, err: unknown): Response | undefined {
  if (isStorageFull(err)) {
    c.header('Retry-After', '30');
    return httpError(c, 507, 'STORAGE_FULL', (err as Error).message);
  }
  if ((err as { code?: unknown } | null)?.code === 'STATE_UNAVAILABLE') {
    c.header('Retry-After', '5');
    return httpError(c, 503, 'STATE_UNAVAILABLE', (err as Error).message);
  }
  return undefined;
}

/**
 * The engine's HTTP API. `GET /healthz` answers 200 with the report when bus and state are up
 * and the disk is above its reserve, 503 with the same JSON shape otherwise. Later modules mount
 * their routes on `app`.
 *
 * Errors have one shape, {@link HttpErrorBody}: `404 NOT_FOUND` for an unknown path, `405
 * METHOD_NOT_ALLOWED` with an `Allow` header for a known path and another method (`OPTIONS`
 * answers 204 with `Allow`), `507 STORAGE_FULL` when a write found the disk full, `503
 * STATE_UNAVAILABLE` when the system of record cannot be reached, `500 INTERNAL` for any other
 * unexpected failure.
 */
export async function startHttpApi(opts: {
  host: string;
  port: number;
  health: () => Promise<HealthReport>;
  mount?: (app: Hono) => void;
}): Promise<HttpApi> {
  const app = new Hono();
  app.get('/healthz', async (c) => {
    const report = await opts.health();
    return c.json(report, report.status === 'ok' ? 200 : 503);
  });
  opts.mount?.(app);
  app.notFound((c) => {
    const allowed = allowedMethods(app, c.req.path);
    if (allowed.length === 0) return httpError(c, 404, 'NOT_FOUND', `no route for ${c.req.method} ${c.req.path}`);
    c.header('Allow', allowed.join(', '));
    if (c.req.method === 'OPTIONS') return c.body(null, 204);
    return httpError(c, 405, 'METHOD_NOT_ALLOWED', `${c.req.method} is not allowed on ${c.req.path}; allowed: ${allowed.join(', ')}`);
  });
  app.onError((err, c) => outageFailure(c, err) ?? httpError(c, 500, 'INTERNAL', err.message));

  const server: ServerType = await new Promise((resolve, reject) => {
    const s = serve({ fetch: app.fetch, hostname: opts.host, port: opts.port }, () => resolve(s));
    s.once('error', (err: NodeJS.ErrnoException) =>
      reject(err.code === 'EADDRINUSE' ? new EngineError('ENGINE_HTTP_PORT_IN_USE', `HTTP port ${opts.host}:${opts.port} is already in use; set KEEL_HTTP_PORT to another port`, { cause: err }) : err),
    );
  });
  const port = (server.address() as AddressInfo).port;
  return {
    app,
    port,
    server: server as unknown as Server,
    close: () =>
      new Promise<void>((resolve) => {
        (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}
