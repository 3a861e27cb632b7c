/**
 * Shared by the full-disk and outage tests: mail sent with a real SMTP client (nodemailer), the
 * run each mail started (GET /v1/runs/:id), the replies in the outbox, the bus as the engine's
 * admin, and a steady sender that records every answer.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { createTransport } from 'nodemailer';
import { connectBus, type NatsConnection } from '../../bus/index.ts';
import type { InboundMessage } from '../../channels/index.ts';
import { runIdFor } from '../../agents/inbound/ingress.ts';
import type { EngineProcess } from '../helpers/index.ts';

export interface MailResult {
  i: number;
  messageId: string;
  /** the sender (one per mail: each mail is its own customer and ticket) */
  from: string;
  /** the SMTP reply code of the transaction: 250, 451, 452 …; 0 when the connection failed */
  code: number;
  response: string;
  /** when the SMTP transaction started and when its answer came */
  startedAt: number;
  at: number;
}

/** Sends mail number `i` (its own sender and Message-ID) and returns the server's answer. */
export async function sendMail(port: number, tag: string, i: number): Promise<MailResult> {
  const messageId = `<${tag}-${i}@example.com>`;
  const from = `${tag}.${i}@example.com`;
  const startedAt = Date.now();
  const t = createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true, connectionTimeout: 10_000, greetingTimeout: 10_000, socketTimeout: 30_000 });
  try {
    const info = await t.sendMail({
      from,
      to: 'support@keel.local',
      subject: `Invoice question ${i}`,
      text: `Hello, how do I download the PDF of invoice ${1000 + i}? Thanks.`,
      messageId,
    });
    return { i, messageId, from, code: Number(/^(\d{3})/.exec(info.response)?.[1] ?? 0), response: info.response, startedAt, at: Date.now() };
  } catch (err) {
    const e = err as { responseCode?: number; response?: string; message: string };
    return { i, messageId, from, code: e.responseCode ?? 0, response: e.response ?? e.message, startedAt, at: Date.now() };
  } finally {
    t.close();
  }
}

/** The run an email with this Message-ID started (the ingress derives it from the channel and the id). */
export function runIdOfMail(messageId: string): string {
  return runIdFor({ channel: 'email', idempotencyKey: messageId } as InboundMessage);
}

export async function runStatus(e: EngineProcess, messageId: string): Promise<string | undefined> {
  const r = await fetch(`${e.httpUrl}/v1/runs/${runIdOfMail(messageId)}`, { headers: e.auth }).catch(() => undefined);
  if (!r || r.status !== 200) return undefined;
  return ((await r.json()) as { status?: string }).status;
}

/**
 * Waits until the run of every Message-ID is completed; on timeout the error names each run that
 * is not, with its steps, and the engine's last warnings (what a failure needs to be understood).
 */
