/**
 * `npm run bench -- soak [--json] [--duration 30m] [--rate 2] [--kill-every 60s] [--sample-every 10s]`:
 * a long run. It starts the engine as `npm start` does (`node bin/keel.js start`, embedded
 * defaults, a temp data dir, replies sent without approval: `KEEL_POLICY_REPLY_EMAIL=auto`), sends
 * inbound email by real SMTP at a steady rate, SIGKILLs a random agent process every
 * `--kill-every` (the supervisor restarts it), and samples every `--sample-every`: RSS of every
 * process (/proc), the SQLite files (keel.db, memory.db and their WALs), the JetStream store
 * (du of <data>/nats, and bytes/messages per stream), the DLQ depth and the outbox.
 *
 * Per mail: the latency from the SMTP 250 to its `inbound-message` run completed (the run's
 * `finishedAt`). At the end it waits for the accepted mails to finish (`--drain`) and counts
 * lost (accepted, never completed) and duplicated (two runs, or two replies in the outbox, for
 * one mail) mails; either makes the exit code 1.
 *
 * Other flags: `--senders N` (distinct senders in turn; default rate × 40, so each stays under the
 * default per-sender limit and customers come back), `--warmup 2m` (default 20% of the duration, at least 60 s when the run is long
 * enough), `--drain 3m`, `--retention 10m` / `--retention-every 1m` (the engine's
 * KEEL_RUN_RETENTION / KEEL_RETENTION_INTERVAL; these defaults, not the engine's 90d / 1h, so a
 * run of minutes shows compaction at work), `--env KEY=VALUE` (more engine environment,
 * repeatable), `--keep` (keep the data dir).
 * Linux only (/proc).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { DatabaseSync } from 'node:sqlite';
import { randomBytes } from 'node:crypto';
import { existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { jetstreamManager } from '@nats-io/jetstream';
import { REPO_ROOT } from '../config/index.ts';
import { connectBus, listAgents, subjects, type NatsConnection } from '../bus/index.ts';
import { normalizeMessageId } from '../channels/index.ts';
import { openStore, type StateStore } from '../shared-state/index.ts';
import { readProcUsage } from '../observability/index.ts';
import { BUILTIN_FEATURES, entityTypesOf } from '../agents/index.ts';
import { freePort, waitFor } from '../testkit/index.ts';
import { BenchError } from './errors.ts';
import { percentile, type Bench, type ScenarioResult } from './lib.ts';

const KEEL = join(REPO_ROOT, 'bin', 'keel.js');
const MB = 1048576;
const r1 = (n: number) => Math.round(n * 10) / 10;
const r3 = (n: number) => Math.round(n * 1000) / 1000;

// ---- flags ---------------------------------------------------------------------------------

const UNITS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `90s`, `30m`, `1h`, `500ms`, `2` (seconds) → milliseconds; throws naming the value. */
export function parseDuration(v: string, flag = 'duration'): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/.exec(v.trim());
  if (!m) throw new BenchError('BENCH_BAD_FLAG', `--${flag} '${v}' is not a duration (e.g. 90s, 30m, 1h)`);
  return Math.round(Number(m[1]) * UNITS[m[2] ?? 's']!);
}

export interface SoakOptions {
  durationMs: number;
  /** mails per second */
  ratePerS: number;
  /** 0: no kills */
  killEveryMs: number;
  sampleEveryMs: number;
  /** samples (and mails) before this are left out of the summary */
  warmupMs: number;
  /** after sending stops: how long to wait for the accepted mails to complete */
  drainMs: number;
  /** distinct senders the mails come from, in turn (default rate × 40: 15 mails per sender per 10 minutes) */
  senders: number;
  /** engine environment added to the defaults (KEEL_RUN_RETENTION, ...) */
  env: Record<string, string>;
  keep: boolean;
}

/** The default warm-up: 20% of the run, at least 60 s when that is no more than half of it. */
export function defaultWarmupMs(durationMs: number): number {
  return Math.round(Math.max(0.2 * durationMs, Math.min(60_000, 0.5 * durationMs)));
}

