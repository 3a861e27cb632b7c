/**
 * Full disk (issue 15): `keel start` with its data dir on a small tmpfs, under steady SMTP load,
 * while a filler file takes the space. Below KEEL_MIN_FREE_MB new work is refused with the
 * documented codes (SMTP 452 4.3.1, HTTP 507 STORAGE_FULL, /healthz 503 disk low); then the disk
 * fills completely (SQLite SQLITE_FULL, JetStream ENOSPC in the middle of runs). When the filler
 * is removed the engine recovers by itself (no restart, no operator): new mail is taken again,
 * every accepted mail's run completes with exactly one reply, the SQLite files pass
 * `PRAGMA integrity_check`, and every stream answers with every accepted mail on KEEL_IN.
 *
 * Needs root (mount -t tmpfs); otherwise it skips with the reason.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { z } from 'zod';
import { findTool } from '../../config/index.ts';
import { defineEntityType, isStateError, openStore } from '../../shared-state/index.ts';
import { startEngineProcess, waitFor, reportSkip, type EngineProcess } from '../helpers/index.ts';
import { adminBus, repliesByMessage, runStatus, sendMail, steadyMail, streamsReport, waitForRuns } from './load.ts';

const MiB = 1024 * 1024;
const TMPFS_MB = 192;
const MIN_FREE_MB = 40;

let mnt = '';
let mounted = false;
let skip = '';
let engine: EngineProcess | undefined;

const freeBytes = () => {
  const s = statfsSync(mnt);
  return s.bavail * s.bsize;
};

/** Takes all but `leaveBytes` of the tmpfs with one more filler file. */
function fill(name: string, leaveBytes: number): void {
  const take = freeBytes() - leaveBytes;
  if (take <= 0) return;
  execFileSync('fallocate', ['-l', String(take), join(mnt, name)]);
}

/** Takes every last block: fallocate all but 256 KiB (the engine writes meanwhile), then dd until ENOSPC. */
function fillToTheBrim(name: string): void {
  try {
    fill(name, 256 * 1024);
  } catch {
    // the engine took some of it first: dd takes the rest
  }
  spawnSync('dd', ['if=/dev/zero', `of=${join(mnt, `${name}-dd`)}`, 'bs=4k'], { stdio: 'ignore' });
}

async function health(): Promise<{ code: number; body: { status: string; disk?: { status: string; free_bytes: number; min_free_bytes: number }; bus: { status: string } } }> {
  const r = await fetch(`${engine!.httpUrl}/healthz`);
  return { code: r.status, body: (await r.json()) as never };
}

