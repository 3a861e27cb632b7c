import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { findTool } from '../../config/index.ts';
import { startEngineProcess, startNats, isAlive, waitFor, type EngineProcess } from '../helpers/index.ts';

type Health = { status: string; bus: { status: string; jetstream?: boolean; local?: boolean; url?: string }; state: { status: string; kind: string } };

const natsPid = (e: EngineProcess) => Number(readFileSync(join(e.dataDir, 'nats', 'nats-server.pid'), 'utf8'));

describe('keel start (the embedded engine as a process)', () => {
  it('serves /healthz with bus and state up, and Ctrl-C leaves no process behind', async (ctx) => {
    if (!findTool('nats-server')) return ctx.skip('no nats-server binary: run `npm run provision`');
    const e = await startEngineProcess();
    try {
      const r = await fetch(`${e.httpUrl}/healthz`);
      expect(r.status).toBe(200);
      const h = (await r.json()) as Health;
      expect(h.status).toBe('ok');
      expect(h.bus).toMatchObject({ status: 'up', jetstream: true, local: true });
      expect(h.state).toMatchObject({ status: 'up', kind: 'sqlite' });
      expect(await (await fetch(`${e.httpUrl}/metrics`)).text()).toMatch(/keel_smtp_messages_total\{outcome="accepted"/);
      const pid = natsPid(e);
      expect(isAlive(pid)).toBe(true);
      expect(await e.stop('SIGINT')).toBe(0);
      await waitFor(() => !isAlive(pid), { timeoutMs: 5_000, what: 'nats-server to exit' });
    } finally {
      await e.stop('SIGKILL');
      e.cleanup();
    }
  });

  it('restarts its nats-server when it dies, and reaps one left behind by a killed supervisor', async (ctx) => {
    if (!findTool('nats-server')) return ctx.skip('no nats-server binary: run `npm run provision`');
    const e = await startEngineProcess();
    let e2: EngineProcess | undefined;
    try {
      const first = natsPid(e);
      process.kill(first, 'SIGKILL');
      await waitFor(
        async () => {
          const r = await fetch(`${e.httpUrl}/healthz`);
          return r.status === 200 && natsPid(e) !== first;
        },
        { timeoutMs: 15_000, what: 'a restarted nats-server' },
      );
      const second = natsPid(e);
      expect(isAlive(second)).toBe(true);
      // the supervisor dies without cleaning up: its nats-server is orphaned (its agents notice and leave)...
      e.child.kill('SIGKILL');
      await new Promise((r) => e.child.once('exit', r));
      expect(isAlive(second)).toBe(true);
      // ...and the next start on the same data dir stops it before starting its own.
      e2 = await startEngineProcess({}, { dataDir: e.dataDir });
      await waitFor(() => !isAlive(second), { timeoutMs: 5_000, what: 'the orphaned nats-server to be reaped' });
      expect(natsPid(e2)).not.toBe(second);
    } finally {
      await e.stop('SIGKILL');
      if (e2) await e2.stop('SIGINT');
      e.cleanup();
    }
  });

  it('uses the server named by KEEL_NATS_URL instead of starting one', async (ctx) => {
    const nats = await startNats();
    if (!nats.ok) return ctx.skip(nats.reason);
    const e = await startEngineProcess({ KEEL_NATS_URL: nats.server.url });
    try {
      const h = (await (await fetch(`${e.httpUrl}/healthz`)).json()) as Health;
      expect(h.bus).toMatchObject({ status: 'up', local: false, url: nats.server.url });
      expect(await e.stop('SIGTERM')).toBe(0);
    } finally {
      await e.stop('SIGKILL');
      e.cleanup();
      await nats.server.stop();
    }
  });

  it('reports the bus down (503) while the server it was given is gone, and up again after', async (ctx) => {
    const nats = await startNats();
    if (!nats.ok || !nats.server.local) return ctx.skip(nats.ok ? 'needs a local nats-server it can stop' : nats.reason);
    const e = await startEngineProcess({ KEEL_NATS_URL: nats.server.url });
    try {
      await nats.server.local.stop(2_000);
      await waitFor(async () => (await fetch(`${e.httpUrl}/healthz`)).status === 503, { timeoutMs: 15_000, what: '503 from /healthz' });
      const h = (await (await fetch(`${e.httpUrl}/healthz`)).json()) as Health;
      expect(h.bus.status).toBe('down');
      expect(h.state.status).toBe('up');
      await nats.server.local.start();
      await waitFor(async () => (await fetch(`${e.httpUrl}/healthz`)).status === 200, { timeoutMs: 15_000, what: '200 from /healthz after reconnect' });
    } finally {
      await e.stop('SIGKILL');
      e.cleanup();
      await nats.server.stop();
    }
  });

  it('refuses a bad configuration with a message naming the variable', async () => {
    const { spawnSync } = await import('node:child_process');
    const r = spawnSync(process.execPath, ['cli/keel.ts', 'start'], { env: { ...process.env, KEEL_HTTP_PORT: 'eighty' }, encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/KEEL_HTTP_PORT/);
  });
});