/** The soak's flags from the arguments after the bench name (unknown flags are refused). */
export function parseSoakArgs(args: readonly string[], quick = false): SoakOptions {
  const values = new Map<string, string[]>();
  const bool = new Set(['json', 'quick', 'keep']);
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (!a.startsWith('--')) continue;
    const eq = a.indexOf('=');
    const name = eq > 0 ? a.slice(2, eq) : a.slice(2);
    if (bool.has(name)) {
      values.set(name, ['1']);
      continue;
    }
    const v = eq > 0 ? a.slice(eq + 1) : args[++i];
    if (v === undefined) throw new BenchError('BENCH_BAD_FLAG', `--${name} needs a value`);
    values.set(name, [...(values.get(name) ?? []), v]);
  }
  const known = ['json', 'quick', 'keep', 'duration', 'rate', 'senders', 'kill-every', 'sample-every', 'warmup', 'drain', 'retention', 'retention-every', 'env'];
  for (const k of values.keys()) if (!known.includes(k)) throw new BenchError('BENCH_BAD_FLAG', `unknown soak flag --${k}; flags: ${known.map((x) => `--${x}`).join(', ')}`);
  const one = (k: string) => values.get(k)?.at(-1);
  const durationMs = parseDuration(one('duration') ?? (quick ? '60s' : '2m'), 'duration');
  const ratePerS = Number(one('rate') ?? '2');
  if (!(ratePerS > 0 && ratePerS <= 100)) throw new BenchError('BENCH_BAD_FLAG', `--rate '${one('rate')}' must be a number of mails per second in (0, 100]`);
  const env: Record<string, string> = {};
  for (const kv of values.get('env') ?? []) {
    const eq = kv.indexOf('=');
    if (eq < 1) throw new BenchError('BENCH_BAD_FLAG', `--env '${kv}' is not KEY=VALUE`);
    env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  // the engine's retention, short enough to be at work within a soak (the engine's default is 90d)
  env.KEEL_RUN_RETENTION = one('retention') ?? env.KEEL_RUN_RETENTION ?? '10m';
  env.KEEL_RETENTION_INTERVAL = one('retention-every') ?? env.KEEL_RETENTION_INTERVAL ?? '1m';
  const killEvery = one('kill-every') ?? '60s';
  // each sender stays under the default per-sender limit (20/10m) with 15 mails per 10 minutes
  const senders = Number(one('senders') ?? Math.max(10, Math.ceil((ratePerS * 600) / 15)));
  if (!Number.isInteger(senders) || senders < 1) throw new BenchError('BENCH_BAD_FLAG', `--senders '${one('senders')}' must be a whole number >= 1`);
  return {
    durationMs,
    ratePerS,
    killEveryMs: killEvery === 'off' || killEvery === '0' ? 0 : parseDuration(killEvery, 'kill-every'),
    sampleEveryMs: parseDuration(one('sample-every') ?? '10s', 'sample-every'),
    warmupMs: one('warmup') ? parseDuration(one('warmup')!, 'warmup') : defaultWarmupMs(durationMs),
    drainMs: parseDuration(one('drain') ?? '3m', 'drain'),
    senders,
    env,
    keep: values.has('keep'),
  };
}

// ---- what is measured ----------------------------------------------------------------------

export interface ProcSample {
  pid: number;
  rss_mb: number;
  /** seconds since this pid was first seen (a restarted process starts at 0 again) */
  age_s: number;
}

export interface Sample {
  /** seconds since the first mail */
  t_s: number;
  processes: Record<string, ProcSample>;
  /** bytes: keel.db, keel.db-wal, memory.db, memory.db-wal, nats (the JetStream store dir), outbox (dir) */
  files: Record<string, number>;
  streams: Record<string, { bytes: number; msgs: number }>;
  /** rows of keel.db: events (the change log), compacted (its `compacted` events), entities, idempotency, costs, audit */
  rows: Record<string, number>;
  dlq_depth: number;
  sent: number;
  accepted: number;
  completed: number;
  kills: number;
}

export interface MailRecord {
  messageId: string;
  /** ms since the first mail */
  sentAt: number;
  /** wall-clock ms of the SMTP 250 */
  acceptedAt?: number;
  refused?: string;
  /** wall-clock ms of its run's finishedAt */
  completedAt?: number;
  /** its runs that ended completed (more than one: duplicated) */
  completedRuns: string[];
  /** runs that ended otherwise (failed, cancelled, superseded) */
  otherRuns: string[];
  /** replies in the outbox with In-Reply-To = this mail */
  replies: number;
}

