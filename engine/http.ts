import { Hono } from 'hono';
import { serve, type ServerType } from '@hono/node-server';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { EngineError } from './errors.ts';

export interface HealthReport {
  status: 'ok' | 'degraded';
  version: string;
  uptime_s: number;
  bus: Record<string, unknown> & { status: 'up' | 'down' };
  state: Record<string, unknown> & { status: 'up' | 'down' };
}

export interface HttpApi {
  app: Hono;
  port: number;
  server: Server;
  close(): Promise<void>;
}

/**
 * The engine's HTTP API. `GET /healthz` answers 200 with the report when bus and state are up,
 * 503 with the same JSON shape otherwise. Later modules mount their routes on `app`.
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
  app.notFound((c) => c.json({ error: 'not_found', message: `no route for ${c.req.method} ${c.req.path}` }, 404));
  app.onError((err, c) => c.json({ error: 'internal', message: err.message }, 500));

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
