/**
 * The storage-full condition, in process: the disk guard (KEEL_MIN_FREE_MB), how a full disk is
 * recognized wherever it was raised (state store, bus, fs, SQLite), and the answers it gets: SMTP
 * 452 4.3.1 (at MAIL FROM and after DATA), chat HTTP 507 STORAGE_FULL, the engine API 507 / 503;
 * and which failures an agent waits out (runtime) instead of spending delivery attempts.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Hono } from 'hono';
import { serve } from '@hono/node-server';
import WebSocket from 'ws';
import { createTransport } from 'nodemailer';
import { attachChatWebSocket, createChatRoutes, createDiskGuard, isStorageFull, StorageFullRefusal, ChannelHandlerError, type InboundMessage } from '../../channels/index.ts';
import { StorageFullError, StoreUnavailableError, isStateError } from '../../shared-state/index.ts';
import { classifyMongoError } from '../../shared-state/mongo-store.ts';
import { BusError } from '../../bus/index.ts';
import { isOutage } from '../../runtime/runtime.ts';
import { CircuitBreaker } from '../../runtime/index.ts';
import { startHttpApi } from '../../engine/http.ts';
import { startTestIngress, type IngressFixture } from '../channels/smtp-helpers.ts';

const MiB = 1024 * 1024;
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function guardWith(free: { v: number }, minFreeBytes = 100 * MiB, cacheMs = 0) {
  let calls = 0;
  const g = createDiskGuard({ dir: '/data', minFreeBytes, cacheMs, measure: async () => (calls++, { freeBytes: free.v, totalBytes: 1000 * MiB }) });
  return { g, calls: () => calls };
}

describe('disk guard', () => {
  it('admits above the reserve, refuses below it with a retryable STORAGE_FULL naming the numbers, and lifts when space returns', async () => {
    const free = { v: 500 * MiB };
    const { g } = guardWith(free);
    await expect(g.admit()).resolves.toBeUndefined();
    expect(await g.status()).toMatchObject({ status: 'ok', freeBytes: 500 * MiB, minFreeBytes: 100 * MiB });
    free.v = 60 * MiB;
    const err = await g.admit().catch((x: unknown) => x);
    expect(err).toBeInstanceOf(StorageFullRefusal);
    expect(err).toMatchObject({ code: 'CHANNEL_STORAGE_FULL', retryable: true, freeBytes: 60 * MiB, minFreeBytes: 100 * MiB });
    expect((err as Error).message).toMatch(/60\.0 MiB free under \/data, below the 100\.0 MiB kept in reserve \(KEEL_MIN_FREE_MB\)/);
    expect((await g.status()).status).toBe('low');
    free.v = 101 * MiB;
    await expect(g.admit()).resolves.toBeUndefined();
  });

  it('measures at most once per cacheMs, and 0 turns it off', async () => {
    const free = { v: 1 };
    const cached = guardWith(free, 100 * MiB, 60_000);
    await Promise.all([cached.g.status(), cached.g.status(), cached.g.status()]);
    await cached.g.status();
    expect(cached.calls()).toBe(1);
    const off = guardWith(free, 0);
    await expect(off.g.admit()).resolves.toBeUndefined();
    expect((await off.g.status()).status).toBe('ok');
  });

  it('reports `unknown` (and does not refuse) when the directory cannot be measured', async () => {
    const g = createDiskGuard({ dir: '/nonexistent/keel-data', minFreeBytes: 10 * MiB });
    expect(await g.status()).toMatchObject({ status: 'unknown', error: expect.stringMatching(/ENOENT/) });
    await expect(g.admit()).resolves.toBeUndefined();
  });
});

describe('recognizing a full disk', () => {
  it('from the guard, the state store, SQLite, ENOSPC and JetStream, also when wrapped', () => {
    const jsInsufficient = Object.assign(new Error('insufficient resources'), { name: 'JetStreamApiError', code: 10023 });
    expect(isStorageFull(new StorageFullRefusal('/d', 1, 2))).toBe(true);
    expect(isStorageFull(new StorageFullError('sqlite:/d/keel.db', new Error('database or disk is full')))).toBe(true);
    expect(isStorageFull(Object.assign(new Error('database or disk is full'), { errcode: 13 }))).toBe(true);
    expect(isStorageFull(Object.assign(new Error('write failed'), { code: 'ENOSPC' }))).toBe(true);
    expect(isStorageFull(new BusError('BUS_PUBLISH_FAILED', 'publish to keel.in.email failed', { cause: jsInsufficient, retryable: true }))).toBe(true);
    expect(isStorageFull(new BusError('BUS_PUBLISH_FAILED', 'publish failed: timeout', { retryable: true }))).toBe(false);
    expect(isStorageFull(new StoreUnavailableError('mongodb://x', new Error('ECONNREFUSED')))).toBe(false);
    expect(isStorageFull(new Error('boom'))).toBe(false);
  });

  it('MongoDB driver errors become STATE_UNAVAILABLE or STATE_STORAGE_FULL, both retryable', () => {
    const down = classifyMongoError(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:27017'), { name: 'MongoNetworkError' }), 'mongodb://h/keel');
    expect(isStateError(down, 'STATE_UNAVAILABLE')).toBe(true);
    expect((down as { retryable: boolean }).retryable).toBe(true);
    const selection = classifyMongoError(Object.assign(new Error('Server selection timed out after 10000 ms'), { name: 'MongoServerSelectionError' }), 'mongodb://h/keel');
    expect(isStateError(selection, 'STATE_UNAVAILABLE')).toBe(true);
    const full = classifyMongoError(Object.assign(new Error('Out of disk space'), { name: 'MongoServerError', code: 14031 }), 'mongodb://h/keel');
    expect(isStateError(full, 'STATE_STORAGE_FULL')).toBe(true);
    const dup = Object.assign(new Error('E11000 duplicate key'), { name: 'MongoServerError', code: 11000 });
    expect(classifyMongoError(dup, 'mongodb://h/keel')).toBe(dup);
  });

  it('a connector whose circuit is trying one call tells the other callers to come back in 1 s, not at once', async () => {
    let now = 0;
    const b = new CircuitBreaker('smtp', { failureThreshold: 1, resetMs: 1_000 }, () => now);
    await expect(b.call(() => Promise.reject(new Error('ENOSPC')))).rejects.toThrow('ENOSPC');
    now = 2_000; // half open: the next call is the trial
    let finish: (v: string) => void = () => undefined;
    const trial = b.call(() => new Promise<string>((r) => (finish = r)));
    const other = await b.call(async () => 'x').catch((e: unknown) => e);
    expect(other).toMatchObject({ code: 'AGENT_CIRCUIT_OPEN', retryable: true, nextDelayMs: 1_000 });
    finish('sent');
    await expect(trial).resolves.toBe('sent');
  });

  it('agents wait out the store unreachable or full and the bus not taking writes, and only those', () => {
    expect(isOutage(new StoreUnavailableError('mongodb://h', new Error('down')))).toBe(true);
    expect(isOutage(new StorageFullError('sqlite:/d', new Error('full')))).toBe(true);
    expect(isOutage(new BusError('BUS_PUBLISH_FAILED', 'publish failed', { retryable: true }))).toBe(true);
    expect(isOutage(Object.assign(new Error('step failed'), { cause: new StoreUnavailableError('x', 'y') }))).toBe(true);
    expect(isOutage(new StorageFullRefusal('/d', 1, 2))).toBe(true);
    expect(isOutage(Object.assign(new Error('cannot write outbox/x.eml'), { code: 'CHANNEL_OUTBOX_WRITE_FAILED', cause: Object.assign(new Error('no space left on device'), { code: 'ENOSPC' }) }))).toBe(true);
    expect(isOutage(new BusError('BUS_PERMISSION_DENIED', 'denied'))).toBe(false);
    expect(isOutage(Object.assign(new Error('conflict'), { code: 'STATE_VERSION_CONFLICT' }))).toBe(false);
    expect(isOutage(new Error('handler bug'))).toBe(false);
  });
});

describe('answers to a full disk', () => {
  async function send(fx: IngressFixture): Promise<{ code: number; response: string }> {
    const t = createTransport({ host: '127.0.0.1', port: fx.smtp.port, secure: false, ignoreTLS: true });
    try {
      const info = await t.sendMail({ from: 'ada@example.com', to: 'support@keel.local', subject: 'Hi', text: 'Hello there.', messageId: `<sf-${Math.random()}@example.com>` });
      return { code: 250, response: info.response };
    } catch (err) {
      const e = err as { responseCode?: number; response?: string };
      return { code: e.responseCode ?? 0, response: e.response ?? '' };
    } finally {
      t.close();
    }
  }

  it('SMTP: 452 4.3.1 at MAIL FROM below the reserve (the handler never runs), 452 after DATA when a write found the disk full, 451 for another refusal', async () => {
    let admit: Error | undefined = new StorageFullRefusal('/data', 5 * MiB, 100 * MiB);
    let fail: Error | undefined;
    const handled: InboundMessage[] = [];
    const fx = await startTestIngress({
      admit: async () => {
        if (admit) throw admit;
      },
      onMessage: async (m) => {
        if (fail) throw fail;
        handled.push(m);
      },
    });
    cleanups.push(() => fx.stop());
    const atMailFrom = await send(fx);
    expect(atMailFrom.code).toBe(452);
    expect(atMailFrom.response).toMatch(/^452 4\.3\.1 Insufficient system storage/);
    expect(handled).toHaveLength(0);
    admit = undefined;
    fail = new StorageFullError('sqlite:/data/keel.db', Object.assign(new Error('database or disk is full'), { errcode: 13 }));
    const afterData = await send(fx);
    expect(afterData.code).toBe(452);
    expect(afterData.response).toMatch(/^452 4\.3\.1 /);
    admit = new ChannelHandlerError('store not reachable', { retryable: true });
    expect((await send(fx)).code).toBe(451);
    admit = undefined;
    fail = undefined;
    expect((await send(fx)).code).toBe(250);
    expect(fx.smtp.stats()).toEqual({ accepted: 1, quarantined: 0, rejected: 0, deferred: 1, storageFull: 2 });
  });

  it('chat HTTP: 507 STORAGE_FULL with Retry-After, from the guard or from the handler', async () => {
    let admit: Error | undefined = new StorageFullRefusal('/data', 5 * MiB, 100 * MiB);
    let fail: Error | undefined;
    const app = new Hono();
    app.route('/', createChatRoutes({ admit: async () => void (admit && (() => { throw admit; })()), onMessage: async () => void (fail && (() => { throw fail; })()) }));
    const post = () => app.request('/v1/chat/messages', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ customer: { handle: 'h1' }, text: 'hello' }) });
    let r = await post();
    expect(r.status).toBe(507);
    expect(r.headers.get('retry-after')).toBe('30');
    const body = (await r.json()) as { error: string; message: string };
    expect(body).toMatchObject({ error: 'STORAGE_FULL', message: expect.stringMatching(/low on disk space, try again later/) });
    expect(body.message).not.toMatch(/\/data|MiB/); // no paths or sizes for the customer
    admit = undefined;
    fail = new BusError('BUS_PUBLISH_FAILED', 'publish failed', { retryable: true, cause: Object.assign(new Error('insufficient resources'), { code: 10023 }) });
    r = await post();
    expect(r.status).toBe(507);
    fail = undefined;
    expect((await post()).status).toBe(202);
  });

  it('chat WebSocket: an error frame STORAGE_FULL with retryAfterS, and the socket stays open', async () => {
    let fail: Error | undefined = new StorageFullRefusal('/data', 5 * MiB, 100 * MiB);
    const server = await new Promise<Server>((resolve) => {
      const s = serve({ fetch: new Hono().fetch, hostname: '127.0.0.1', port: 0 }, () => resolve(s as Server));
    });
    const hub = attachChatWebSocket(server, { onMessage: async () => void (fail && (() => { throw fail; })()) });
    cleanups.push(async () => {
      await hub.close();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    });
    const ws = new WebSocket(`ws://127.0.0.1:${(server.address() as AddressInfo).port}/v1/chat/ws`);
    const frames: Array<{ type: string; error?: string; retryAfterS?: number; clientMessageId?: string }> = [];
    ws.on('message', (d) => frames.push(JSON.parse(String(d))));
    await new Promise((r, j) => (ws.once('open', r), ws.once('error', j)));
    cleanups.push(async () => void ws.close());
    ws.send(JSON.stringify({ type: 'message', customer: { handle: 'h1' }, text: 'hello', clientMessageId: 'c1' }));
    await expect.poll(() => frames.length).toBe(1);
    expect(frames[0]).toMatchObject({ type: 'error', error: 'STORAGE_FULL', retryAfterS: 30, clientMessageId: 'c1' });
    fail = undefined;
    ws.send(JSON.stringify({ type: 'message', customer: { handle: 'h1' }, text: 'hello again', clientMessageId: 'c2' }));
    await expect.poll(() => frames.length).toBe(2);
    expect(frames[1]).toMatchObject({ type: 'ack', clientMessageId: 'c2' });
  });

  it('engine API: a write that found the disk full is 507 STORAGE_FULL, an unreachable store 503 STATE_UNAVAILABLE', async () => {
    const api = await startHttpApi({
      host: '127.0.0.1',
      port: 0,
      health: async () => ({ status: 'ok', version: 'test', uptime_s: 0, bus: { status: 'up' }, state: { status: 'up' } }),
      mount: (app) => {
        app.post('/full', () => {
          throw new StorageFullError('sqlite:/data/keel.db', new Error('database or disk is full'));
        });
        app.post('/down', () => {
          throw new StoreUnavailableError('mongodb://h/keel', new Error('ECONNREFUSED'));
        });
      },
    });
    cleanups.push(() => api.close());
    const full = await fetch(`http://127.0.0.1:${api.port}/full`, { method: 'POST' });
    expect(full.status).toBe(507);
    expect(await full.json()).toMatchObject({ error: 'STORAGE_FULL' });
    const down = await fetch(`http://127.0.0.1:${api.port}/down`, { method: 'POST' });
    expect(down.status).toBe(503);
    expect(down.headers.get('retry-after')).toBe('5');
    expect(await down.json()).toMatchObject({ error: 'STATE_UNAVAILABLE' });
  });
});
