/**
 * Abuse limits at the inbound edge (issue 14): the inbound feature's ingress (agents/inbound/
 * ingress.ts) as the engine hosts it — real SMTP listener, real nats-server, real SQLite store —
 * with KEEL_RATE_LIMIT_SENDER=3/1m and KEEL_RATE_LIMIT_CHANNEL=8/1m, driven by a real SMTP
 * client (nodemailer), real HTTP and a real WebSocket.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { Hono } from 'hono';
import { serve } from '@hono/node-server';
import { createTransport } from 'nodemailer';
import { WebSocket } from 'ws';
import { ConfigError, loadConfig, parseRateLimit } from '../../config/index.ts';
import { connectBus, createBus } from '../../bus/index.ts';
import { openStore, type StateStore, type AuditRecord } from '../../shared-state/index.ts';
import { WorkflowEngine } from '../../workflows/index.ts';
import type { Ingress } from '../../runtime/index.ts';
import { inboundMessage } from '../../agents/inbound/index.ts';
import { startIngress } from '../../agents/inbound/ingress.ts';
import { createLogger } from '../../observability/index.ts';
import { freePort, startNats, tempDir, uniqueName, type NatsHandle } from '../helpers/index.ts';
import { ALL_ENTITY_TYPES } from '../helpers/types.ts';

let nats: NatsHandle | undefined;
let skip = '';
let store: StateStore;
let ingress: Ingress;
let http: Server;
let httpUrl = '';
let smtpPort = 0;
const dir = tempDir('keel-ratelimit-');
const closers: Array<() => Promise<unknown>> = [];

beforeAll(async () => {
  const n = await startNats();
  if (!n.ok) {
    skip = n.reason;
    return;
  }
  nats = n.server;
  const prefix = uniqueName('rl');
  smtpPort = await freePort();
  const config = loadConfig({
    KEEL_DATA_DIR: join(dir.path, 'data'),
    KEEL_SMTP_PORT: String(smtpPort),
    KEEL_SMTP_FROM: 'support@keel.local',
    KEEL_RATE_LIMIT_SENDER: '3/1m',
    KEEL_RATE_LIMIT_CHANNEL: '8/1m',
    KEEL_SUBJECT_PREFIX: prefix,
  });
  const nc = await connectBus({ servers: nats.url });
  closers.push(() => nc.close());
  const bus = createBus(nc, { prefix });
  await bus.provision();
  store = await openStore(`sqlite:${join(dir.path, 'keel.db')}`, { types: ALL_ENTITY_TYPES });
  closers.push(() => store.close());
  const workflows = new WorkflowEngine({ store, bus, actor: { kind: 'system', id: 'engine' }, catalog: { [inboundMessage.name]: inboundMessage } });
  ingress = await startIngress({ config, bus, store, workflows, logger: createLogger('rate-limit-test', { level: 'silent' }) });
  closers.push(() => ingress.close());
  const app = new Hono();
  ingress.mount?.(app);
  http = await new Promise<Server>((resolve) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s as Server)) as Server;
  });
  ingress.attach?.(http);
  closers.push(() => new Promise((r) => http.close(() => r(undefined))));
  httpUrl = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
}, 60_000);

afterAll(async () => {
  for (const c of closers.reverse()) await c().catch(() => undefined);
  await nats?.stop();
  dir.remove();
});

/** One mail over its own SMTP connection; resolves with the server's reply code (250 or the refusal's). */
async function mail(from: string, n: number, mailFrom?: string): Promise<{ code: number; response: string }> {
  const t = createTransport({ host: '127.0.0.1', port: smtpPort, secure: false, ignoreTLS: true, connectionTimeout: 10_000 });
  try {
    const info = await t.sendMail({ from, to: 'support@keel.local', ...(mailFrom ? { envelope: { from: mailFrom, to: 'support@keel.local' } } : {}), subject: `Question ${n}`, text: `Hello, this is message ${n} from ${from}.`, messageId: `<${uniqueName('m')}@example.com>` });
    return { code: Number(/^(\d{3})/.exec(info.response)?.[1] ?? 0), response: info.response };
  } catch (err) {
    const e = err as { responseCode?: number; response?: string; message: string };
    return { code: e.responseCode ?? 0, response: e.response ?? e.message };
  } finally {
    t.close();
  }
}

const audits = async (): Promise<AuditRecord[]> => (await store.exportAudit()).filter((r) => r.action === 'ingress.rate_limited');

function chat(handle: string, text: string): Promise<Response> {
  return fetch(`${httpUrl}/v1/chat/messages`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ customer: { handle }, text }) });
}