beforeAll(async () => {
  if (!findTool('nats-server')) {
    skip = 'no nats-server binary: run `npm run provision`';
    return;
  }
  if (process.getuid?.() !== 0) {
    skip = 'needs root to mount a size-limited tmpfs (mount -t tmpfs -o size=…)';
    return;
  }
  mnt = mkdtempSync(join(tmpdir(), 'keel-fulldisk-'));
  const m = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${TMPFS_MB}m`, 'tmpfs', mnt], { encoding: 'utf8' });
  if (m.status !== 0) {
    skip = `mounting a tmpfs is not permitted here: ${(m.stderr || m.error?.message || '').trim()}`;
    return;
  }
  mounted = true;
  const dataDir = join(mnt, 'data');
  mkdirSync(dataDir);
  engine = await startEngineProcess(
    {
      KEEL_AGENTS: 'intake,triage,summarizer,reply-suggester,sender,escalation,memorizer',
      KEEL_AGENT_HOSTS: 'all',
      KEEL_POLICY_REPLY_EMAIL: 'auto',
      KEEL_MIN_FREE_MB: String(MIN_FREE_MB),
      // JetStream reserves the streams' byte budget on its disk: keep it inside the small tmpfs
      KEEL_NATS_MAX_BYTES: '64MB',
      KEEL_RATE_LIMIT_SENDER: 'off',
      KEEL_RATE_LIMIT_CHANNEL: 'off',
      KEEL_WORKFLOW_SWEEP_MS: '500',
      KEEL_LOG_LEVEL: 'warn',
    },
    { dataDir },
  );
}, 180_000);

afterAll(async () => {
  if (engine) await engine.stop('SIGINT');
  if (mounted) {
    // a busy mount (a process still closing files) is detached lazily rather than left behind
    if (spawnSync('umount', [mnt]).status !== 0) spawnSync('umount', ['-l', mnt]);
  }
  if (mnt) rmSync(mnt, { recursive: true, force: true });
}, 60_000);

describe('full disk', () => {
  it('refuses new work with 452 / 507 below the reserve, keeps what it accepted, and recovers by itself when space returns', async (ctx) => {
    if (!engine) {
      reportSkip('full-disk test', skip);
      return ctx.skip(skip);
    }
    const e = engine;
    const port = () => e.smtpPort;

    // warm-up: one mail through every agent (the first task of each loads its code and models)
    const first = await sendMail(e.smtpPort, 'fd-warm', 0);
    expect(first.code).toBe(250);
    await waitFor(async () => (await runStatus(e, first.messageId)) === 'completed', { timeoutMs: 120_000, intervalMs: 1_000, what: 'the warm-up run to complete' });

    // steady load: a mail every 400 ms for the whole test
    const load = steadyMail(port, 'fd', 400);
    try {
      await waitFor(() => load.results.filter((r) => r.code === 250).length >= 5, { timeoutMs: 60_000, what: 'five mails accepted under load' });

      // 1. below the reserve: new work refused, with the documented codes
      fill('filler-1', (MIN_FREE_MB / 2) * MiB);
      await waitFor(() => load.results.some((r) => r.code === 452), { timeoutMs: 30_000, what: 'a 452 under load once the disk is below the reserve' });
      const probe = await sendMail(e.smtpPort, 'fd-probe', 0);
      expect(probe.code).toBe(452);
      expect(probe.response).toMatch(/^452 4\.3\.1 /);
      const chat = await fetch(`${e.httpUrl}/v1/chat/messages`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ customer: { handle: 'disk-full-1' }, text: 'Hello, is anyone there?' }) });
      expect(chat.status).toBe(507);
      expect(((await chat.json()) as { error: string }).error).toBe('STORAGE_FULL');
      expect(chat.headers.get('retry-after')).toBeTruthy();
      const run = await fetch(`${e.httpUrl}/v1/runs`, { method: 'POST', headers: { ...e.auth, 'content-type': 'application/json' }, body: JSON.stringify({ workflow: 'inbound-message', input: {} }) });
      expect(run.status).toBe(507);
      expect(((await run.json()) as { error: string }).error).toBe('STORAGE_FULL');
      const low = await health();
      expect(low.code).toBe(503);
      expect(low.body.status).toBe('degraded');
      expect(low.body.disk).toMatchObject({ status: 'low', min_free_bytes: MIN_FREE_MB * MiB });
      expect(low.body.disk!.free_bytes).toBeLessThan(MIN_FREE_MB * MiB);

      // 2. completely full: the store and JetStream hit ENOSPC in the middle of runs
      fillToTheBrim('filler-2');
      expect(freeBytes()).toBeLessThan(MiB);
      await new Promise((r) => setTimeout(r, 8_000));
      expect(e.child.exitCode).toBeNull(); // the engine rides it out
      expect((await health()).code).toBe(503);

      // 3. space returns: no restart, no operator
      const freedAt = Date.now();
      for (const f of readdirSync(mnt)) if (f.startsWith('filler-')) rmSync(join(mnt, f));
      await waitFor(async () => (await health()).code === 200, { timeoutMs: 90_000, intervalMs: 500, what: '/healthz 200 once space is back' });
      const recoveredMs = Date.now() - freedAt;
      const acceptedBefore = load.results.filter((r) => r.code === 250 && r.at > freedAt).length;
      await waitFor(() => load.results.some((r) => r.code === 250 && r.at > freedAt), { timeoutMs: 60_000, what: 'new mail accepted again after space returned' });
      console.log(`[full-disk] /healthz back to 200 ${recoveredMs} ms after space returned (${acceptedBefore} mails already accepted by then)`);
    } finally {
      await load.stop();
    }

    // what was refused is sent again (as an MTA retries a 4xx) and taken now
    await load.retryUnaccepted(Date.now() + 120_000);
    const latest = load.latest();
    const codes = load.results.map((r) => r.code);
    const refused = codes.filter((c) => c === 452).length;
    expect(refused).toBeGreaterThan(0);
    expect(codes.filter((c) => c >= 500)).toEqual([]); // nothing was refused for good
    for (const r of latest.values()) expect(r.code, `${r.messageId}: ${r.response}`).toBe(250);

    // every accepted mail: its run completed, exactly one reply in the outbox
    const ids = [first.messageId, ...[...latest.values()].map((r) => r.messageId)];
    await waitForRuns(e, ids, 240_000);
    await new Promise((r) => setTimeout(r, 2_000)); // a late duplicate would show up here
    const replies = repliesByMessage(e.dataDir);
    for (const id of ids) expect(replies.get(id), `replies to ${id}`).toBe(1);
    console.log(`[full-disk] ${ids.length} mails accepted and answered once each; ${refused} answers were 452 4.3.1 while the disk was full`);
    const out = e.output();
    const count = (re: RegExp) => out.split('\n').filter((l) => re.test(l)).length;
    console.log(`[full-disk] engine log: ${count(/critical write error/i)} JetStream write errors, ${count(/restarting nats-server to clear/)} nats-server restarts by the storage watch, ${count(/task paused/)} tasks paused (waited out in place), ${count(/SQLITE_FULL|database or disk is full/)} lines naming SQLite full`);

    // no corruption: SQLite integrity, every stream readable, every accepted mail kept on KEEL_IN
    const dbs = readdirSync(e.dataDir).filter((f) => f.endsWith('.db'));
    expect(dbs).toContain('keel.db');
    console.log(`[full-disk] PRAGMA integrity_check on ${dbs.join(', ')}`);
    for (const f of dbs) {
      const db = new DatabaseSync(join(e.dataDir, f), { readOnly: true });
      try {
        expect(db.prepare('PRAGMA integrity_check').get(), f).toEqual({ integrity_check: 'ok' });
      } finally {
        db.close();
      }
    }
    const nc = await adminBus(e);
    try {
      const report = await streamsReport(nc);
      expect(Object.keys(report.streams)).toEqual(expect.arrayContaining(['KEEL_TASKS', 'KEEL_EVT', 'KEEL_IN', 'KEEL_OUT', 'KEEL_DLQ']));
      for (const id of ids) expect(report.inboundMessageIds.has(id), `${id} on KEEL_IN`).toBe(true);
      console.log(`[full-disk] streams after recovery: ${JSON.stringify(report.streams)}`);
    } finally {
      await nc.close();
    }
  }, 600_000);

  it('the SQLite store raises a retryable STATE_STORAGE_FULL on a full disk, keeps reading, and writes again once space is back', async (ctx) => {
    if (!mounted) {
      reportSkip('SQLite on a full disk', skip);
      return ctx.skip(skip);
    }
    const dir = join(mnt, 'small');
    mkdirSync(dir);
    const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', dir], { encoding: 'utf8' });
    if (m.status !== 0) return ctx.skip(`cannot mount a second tmpfs: ${m.stderr}`);
    try {
      const type = defineEntityType({ name: 'note', schemaVersion: 1, schema: z.strictObject({ text: z.string() }), searchFields: [] });
      const store = await openStore(`sqlite:${join(dir, 'keel.db')}`, { types: [type] });
      try {
        const meta = { actor: { kind: 'system' as const, id: 'test' } };
        const text = 'x'.repeat(32 * 1024);
        let written = 0;
        let err: unknown;
        for (let i = 0; i < 1_000 && !err; i++) {
          await store.append('note', `n${i}`, 0, [{ type: 'created', data: { text } }], meta).then(() => written++, (e: unknown) => (err = e));
        }
        expect(written).toBeGreaterThan(10);
        expect(isStateError(err, 'STATE_STORAGE_FULL')).toBe(true);
        expect(err).toMatchObject({ retryable: true, storageFull: true });
        expect((err as Error).message).toMatch(/no space left on its disk.*free disk space/);
        expect((await store.get<{ text: string }>('note', 'n0'))?.state.text).toBe(text); // reads go on
        // space comes back: the filesystem grows
        execFileSync('mount', ['-o', 'remount,size=8m', dir]);
        await store.append('note', 'after', 0, [{ type: 'created', data: { text: 'space is back' } }], meta);
        expect((await store.get<{ text: string }>('note', 'after'))?.state.text).toBe('space is back');
        expect((await store.get<{ text: string }>('note', `n${written - 1}`))?.state.text).toBe(text);
      } finally {
        await store.close();
      }
      const db = new DatabaseSync(join(dir, 'keel.db'), { readOnly: true });
      try {
        expect(db.prepare('PRAGMA integrity_check').get()).toEqual({ integrity_check: 'ok' });
      } finally {
        db.close();
      }
    } finally {
      if (spawnSync('umount', [dir]).status !== 0) spawnSync('umount', ['-l', dir]);
    }
  }, 120_000);
});