export interface SoakSummary {
  duration_s: number;
  warmup_s: number;
  rate_per_s: number;
  mails: { sent: number; accepted: number; refused: number; completed: number; failed: number; lost: number; duplicated: number; replied: number };
  /** per process (by name), samples after warm-up; a restarted process's first 60 s are left out too */
  /**
   * `flat_within_pct`: (max − min) / min over every sample of that name, across restarts;
   * `flat_within_pct_per_process`: the same within each process instance (pid, at least 3
   * samples), the largest of them: a restarted agent is a new process and is compared with itself
   */
  rss: Record<string, { samples: number; restarts: number; min_mb: number; max_mb: number; first_mb: number; last_mb: number; flat_within_pct: number; flat_within_pct_per_process: number }>;
  /** the largest flat_within_pct of any process name */
  rss_flat_within_pct_max: number;
  /** the largest flat_within_pct_per_process of any process name */
  rss_flat_within_pct_max_per_process: number;
  latency: { windows: Array<{ from_s: number; to_s: number; count: number; p50_ms: number; p99_ms: number }>; p50_ms: number; p99_ms: number; p99_drift_pct: number | null };
  /**
   * per file, stream and table: first and last value after warm-up, the growth per hour between
   * them, and over the second half of that time only (bounded growth: it falls off)
   */
  growth: Record<string, { first: number; last: number; per_hour: number; per_hour_last_half: number; unit: 'bytes' | 'msgs' | 'rows' }>;
  dlq_depth_end: number;
  kills: number;
}