describe('KEEL_RATE_LIMIT_SENDER / KEEL_RATE_LIMIT_CHANNEL', () => {
  it('parse N/duration (units s, m, h, d) or off, and name the variable when malformed', () => {
    expect(loadConfig({}).rateLimits).toEqual({ sender: { points: 20, durationMs: 600_000 }, channel: { points: 600, durationMs: 60_000 } });
    expect(loadConfig({ KEEL_RATE_LIMIT_SENDER: '5/30s', KEEL_RATE_LIMIT_CHANNEL: 'off' }).rateLimits).toEqual({ sender: { points: 5, durationMs: 30_000 }, channel: null });
    expect(parseRateLimit('100/h')).toEqual({ points: 100, durationMs: 3_600_000 });
    expect(parseRateLimit('2/1d')).toEqual({ points: 2, durationMs: 86_400_000 });
    const err = (() => {
      try {
        loadConfig({ KEEL_RATE_LIMIT_SENDER: '20 per minute', KEEL_RATE_LIMIT_CHANNEL: '0/1m' });
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).code).toBe('KEEL_CONFIG_INVALID');
    expect((err as ConfigError).issues).toEqual([
      expect.stringMatching(/^KEEL_RATE_LIMIT_SENDER: '20 per minute' is not N\/duration/),
      expect.stringMatching(/^KEEL_RATE_LIMIT_CHANNEL: '0\/1m': N must be at least 1/),
    ]);
  });
});

describe('inbound rate limits (KEEL_RATE_LIMIT_SENDER=3/1m, KEEL_RATE_LIMIT_CHANNEL=8/1m)', () => {
  it('SMTP: the 4th mail from one sender gets 421 4.7.0, another sender still gets through, then the channel limit stops everyone', async (ctx) => {
    if (!nats) return ctx.skip(skip);
    const alice = [];
    for (let i = 1; i <= 5; i++) alice.push(await mail('alice@example.com', i));
    expect(alice.slice(0, 3).map((r) => r.code)).toEqual([250, 250, 250]);
    expect(alice[3]!.code, alice[3]!.response).toBe(421);
    expect(alice[3]!.response).toMatch(/4\.7\.0 too many messages from this sender, try again in \d+ s/);
    expect(alice[4]!.code).toBe(421);
    // another sender has its own allowance (alice's refused mails did not use the channel's)
    expect((await mail('bob@example.org', 1)).code).toBe(250);
    // another MAIL FROM does not help: the header From counts too, and alice is over her limit
    const relayed = await mail('Alice <alice@example.com>', 6, 'bounces@lists.example.net');
    expect(relayed.code, relayed.response).toBe(421);
    expect(relayed.response).toMatch(/4\.7\.0 too many messages from this sender/);
    // 4 taken from the channel so far (the refused ones gave theirs back); 4 more fill its 8
    for (const [who, k] of [['carol@example.net', 3], ['dave@example.com', 1]] as const) for (let i = 1; i <= k; i++) expect((await mail(who, i)).code).toBe(250);
    const erin = await mail('erin@example.com', 1);
    expect(erin.code).toBe(421);
    expect(erin.response).toMatch(/4\.7\.0 too many messages for this server/);
    // each accepted mail started one run; none of the refused ones did
    expect((await store.query('workflow_run', { limit: 100 })).total).toBe(8);
    const stats = ingress.stats!();
    expect(stats.keel_ingress_rate_limited).toMatchObject({ email_sender: 3, email_channel: 1 });
    expect(stats.keel_smtp_messages).toMatchObject({ accepted: 8 });
  });

  it('SMTP: one audit record per key and window, with the domain and a salted hash, never the address', async (ctx) => {
    if (!nats) return ctx.skip(skip);
    const email = (await audits()).filter((r) => r.subject === 'channel/email');
    // alice was refused three times (once by her header From), erin (by the channel limit) once: two records
    expect(email.map((r) => r.details.scope).sort()).toEqual(['channel', 'sender']);
    const forAlice = email.find((r) => r.details.scope === 'sender')!;
    expect(forAlice.actor).toEqual({ kind: 'system', id: 'smtp' });
    expect(forAlice.details).toMatchObject({ channel: 'email', senderDomain: 'example.com', limit: '3/1m' });
    expect(forAlice.details.senderHash).toMatch(/^[0-9a-f]{16}$/);
    expect(JSON.stringify(email)).not.toMatch(/alice|erin/);
    expect((await store.verifyAudit()).ok).toBe(true);
  });

  it('chat over HTTP: 429 RATE_LIMITED with Retry-After for one handle, others still served; the WebSocket gets an error frame', async (ctx) => {
    if (!nats) return ctx.skip(skip);
    const codes = [];
    for (let i = 1; i <= 3; i++) codes.push((await chat('spammer', `hi ${i}`)).status);
    expect(codes).toEqual([202, 202, 202]);
    const r = await chat('spammer', 'hi 4');
    expect(r.status).toBe(429);
    const wait = Number(r.headers.get('retry-after'));
    expect(wait).toBeGreaterThan(0);
    expect(wait).toBeLessThanOrEqual(60);
    expect(await r.json()).toEqual({ error: 'RATE_LIMITED', message: `too many messages from this customer: try again in ${wait} s` });
    expect((await chat('someone-else', 'hello')).status).toBe(202);

    // the WebSocket shares the chat channel's limiter: the same handle is refused there too
    const ws = new WebSocket(`${httpUrl.replace('http', 'ws')}/v1/chat/ws`);
    await new Promise((res, rej) => {
      ws.once('open', res);
      ws.once('error', rej);
    });
    const frame = new Promise<Record<string, unknown>>((res) => ws.once('message', (d) => res(JSON.parse(String(d)) as Record<string, unknown>)));
    ws.send(JSON.stringify({ type: 'message', customer: { handle: 'spammer' }, text: 'again', clientMessageId: 'c-1' }));
    expect(await frame).toMatchObject({ type: 'error', error: 'RATE_LIMITED', clientMessageId: 'c-1' });
    ws.close();

    expect(ingress.stats!().keel_ingress_rate_limited).toMatchObject({ chat_sender: 2, chat_channel: 0 });
    const chatAudits = (await audits()).filter((a) => a.subject === 'channel/chat');
    expect(chatAudits).toHaveLength(1);
    expect(chatAudits[0]).toMatchObject({ actor: { kind: 'system', id: 'chat' }, details: { channel: 'chat', scope: 'sender' } });
    expect(chatAudits[0]!.details.senderDomain).toBeUndefined();
    expect(JSON.stringify(chatAudits)).not.toContain('spammer');
  });
});
