/**
 * Outages (issue 15), against `keel start` as a process under steady SMTP load (nodemailer):
 *
 * (a) the supervised nats-server is SIGKILLed twice mid-load: the supervisor restarts it, and
 *     every mail answered 250 ends in exactly one completed run, one ticket and one reply in the
 *     outbox, with no dead letters;
 * (b) the system of record (KEEL_STATE=mongodb://… on a local FerretDB) is stopped for 30 s:
 *     /healthz answers 503 with the state down, SMTP answers 451 (never 250) while it is gone, the
 *     agents hold their tasks instead of dead-lettering them, and once it is back everything
 *     accepted completes exactly once.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { findTool, REPO_ROOT } from '../../config/index.ts';
import { startEngineProcess, startMongo, waitFor, isAlive, reportSkip, tempDir, uniqueName, type EngineProcess } from '../helpers/index.ts';
import { adminBus, repliesByMessage, runStatus, sendMail, steadyMail, streamsReport, waitForRuns, type MailResult } from './load.ts';

const AGENTS = { KEEL_AGENTS: 'intake,triage,summarizer,reply-suggester,sender,escalation', KEEL_AGENT_HOSTS: 'all' };
const COMMON = { ...AGENTS, KEEL_POLICY_REPLY_EMAIL: 'auto', KEEL_RATE_LIMIT_SENDER: 'off', KEEL_RATE_LIMIT_CHANNEL: 'off', KEEL_WORKFLOW_SWEEP_MS: '500', KEEL_LOG_LEVEL: 'warn' };

const natsPid = (e: EngineProcess) => Number(readFileSync(join(e.dataDir, 'nats', 'nats-server.pid'), 'utf8'));
const healthOf = async (e: EngineProcess) => {
  const r = await fetch(`${e.httpUrl}/healthz`).catch(() => undefined);
  return r ? { code: r.status, body: (await r.json()) as { status: string; bus: { status: string }; state: { status: string } } } : undefined;
};

/** Tickets by customer email, read with the CLI from the engine's store. */
function ticketsByCustomer(e: EngineProcess, env: Record<string, string> = {}): Map<string, number> {
  const r = spawnSync(process.execPath, [join(REPO_ROOT, 'cli', 'keel.ts'), 'entity', 'list', '--type', 'ticket', '--limit', '1000', '--json'], {
    env: { ...process.env, KEEL_DATA_DIR: e.dataDir, KEEL_NATS_PORT: String(e.natsPort), KEEL_LOG_LEVEL: 'silent', ...env },
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`keel entity list failed: ${r.stderr}`);
  const out = new Map<string, number>();
  for (const t of (JSON.parse(r.stdout) as { items: Array<{ state: { customerEmail?: string } }> }).items) {
    const k = t.state.customerEmail ?? '?';
    out.set(k, (out.get(k) ?? 0) + 1);
  }
  return out;
}

/** Every accepted mail: run completed, one reply, one ticket for its sender; no dead letters; all on KEEL_IN. */
async function expectEachAcceptedOnce(e: EngineProcess, mails: MailResult[], o: { timeoutMs: number; cliEnv?: Record<string, string>; label: string }): Promise<void> {
  const ids = mails.map((m) => m.messageId);
  await waitForRuns(e, ids, o.timeoutMs);
  await new Promise((r) => setTimeout(r, 2_000)); // a late duplicate would show up here
  const replies = repliesByMessage(e.dataDir);
  for (const id of ids) expect(replies.get(id), `replies to ${id}`).toBe(1);
  const tickets = ticketsByCustomer(e, o.cliEnv);
  for (const m of mails) expect(tickets.get(m.from), `tickets of ${m.from}`).toBe(1);
  const nc = await adminBus(e);
  try {
    const report = await streamsReport(nc);
    expect(report.streams['KEEL_DLQ']?.messages, 'dead letters').toBe(0);
    for (const id of ids) expect(report.inboundMessageIds.has(id), `${id} on KEEL_IN`).toBe(true);
  } finally {
    await nc.close();
  }
  console.log(`[outage ${o.label}] ${ids.length} accepted mails: each one completed run, one ticket, one reply; no dead letters`);
}

describe('outages under load', () => {
  it('(a) nats-server SIGKILLed twice under load: every accepted mail ends in exactly one completed run and one reply', async (ctx) => {
    if (!findTool('nats-server')) return ctx.skip('no nats-server binary: run `npm run provision`');
    const e = await startEngineProcess(COMMON);
    try {
      const warm = await sendMail(e.smtpPort, 'na-warm', 0);
      expect(warm.code).toBe(250);
      await waitFor(async () => (await runStatus(e, warm.messageId)) === 'completed', { timeoutMs: 120_000, intervalMs: 1_000, what: 'the warm-up run to complete' });

      const load = steadyMail(() => e.smtpPort, 'na', 250);
      const restarts: number[] = [];
      try {
        for (let k = 0; k < 2; k++) {
          await waitFor(() => load.results.filter((r) => r.code === 250).length >= 10 * (k + 1), { timeoutMs: 90_000, what: 'mail accepted under load' });
          const before = natsPid(e);
          const t0 = Date.now();
          process.kill(before, 'SIGKILL');
          await waitFor(async () => natsPid(e) !== before && isAlive(natsPid(e)) && (await healthOf(e))?.code === 200, { timeoutMs: 30_000, intervalMs: 200, what: 'a restarted nats-server and /healthz 200' });
          restarts.push(Date.now() - t0);
        }
        await waitFor(() => load.results.filter((r) => r.code === 250).length >= 30, { timeoutMs: 90_000, what: 'mail accepted after the restarts' });
      } finally {
        await load.stop();
      }
      await load.retryUnaccepted(Date.now() + 60_000);
      const latest = [...load.latest().values()];
      for (const r of latest) expect(r.code, `${r.messageId}: ${r.response}`).toBe(250);
      const codes = load.results.map((r) => r.code);
      console.log(`[outage a] ${latest.length} mails; answers ${JSON.stringify(Object.fromEntries([...new Set(codes)].map((c) => [c, codes.filter((x) => x === c).length])))}; healthy again ${restarts.join(' ms, ')} ms after each SIGKILL`);
      expect(codes.filter((c) => c >= 500)).toEqual([]);
      await expectEachAcceptedOnce(e, [warm, ...latest], { timeoutMs: 240_000, label: 'a' });
    } finally {
      await e.stop('SIGINT');
      e.cleanup();
    }
  }, 600_000);

  it('(b) the state store (MongoDB protocol) gone for 30 s under load: 503 and SMTP 451 meanwhile, agents wait, then everything accepted completes once', async (ctx) => {
    if (!findTool('nats-server')) return ctx.skip('no nats-server binary: run `npm run provision`');
    const m = await startMongo();
    if (!m.ok) {
      reportSkip('state store outage', m.reason);
      return ctx.skip(m.reason);
    }
    const mongo = m.server;
    if (!mongo.pause || !mongo.resume) {
      await mongo.stop();
      const reason = `the MongoDB server came from ${mongo.source} and cannot be stopped and started by the test (needs the local FerretDB)`;
      reportSkip('state store outage', reason);
      return ctx.skip(reason);
    }
    const state = `${mongo.url.replace(/\/$/, '')}/${uniqueName('outage')}`;
    // no local embedding model (memory and the intent cache say so and step aside): the store is what is tested here
    const noModels = tempDir('keel-no-models-');
    const e = await startEngineProcess({ ...COMMON, KEEL_STATE: state, KEEL_MODELS_DIR: noModels.path, KEEL_AUTO_PROVISION: '0' });
    try {
      const warm = await sendMail(e.smtpPort, 'mo-warm', 0);
      expect(warm.code).toBe(250);
      await waitFor(async () => (await runStatus(e, warm.messageId)) === 'completed', { timeoutMs: 180_000, intervalMs: 1_000, what: 'the warm-up run to complete' });

      // light load: the MongoDB adapter on FerretDB (SQLite) takes seconds per inbound run (docs/reliability.md)
      const load = steadyMail(() => e.smtpPort, 'mo', 8_000);
      let pausedAt = 0;
      let resumedAt = 0;
      let inFlightAtPause = 0;
      const burstMails: MailResult[] = [];
      const during: Array<{ code: number; body: { state: { status: string } } } | undefined> = [];
      try {
        await waitFor(() => load.results.filter((r) => r.code === 250).length >= 1, { timeoutMs: 90_000, what: 'mail accepted before the outage' });
        // a burst, so that runs are in the middle of their steps when the store goes away
        const burst = await Promise.all([1, 2].map((k) => sendMail(e.smtpPort, 'mo-burst', k)));
        expect(burst.map((b) => b.code)).toEqual([250, 250]);
        burstMails.push(...burst);
        for (const b of burst) if ((await runStatus(e, b.messageId)) !== 'completed') inFlightAtPause++;
        // the outage starts once the server has exited (it serves open connections while it shuts down)
        await mongo.pause();
        pausedAt = Date.now();
        // 30 s without the system of record
        while (Date.now() - pausedAt < 30_000) {
          during.push(await healthOf(e));
          await new Promise((r) => setTimeout(r, 2_000));
        }
        // resume() returns once the server answers: the outage ends when it is started
        resumedAt = Date.now();
        await mongo.resume();
        await waitFor(async () => (await healthOf(e))?.code === 200, { timeoutMs: 60_000, intervalMs: 500, what: '/healthz 200 after the store is back' });
        await waitFor(() => load.results.some((r) => r.code === 250 && r.at > resumedAt), { timeoutMs: 90_000, what: 'mail accepted again after the outage' });
      } finally {
        await load.stop();
      }
      // a transaction that started after the server exited and ended before it was started again: 451,
      // never 250 (one that started before may get 250 late: its run was stored before the server went
      // away; one that waited for the server may get 250 once it is back)
      const inOutage = load.results.filter((r) => r.startedAt > pausedAt && r.at < resumedAt);
      expect(inOutage.length).toBeGreaterThan(0);
      expect(inOutage.filter((r) => r.code !== 451), 'answers while the store was down').toEqual([]);
      // /healthz: 503 with the state down during the outage
      const seen = during.filter((h) => h && h.code === 503 && h.body.state.status === 'down');
      expect(seen.length).toBeGreaterThan(during.length / 2);

      await load.retryUnaccepted(Date.now() + 180_000, 6_000);
      const latest = [...load.latest().values()];
      for (const r of latest) expect(r.code, `${r.messageId}: ${r.response}`).toBe(250);
      const codes = load.results.map((r) => r.code);
      expect(codes.filter((c) => c >= 500)).toEqual([]);
      const paused = e.output().split('\n').filter((l) => l.includes('task paused')).length;
      console.log(`[outage b] ${latest.length + burstMails.length} mails; answers ${JSON.stringify(Object.fromEntries([...new Set(codes)].map((c) => [c, codes.filter((x) => x === c).length])))}; ${inOutage.length} answered 451 during the outage; /healthz 503 in ${seen.length}/${during.length} probes; ${inFlightAtPause} runs in flight at the outage, ${paused} agent tasks paused (held, not retried)`);
      await expectEachAcceptedOnce(e, [warm, ...burstMails, ...latest], { timeoutMs: 420_000, cliEnv: { KEEL_STATE: state }, label: 'b' });
    } finally {
      await e.stop('SIGINT');
      e.cleanup();
      noModels.remove();
      await mongo.stop();
    }
  }, 900_000);
});