/** The summary of a soak from its samples and mails (pure: the tests feed it made-up runs). */
export function summarizeSoak(o: { samples: Sample[]; mails: MailRecord[]; t0: number; warmupMs: number; durationMs: number; ratePerS: number; kills: number; windows?: number; procWarmupS?: number }): SoakSummary {
  const warmS = o.warmupMs / 1000;
  const procWarm = o.procWarmupS ?? Math.min(60, warmS);
  const after = o.samples.filter((s) => s.t_s >= warmS);
  // RSS per process name
  const rss: SoakSummary['rss'] = {};
  const names = new Set(o.samples.flatMap((s) => Object.keys(s.processes)));
  for (const name of [...names].sort()) {
    const pids = new Set(o.samples.map((s) => s.processes[name]?.pid).filter((p): p is number => p !== undefined));
    // the first process of a name warms up with the run; a restarted one needs its own warm-up
    const firstPid = o.samples.find((s) => s.processes[name])?.processes[name]?.pid;
    const vals = after.map((s) => s.processes[name]).filter((p): p is ProcSample => !!p && (p.pid === firstPid || p.age_s >= procWarm));
    if (vals.length === 0) continue;
    const mbs = vals.map((v) => v.rss_mb);
    const min = Math.min(...mbs);
    const max = Math.max(...mbs);
    // each process instance on its own: a restart starts a new process, whose RSS is compared with itself only
    let perProcess = 0;
    for (const pid of new Set(vals.map((v) => v.pid))) {
      const own = vals.filter((v) => v.pid === pid).map((v) => v.rss_mb);
      if (own.length < 3) continue;
      const lo = Math.min(...own);
      perProcess = Math.max(perProcess, lo > 0 ? ((Math.max(...own) - lo) / lo) * 100 : 0);
    }
    rss[name] = { samples: vals.length, restarts: Math.max(0, pids.size - 1), min_mb: r1(min), max_mb: r1(max), first_mb: r1(mbs[0]!), last_mb: r1(mbs.at(-1)!), flat_within_pct: r1(min > 0 ? ((max - min) / min) * 100 : 0), flat_within_pct_per_process: r1(perProcess) };
  }
  // latency windows over mails accepted after warm-up
  const lat = o.mails
    .filter((m) => m.acceptedAt !== undefined && m.completedAt !== undefined && m.acceptedAt - o.t0 >= o.warmupMs)
    .map((m) => ({ at: m.acceptedAt! - o.t0, ms: Math.max(0, m.completedAt! - m.acceptedAt!) }));
  const nWin = o.windows ?? 5;
  const span = Math.max(1, o.durationMs - o.warmupMs);
  const windows: SoakSummary['latency']['windows'] = [];
  for (let w = 0; w < nWin; w++) {
    const from = o.warmupMs + (span * w) / nWin;
    const to = o.warmupMs + (span * (w + 1)) / nWin;
    const xs = lat.filter((l) => l.at >= from && (w === nWin - 1 ? true : l.at < to)).map((l) => l.ms).sort((a, b) => a - b);
    if (xs.length === 0) continue;
    windows.push({ from_s: r1(from / 1000), to_s: r1(to / 1000), count: xs.length, p50_ms: Math.round(percentile(xs, 50)), p99_ms: Math.round(percentile(xs, 99)) });
  }
  const all = lat.map((l) => l.ms).sort((a, b) => a - b);
  const firstW = windows[0];
  const lastW = windows.at(-1);
  const drift = firstW && lastW && windows.length > 1 && firstW.p99_ms > 0 ? r1(((lastW.p99_ms - firstW.p99_ms) / firstW.p99_ms) * 100) : null;
  // growth of each file and stream after warm-up
  const growth: SoakSummary['growth'] = {};
  const g0 = after[0];
  const g1 = after.at(-1);
  if (g0 && g1) {
    const mid = after.find((s) => s.t_s >= (g0.t_s + g1.t_s) / 2) ?? g1;
    const rate = (a: number, b: number, from: Sample, to: Sample) => (to.t_s > from.t_s ? Math.round((b - a) / ((to.t_s - from.t_s) / 3600)) : 0);
    const values = (x: Sample): Array<[string, number, 'bytes' | 'msgs' | 'rows']> => [
      ...Object.entries(x.files).map(([k, v]) => [`file:${k}`, v, 'bytes'] as [string, number, 'bytes']),
      ...Object.entries(x.streams).flatMap(([k, v]) => [[`stream:${k}:bytes`, v.bytes, 'bytes'], [`stream:${k}:msgs`, v.msgs, 'msgs']] as Array<[string, number, 'bytes' | 'msgs']>),
      ...Object.entries(x.rows ?? {}).map(([k, v]) => [`rows:${k}`, v, 'rows'] as [string, number, 'rows']),
    ];
    const at = (x: Sample) => new Map(values(x).map(([k, v]) => [k, v]));
    const v0 = at(g0);
    const vm = at(mid);
    for (const [k, b, unit] of values(g1)) {
      const a = v0.get(k) ?? 0;
      growth[k] = { first: a, last: b, per_hour: rate(a, b, g0, g1), per_hour_last_half: rate(vm.get(k) ?? 0, b, mid, g1), unit };
    }
  }
  const accepted = o.mails.filter((m) => m.acceptedAt !== undefined);
  return {
    duration_s: r1(o.durationMs / 1000),
    warmup_s: r1(warmS),
    rate_per_s: o.ratePerS,
    mails: {
      sent: o.mails.length,
      accepted: accepted.length,
      refused: o.mails.filter((m) => m.refused !== undefined).length,
      completed: accepted.filter((m) => m.completedRuns.length > 0).length,
      failed: accepted.filter((m) => m.completedRuns.length === 0 && m.otherRuns.length > 0).length,
      lost: accepted.filter((m) => m.completedRuns.length === 0).length,
      duplicated: o.mails.filter((m) => m.completedRuns.length > 1 || m.replies > 1).length,
      replied: o.mails.filter((m) => m.replies > 0).length,
    },
    rss,
    rss_flat_within_pct_max: Math.max(0, ...Object.values(rss).map((p) => p.flat_within_pct)),
    rss_flat_within_pct_max_per_process: Math.max(0, ...Object.values(rss).map((p) => p.flat_within_pct_per_process)),
    latency: { windows, p50_ms: all.length ? Math.round(percentile(all, 50)) : NaN, p99_ms: all.length ? Math.round(percentile(all, 99)) : NaN, p99_drift_pct: drift },
    growth,
    dlq_depth_end: o.samples.at(-1)?.dlq_depth ?? 0,
    kills: o.kills,
  };
}

// ---- the engine and its processes ---------------------------------------------------------

interface ProcInfo {
  pid: number;
  /** keel-engine, nats-server, or the agent(s) a process runs */
  name: string;
}