export async function waitForRuns(e: EngineProcess, ids: string[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let pending = ids;
  while (Date.now() < deadline) {
    const st = await Promise.all(pending.map(async (id) => [id, await runStatus(e, id)] as const));
    pending = st.filter(([, s]) => s !== 'completed').map(([id]) => id);
    if (pending.length === 0) return;
    await new Promise((r) => setTimeout(r, 2_000));
  }
  const runs = await Promise.all(
    pending.slice(0, 10).map(async (id) => {
      const r = await fetch(`${e.httpUrl}/v1/runs/${runIdOfMail(id)}`, { headers: e.auth }).catch(() => undefined);
      const j = r && r.status === 200 ? ((await r.json()) as { status: string; steps?: Record<string, Record<string, unknown> & { status: string }> }) : undefined;
      const open = Object.entries(j?.steps ?? {}).filter(([, v]) => v.status !== 'completed' && v.status !== 'skipped' && v.status !== 'pending');
      return `${id}: ${j ? `${j.status}; ${open.map(([k, v]) => `${k} ${JSON.stringify(v, (key, val: unknown) => (key === 'input' || key === 'output' ? undefined : val))}`).join('; ')}` : `no run (${r?.status})`}`;
    }),
  );
  const warnings = e.output().split('\n').filter((l) => /"level":(40|50)/.test(l)).slice(-15).map((l) => l.slice(0, 400));
  const kept = join(tmpdir(), `keel-engine-output-${Date.now()}.log`);
  writeFileSync(kept, e.output());
  throw new Error(`${pending.length} of ${ids.length} runs not completed after ${timeoutMs} ms:\n${runs.join('\n')}\nlast engine warnings (all of its output: ${kept}):\n${warnings.join('\n')}`);
}

/** How many replies in the outbox answer each Message-ID (by In-Reply-To). */
export function repliesByMessage(dataDir: string): Map<string, number> {
  const out = new Map<string, number>();
  let files: string[];
  try {
    files = readdirSync(join(dataDir, 'outbox')).filter((f) => f.endsWith('.eml'));
  } catch {
    return out;
  }
  for (const f of files) {
    const m = /^In-Reply-To: (<[^>]+>)$/m.exec(readFileSync(join(dataDir, 'outbox', f), 'utf8'));
    if (m) out.set(m[1]!, (out.get(m[1]!) ?? 0) + 1);
  }
  return out;
}

/** A connection to the engine's bus as its admin user (credentials.json in the data dir). */
export async function adminBus(e: EngineProcess): Promise<NatsConnection> {
  const admin = (JSON.parse(readFileSync(join(e.dataDir, 'credentials.json'), 'utf8')) as { admin: { user: string; password: string } }).admin;
  return connectBus({ servers: `nats://127.0.0.1:${e.natsPort}`, user: admin.user, pass: admin.password });
}

/** Every stream's info (each must answer), and the Message-IDs of the raw mail kept on KEEL_IN. */
export async function streamsReport(nc: NatsConnection): Promise<{ streams: Record<string, { messages: number; bytes: number }>; inboundMessageIds: Set<string> }> {
  const jsm = await jetstreamManager(nc);
  const streams: Record<string, { messages: number; bytes: number }> = {};
  for await (const si of jsm.streams.list()) {
    const info = await jsm.streams.info(si.config.name);
    streams[si.config.name] = { messages: info.state.messages, bytes: info.state.bytes };
  }
  const inboundMessageIds = new Set<string>();
  const inInfo = await jsm.streams.info('KEEL_IN');
  for (let seq = inInfo.state.first_seq; seq <= inInfo.state.last_seq && inInfo.state.messages > 0; seq++) {
    const m = await jsm.streams.getMessage('KEEL_IN', { seq }).catch(() => null);
    const id = m?.json<{ messageId?: string }>().messageId;
    if (id) inboundMessageIds.add(id);
  }
  return { streams, inboundMessageIds };
}

/**
 * Sends one mail every `everyMs` (each its own sender and Message-ID) until stopped, recording
 * every answer; `retry` sends again (same Message-ID) what was not accepted, as an MTA would.
 */
export function steadyMail(port: () => number, tag: string, everyMs: number) {
  const results: MailResult[] = [];
  let next = 0;
  let stopped = false;
  const inFlight = new Set<Promise<void>>();
  const loop = (async () => {
    while (!stopped) {
      const p = sendMail(port(), tag, next++).then((r) => void results.push(r));
      inFlight.add(p);
      void p.finally(() => inFlight.delete(p));
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return {
    results,
    /** the latest answer to each mail number */
    latest(): Map<number, MailResult> {
      const m = new Map<number, MailResult>();
      for (const r of results) m.set(r.i, r);
      return m;
    },
    async stop(): Promise<void> {
      stopped = true;
      await loop;
      await Promise.all([...inFlight]);
    },
    /**
     * sends again every mail whose latest answer was not 250, `spacingMs` apart (an MTA spreads
     * its retries), until each is accepted or `deadline` passes
     */
    async retryUnaccepted(deadline: number, spacingMs = 0): Promise<void> {
      for (;;) {
        const pending = [...this.latest().values()].filter((r) => r.code !== 250);
        if (pending.length === 0 || Date.now() > deadline) return;
        for (const r of pending) {
          results.push(await sendMail(port(), tag, r.i));
          if (spacingMs) await new Promise((res) => setTimeout(res, spacingMs));
        }
        await new Promise((r) => setTimeout(r, 500));
      }
    },
  };
}