/** The engine's process tree, named (as bench/footprint.ts names it). */
function processTree(root: number): ProcInfo[] {
  const ps = spawnSync('ps', ['-e', '-o', 'pid=,ppid='], { encoding: 'utf8' }).stdout;
  const parent = new Map<number, number>();
  for (const line of ps.trim().split('\n')) {
    const [pid, ppid] = line.trim().split(/\s+/).map(Number);
    parent.set(pid!, ppid!);
  }
  const inTree = (pid: number) => {
    for (let p: number | undefined = pid; p; p = parent.get(p)) if (p === root) return true;
    return false;
  };
  const out: ProcInfo[] = [];
  for (const pid of parent.keys()) {
    if (!inTree(pid)) continue;
    let cmd: string[];
    try {
      cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
    } catch {
      continue;
    }
    let name = 'other';
    if (pid === root) name = 'keel-engine';
    else if (cmd.some((c) => /nats-server$/.test(c))) name = 'nats-server';
    else if (cmd.includes('agent')) {
      const host = cmd.indexOf('--host');
      const specs = cmd[cmd.indexOf('start') + 1] ?? '';
      name = host > 0 ? `host:${cmd[host + 1]}` : specs.split(',').map((s) => s.replace(/^.*\//, '').replace(/\.(ts|js|mjs)$/, '')).join('+');
    }
    out.push({ pid, name });
  }
  return out;
}

/** Bytes of a file or (recursively) a directory; 0 when absent. */
export function bytesOf(path: string): number {
  if (!existsSync(path)) return 0;
  const st = lstatSync(path);
  if (!st.isDirectory()) return st.size;
  let n = 0;
  for (const e of readdirSync(path)) n += bytesOf(join(path, e));
  return n;
}

interface RunningEngine {
  child: ChildProcess;
  dir: string;
  smtpPort: number;
  nc: NatsConnection;
  stop(): Promise<void>;
}

async function startEngine(extraEnv: Record<string, string>, keep: boolean, progress: (m: string) => void): Promise<RunningEngine> {
  const dir = mkdtempSync(join(tmpdir(), 'keel-soak-'));
  const [httpPort, natsPort, smtpPort] = [await freePort(), await freePort(), await freePort()];
  const env: Record<string, string | undefined> = {
    ...process.env,
    KEEL_OPERATOR_TOKEN: `keel-bench-${randomBytes(24).toString('base64url')}`,
    KEEL_DATA_DIR: dir,
    KEEL_HTTP_PORT: String(httpPort),
    KEEL_NATS_PORT: String(natsPort),
    KEEL_SMTP_PORT: String(smtpPort),
    KEEL_LOG_LEVEL: 'warn',
    // the inbound scenario to its end without an operator: the reply is sent at once
    KEEL_POLICY_REPLY_EMAIL: 'auto',
    ...extraEnv,
  };
  for (const k of ['KEEL_AGENTS', 'KEEL_NATS_URL', 'KEEL_STATE', 'KEEL_MEMORY', 'KEEL_WORKFLOW_SWEEP_MS', 'KEEL_AGENT_HOSTS']) if (!(k in extraEnv)) delete env[k];
  let err = '';
  const child = spawn(process.execPath, [KEEL, 'start'], { cwd: REPO_ROOT, env, stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
  let nc: NatsConnection | undefined;
  const stop = async () => {
    await nc?.close().catch(() => undefined);
    if (child.exitCode === null && child.signalCode === null) {
      const done = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await done;
      clearTimeout(t);
    }
    if (keep) progress(`data dir kept: ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor(async () => {
      if (child.exitCode !== null) throw new BenchError('BENCH_INCOMPLETE', `keel start exited with ${child.exitCode}: ${err}`);
      return (await fetch(`http://127.0.0.1:${httpPort}/healthz`).catch(() => undefined))?.status === 200;
    }, { timeoutMs: 180_000, what: 'keel start to serve /healthz' });
    // an outside server (--env KEEL_NATS_URL=…) is reached as the engine reaches it; the local one with the admin credentials keel start wrote
    const outside = extraEnv.KEEL_NATS_URL;
    if (outside) nc = await connectBus({ servers: outside, user: extraEnv.KEEL_NATS_USER, pass: extraEnv.KEEL_NATS_PASSWORD });
    else {
      const admin = (JSON.parse(readFileSync(join(dir, 'credentials.json'), 'utf8')) as { admin: { user: string; password: string } }).admin;
      nc = await connectBus({ servers: `nats://127.0.0.1:${natsPort}`, user: admin.user, pass: admin.password });
    }
    const c = nc;
    await waitFor(async () => (await listAgents(c, subjects().registryBucket)).length >= 6, { timeoutMs: 120_000, intervalMs: 500, what: 'the inbound agents in the registry' });
  } catch (e) {
    await stop();
    throw e;
  }
  return { child, dir, smtpPort, nc: nc!, stop };
}

const TEXTS = [
  (i: number) => ({ subject: `Refund for order ${1000 + i}`, text: `Hello, I was charged twice for order ${1000 + i}. Could you refund the second charge? Thanks.` }),
  (i: number) => ({ subject: `Exporting invoices (${i})`, text: `Hi, how do I export my invoices for last quarter as PDF? Ticket ${i}.` }),
  (i: number) => ({ subject: `Question about my plan ${i}`, text: `Good morning, can I switch to the yearly plan and keep my data? Reference ${i}.` }),
  (i: number) => ({ subject: `Password reset ${i}`, text: `I cannot find the password reset link on the login page. Where is it? (${i})` }),
];

/** Reads the In-Reply-To of every mail in the outbox: how many replies each message got. */
function repliesInOutbox(dir: string): Map<string, number> {
  const out = new Map<string, number>();
  const box = join(dir, 'outbox');
  if (!existsSync(box)) return out;
  for (const f of readdirSync(box)) {
    if (!f.endsWith('.eml')) continue;
    const head = readFileSync(join(box, f), 'utf8').split(/\r?\n\r?\n/)[0] ?? '';
    const m = /^in-reply-to:\s*(.+(?:\r?\n[ \t].+)*)/im.exec(head);
    const id = normalizeMessageId(m?.[1]?.replace(/\s+/g, ''));
    if (id) out.set(id, (out.get(id) ?? 0) + 1);
  }
  return out;
}

interface RunView {
  status: string;
  finishedAt?: string;
  input?: { message?: { messageId?: string } };
}

async function runSoak(o: SoakOptions, progress: (m: string) => void): Promise<{ summary: SoakSummary; timeline: Sample[]; killed: Array<{ t_s: number; name: string; pid: number }>; dataDir: string }> {
  progress(`starting the engine (node bin/keel.js start, KEEL_POLICY_REPLY_EMAIL=auto${Object.keys(o.env).length ? `, ${Object.entries(o.env).map(([k, v]) => `${k}=${v}`).join(', ')}` : ''})`);
  const e = await startEngine(o.env, o.keep, progress);
  const root = e.child.pid!;
  const store: StateStore = await openStore(`sqlite:${join(e.dir, 'keel.db')}`, { types: entityTypesOf(BUILTIN_FEATURES) });
  const jsm = await jetstreamManager(e.nc);
  const dlqStream = subjects().streams.dlq;
  const mails: MailRecord[] = [];
  const byId = new Map<string, MailRecord>();
  const samples: Sample[] = [];
  const killed: Array<{ t_s: number; name: string; pid: number }> = [];
  const firstSeen = new Map<number, number>();
  const seenRuns = new Set<string>();
  let since = '';
  const smtp = nodemailer.createTransport({ host: '127.0.0.1', port: e.smtpPort, secure: false, ignoreTLS: true });
  const senders = o.senders;
  const db = new DatabaseSync(join(e.dir, 'keel.db'), { readOnly: true });
  const count = (sql: string) => {
    try {
      return Number((db.prepare(sql).get() as { n: number }).n);
    } catch {
      return -1; // locked for longer than the busy timeout: this sample has no figure
    }
  };
  db.exec('PRAGMA busy_timeout = 2000');
  const inFlight = new Set<Promise<void>>();
  let t0 = Date.now();

  const pollRuns = async () => {
    for (;;) {
      const page = await store.query<RunView>('workflow_run', { filter: { workflow: 'inbound-message', status: { $in: ['completed', 'failed', 'cancelled', 'superseded'] }, ...(since ? { updatedAt: { $gte: since } } : {}) }, sort: { updatedAt: 'asc' }, limit: 500 });
      let fresh = 0;
      for (const r of page.items) {
        since = r.updatedAt > since ? r.updatedAt : since;
        if (seenRuns.has(r.entityId)) continue;
        seenRuns.add(r.entityId);
        fresh++;
        const m = byId.get(normalizeMessageId(r.state.input?.message?.messageId) ?? '');
        if (!m) continue;
        if (r.state.status === 'completed') {
          m.completedRuns.push(r.entityId);
          m.completedAt ??= Date.parse(r.state.finishedAt ?? r.updatedAt);
        } else m.otherRuns.push(r.entityId);
      }
      if (page.items.length < 500 || fresh === 0) return;
    }
  };

  const sample = async (): Promise<Sample> => {
    const processes: Sample['processes'] = {};
    const now = Date.now();
    for (const p of processTree(root)) {
      if (!firstSeen.has(p.pid)) firstSeen.set(p.pid, now);
      const u = readProcUsage(p.pid);
      if (!u) continue;
      let name = p.name;
      for (let k = 2; processes[name]; k++) name = `${p.name}#${k}`;
      processes[name] = { pid: p.pid, rss_mb: r1(u.rssBytes / MB), age_s: r1((now - firstSeen.get(p.pid)!) / 1000) };
    }
    const files: Record<string, number> = {};
    for (const f of ['keel.db', 'keel.db-wal', 'memory.db', 'memory.db-wal']) files[f] = bytesOf(join(e.dir, f));
    files.nats = bytesOf(join(e.dir, 'nats'));
    files.outbox = bytesOf(join(e.dir, 'outbox'));
    const streams: Sample['streams'] = {};
    let dlq = 0;
    for await (const si of jsm.streams.list()) {
      streams[si.config.name] = { bytes: si.state.bytes, msgs: si.state.messages };
      if (si.config.name === dlqStream) dlq = si.state.messages;
    }
    const rows: Sample['rows'] = {
      events: count('SELECT COUNT(*) AS n FROM events'),
      compacted: count("SELECT COUNT(*) AS n FROM events WHERE type = 'compacted'"),
      entities: count('SELECT COUNT(*) AS n FROM entities'),
      idempotency: count('SELECT COUNT(*) AS n FROM idempotency'),
      costs: count('SELECT COUNT(*) AS n FROM costs'),
      audit: count('SELECT COUNT(*) AS n FROM audit'),
    };
    return {
      t_s: r1((now - t0) / 1000),
      processes,
      files,
      streams,
      rows,
      dlq_depth: dlq,
      sent: mails.length,
      accepted: mails.filter((m) => m.acceptedAt !== undefined).length,
      completed: mails.filter((m) => m.completedRuns.length > 0).length,
      kills: killed.length,
    };
  };

  const send = (i: number) => {
    const k = i % senders;
    const messageId = `<soak-${i}-${randomBytes(4).toString('hex')}@example.com>`;
    const m: MailRecord = { messageId, sentAt: Date.now() - t0, completedRuns: [], otherRuns: [], replies: 0 };
    mails.push(m);
    byId.set(messageId, m);
    const body = TEXTS[i % TEXTS.length]!(i);
    const p = smtp
      .sendMail({ from: `soak${k}@example.com`, to: 'support@keel.local', subject: body.subject, text: body.text, messageId })
      .then(() => void (m.acceptedAt = Date.now()))
      .catch((err: Error) => void (m.refused = err.message.slice(0, 200)))
      .finally(() => inFlight.delete(p));
    inFlight.add(p);
  };

  const kill = () => {
    const agents = processTree(root).filter((p) => !['keel-engine', 'nats-server', 'other'].includes(p.name));
    const victim = agents[Math.floor(Math.random() * agents.length)];
    if (!victim) return;
    try {
      process.kill(victim.pid, 'SIGKILL');
      killed.push({ t_s: r1((Date.now() - t0) / 1000), name: victim.name, pid: victim.pid });
    } catch {
      // it was gone already
    }
  };

  try {
    samples.push(await sample());
    samples[0]!.t_s = 0;
    progress(`sending ${o.ratePerS} mails/s for ${o.durationMs / 1000} s (warm-up ${o.warmupMs / 1000} s), ${o.killEveryMs ? `an agent SIGKILLed every ${o.killEveryMs / 1000} s` : 'no kills'}, a sample every ${o.sampleEveryMs / 1000} s`);
    t0 = Date.now();
    const total = Math.round((o.durationMs / 1000) * o.ratePerS);
    let nextSample = o.sampleEveryMs;
    let nextKill = o.killEveryMs || Infinity;
    let nextPoll = 1_000;
    for (let i = 0; i < total || Date.now() - t0 < o.durationMs; ) {
      const el = Date.now() - t0;
      // a steady rate: mail i goes out at i / rate seconds, whatever the previous ones are doing
      while (i < total && i * (1000 / o.ratePerS) <= el) send(i++);
      if (el >= nextPoll) {
        await pollRuns();
        nextPoll = el + 1_000;
      }
      if (el >= nextKill) {
        kill();
        nextKill += o.killEveryMs;
      }
      if (el >= nextSample) {
        const s = await sample();
        samples.push(s);
        const rss = Object.values(s.processes).reduce((a, p) => a + p.rss_mb, 0);
        progress(`t=${Math.round(s.t_s)}s sent ${s.sent} accepted ${s.accepted} completed ${s.completed} dlq ${s.dlq_depth} kills ${s.kills}; RSS ${Math.round(rss)} MB; keel.db ${r1(s.files['keel.db']! / MB)} MB (${s.rows.events} events, ${s.rows.compacted} compacted), nats ${r1(s.files.nats! / MB)} MB`);
        nextSample += o.sampleEveryMs;
      }
      if (i >= total && el >= o.durationMs) break;
      await new Promise((r) => setTimeout(r, Math.max(5, Math.min(100, i * (1000 / o.ratePerS) - el))));
    }
    await Promise.all(inFlight);
    const durationMs = Date.now() - t0;
    // the drain: every accepted mail gets the time to finish
    progress(`sending stopped after ${Math.round(durationMs / 1000)} s; waiting up to ${o.drainMs / 1000} s for the accepted mails to complete`);
    const drainEnd = Date.now() + o.drainMs;
    for (;;) {
      await pollRuns();
      const open = mails.filter((m) => m.acceptedAt !== undefined && m.completedRuns.length === 0 && m.otherRuns.length === 0).length;
      if (open === 0 || Date.now() > drainEnd) break;
      await new Promise((r) => setTimeout(r, 1_000));
    }
    // a little longer, so a late duplicate (a second run or reply) would show
    await new Promise((r) => setTimeout(r, 3_000));
    await pollRuns();
    const replies = repliesInOutbox(e.dir);
    for (const m of mails) m.replies = replies.get(m.messageId) ?? 0;
    const last = await sample();
    samples.push(last);
    const summary = summarizeSoak({ samples, mails, t0, warmupMs: o.warmupMs, durationMs, ratePerS: o.ratePerS, kills: killed.length });
    return { summary, timeline: samples, killed, dataDir: e.dir };
  } finally {
    smtp.close();
    db.close();
    await store.close();
    await e.stop();
  }
}

export const soakBench: Bench = {
  name: 'soak',
  description: 'long run: inbound email at a steady rate with agent SIGKILLs; RSS per process, p99 drift, JetStream/SQLite growth, DLQ, lost/duplicated (--duration 30m --rate 2 --kill-every 60s --sample-every 10s)',
  async run(ctx) {
    if (process.platform !== 'linux') throw new BenchError('BENCH_NO_SERVER', 'the soak bench reads /proc (Linux only)');
    const at = process.argv.indexOf('soak');
    const o = parseSoakArgs(at >= 0 ? process.argv.slice(at + 1) : [], ctx.quick);
    const { summary, timeline, killed } = await runSoak(o, ctx.progress);
    const m = summary.mails;
    ctx.progress(`mails: sent ${m.sent}, accepted ${m.accepted}, completed ${m.completed}, failed ${m.failed}, lost ${m.lost}, duplicated ${m.duplicated}; p99 drift ${summary.latency.p99_drift_pct ?? 'n/a'}%; RSS flat within ${summary.rss_flat_within_pct_max}% (each process on its own: ${summary.rss_flat_within_pct_max_per_process}%)`);
    if (m.lost > 0 || m.duplicated > 0) {
      ctx.progress(`FAILED: ${m.lost} accepted mail(s) lost, ${m.duplicated} duplicated`);
      process.exitCode = 1;
    }
    const result: ScenarioResult & { summary: SoakSummary; timeline: Sample[]; kills: typeof killed } = {
      scenario: `soak: inbound email at ${o.ratePerS}/s for ${Math.round(o.durationMs / 1000)} s, ${o.killEveryMs ? `an agent SIGKILLed every ${o.killEveryMs / 1000} s` : 'no kills'}`,
      throughput_per_s: r3(m.completed / Math.max(1e-9, summary.duration_s)),
      p50_ms: summary.latency.p50_ms,
      p99_ms: summary.latency.p99_ms,
      baseline: null,
      ratio: null,
      notes: { latency: 'SMTP 250 to the inbound-message run completed (reply sent), mails accepted after warm-up', engine_env: { KEEL_POLICY_REPLY_EMAIL: 'auto', ...o.env } },
      summary,
      timeline,
      kills: killed,
    };
    return { results: [result] };
  },
};
