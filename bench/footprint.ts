/**
 * `npm run bench -- footprint [--json] [--quick]`: what Keel costs on the machine. For each
 * layout — one process per agent (the default) and every agent co-hosted in one process
 * (`KEEL_AGENT_HOSTS=all`) — it starts the engine as `npm start` does (`node bin/keel.js start`,
 * embedded defaults, a temp data dir), lets it settle, measures every process of the tree (RSS,
 * CPU over an idle window, from /proc), runs the inbound scenario (emails over SMTP and chats over
 * HTTP until each waits for approval, then approves them all until every reply is sent), and
 * measures the idle engine again. It also measures what the heavy modules cost a fresh process.
 *
 * Each layout gives three results: `idle after start`, `inbound scenario` (throughput = messages
 * per second from submission to a waiting approval; p50/p99 = that latency) and `idle after the
 * scenario`, each with `rss_mb` (total), `cpu_pct` (of one core, whole tree), `per_process` and
 * the issue's targets. Linux only (/proc).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { REPO_ROOT } from '../config/index.ts';
import { connectBus, listAgents, subjects } from '../bus/index.ts';
import { openStore, type StateStore } from '../shared-state/index.ts';
import { readProcUsage } from '../observability/index.ts';
import { BUILTIN_FEATURES, entityTypesOf } from '../agents/index.ts';
import { freePort, waitFor } from '../testkit/index.ts';
import { BenchError } from './errors.ts';
import { compare, figures, type Bench, type BenchContext, type ScenarioResult } from './lib.ts';

/** The issue's targets (same machine): idle RSS of the whole engine, idle CPU of one core. */
export const FOOTPRINT_TARGETS = {
  'one process per agent': { rss_mb: 700, cpu_pct: 2 },
  'co-hosted (KEEL_AGENT_HOSTS=all)': { rss_mb: 350, cpu_pct: 2 },
} as const;
type Layout = keyof typeof FOOTPRINT_TARGETS;
const LAYOUT_ENV: Record<Layout, Record<string, string>> = {
  'one process per agent': {},
  'co-hosted (KEEL_AGENT_HOSTS=all)': { KEEL_AGENT_HOSTS: 'all' },
};

const AGENTS = ['intake', 'triage', 'summarizer', 'reply-suggester', 'sender', 'escalation'];
const KEEL = join(REPO_ROOT, 'bin', 'keel.js');
const mb = (bytes: number) => Math.round((bytes / 1048576) * 10) / 10;

interface ProcInfo {
  pid: number;
  /** keel-engine, nats-server, an agent's name, or `host:<name>` */
  name: string;
}

/** The engine's process tree: the engine, its nats-server and agent processes, named. */
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
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

interface Footprint {
  rss_mb: number;
  cpu_pct: number;
  per_process: Array<{ name: string; pid: number; rss_mb: number; cpu_pct: number }>;
}

/** RSS at the end and CPU (% of one core) over `ms` of every process in the tree. */
async function measureWindow(root: number, ms: number): Promise<Footprint> {
  const procs = processTree(root);
  const before = new Map(procs.map((p) => [p.pid, readProcUsage(p.pid)?.cpuSeconds ?? 0]));
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, ms));
  const secs = (performance.now() - t0) / 1000;
  const per_process = procs.flatMap((p) => {
    const u = readProcUsage(p.pid);
    if (!u) return [];
    return [{ name: p.name, pid: p.pid, rss_mb: mb(u.rssBytes), cpu_pct: Math.round(((u.cpuSeconds - before.get(p.pid)!) / secs) * 1000) / 10 }];
  });
  return {
    rss_mb: Math.round(per_process.reduce((s, p) => s + p.rss_mb, 0) * 10) / 10,
    cpu_pct: Math.round(per_process.reduce((s, p) => s + p.cpu_pct, 0) * 100) / 100,
    per_process,
  };
}

interface RunningEngine {
  child: ChildProcess;
  dir: string;
  httpUrl: string;
  natsPort: number;
  smtpPort: number;
  /** the engine's KEEL_OPERATOR_TOKEN, for the operator routes (/v1/approvals) */
  operatorToken: string;
  stop(): Promise<void>;
}

async function startEngine(layout: Layout): Promise<RunningEngine> {
  const dir = mkdtempSync(join(tmpdir(), 'keel-footprint-'));
  const [httpPort, natsPort, smtpPort] = [await freePort(), await freePort(), await freePort()];
  const operatorToken = `keel-bench-${randomBytes(24).toString('base64url')}`;
  const env: Record<string, string | undefined> = { ...process.env, KEEL_OPERATOR_TOKEN: operatorToken, KEEL_DATA_DIR: dir, KEEL_HTTP_PORT: String(httpPort), KEEL_NATS_PORT: String(natsPort), KEEL_SMTP_PORT: String(smtpPort), KEEL_LOG_LEVEL: 'warn', ...LAYOUT_ENV[layout] };
  for (const k of ['KEEL_AGENTS', 'KEEL_NATS_URL', 'KEEL_STATE', 'KEEL_WORKFLOW_SWEEP_MS', ...(layout === 'one process per agent' ? ['KEEL_AGENT_HOSTS'] : [])]) delete env[k];
  let err = '';
  const child = spawn(process.execPath, [KEEL, 'start'], { cwd: REPO_ROOT, env, stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
  const httpUrl = `http://127.0.0.1:${httpPort}`;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const done = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 20_000);
      await done;
      clearTimeout(t);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor(async () => {
      if (child.exitCode !== null) throw new BenchError('BENCH_INCOMPLETE', `keel start exited with ${child.exitCode}: ${err}`);
      return (await fetch(`${httpUrl}/healthz`).catch(() => undefined))?.status === 200;
    }, { timeoutMs: 120_000, what: 'keel start to serve /healthz' });
    // every agent announced itself
    const admin = (JSON.parse(readFileSync(join(dir, 'credentials.json'), 'utf8')) as { admin: { user: string; password: string } }).admin;
    const nc = await connectBus({ servers: `nats://127.0.0.1:${natsPort}`, user: admin.user, pass: admin.password });
    try {
      await waitFor(async () => (await listAgents(nc, subjects().registryBucket)).length >= AGENTS.length, { timeoutMs: 60_000, what: 'six agents in the registry' });
    } finally {
      await nc.close();
    }
  } catch (e) {
    await stop();
    throw e;
  }
  return { child, dir, httpUrl, natsPort, smtpPort, operatorToken, stop };
}

interface ApprovalView {
  id: string;
  payload: { ticketId: string };
}

/**
 * The inbound scenario: `n` emails (SMTP) and `n` chats (HTTP), each from its own customer; the
 * latency of a message is from its submission to its approval waiting (polled every 50 ms);
 * then every approval is approved and the run of every message completes (replies sent).
 */
async function inboundScenario(e: RunningEngine, n: number, ctx: BenchContext, root: number): Promise<{ figures: ReturnType<typeof figures>; peak: Footprint; sentMs: number }> {
  const store: StateStore = await openStore(`sqlite:${join(e.dir, 'keel.db')}`, { types: entityTypesOf(BUILTIN_FEATURES) });
  const smtp = nodemailer.createTransport({ host: '127.0.0.1', port: e.smtpPort, secure: false, ignoreTLS: true });
  // peak RSS of each process while the scenario runs
  const peak = new Map<number, { name: string; rss: number }>();
  const sampler = setInterval(() => {
    for (const p of processTree(root)) {
      const u = readProcUsage(p.pid);
      if (u && u.rssBytes > (peak.get(p.pid)?.rss ?? 0)) peak.set(p.pid, { name: p.name, rss: u.rssBytes });
    }
  }, 250);
  const cpu0 = new Map(processTree(root).map((p) => [p.pid, readProcUsage(p.pid)?.cpuSeconds ?? 0]));
  const submitted = new Map<string, number>(); // customer (email or handle) -> submission time
  const latency = new Map<string, number>();
  const t0 = performance.now();
  try {
    const sends: Array<Promise<unknown>> = [];
    for (let i = 0; i < n; i++) {
      const email = `bench${i}@example.com`;
      submitted.set(email, performance.now());
      sends.push(smtp.sendMail({ from: email, to: 'support@keel.local', subject: `Refund for order ${1000 + i}`, text: `Hello, I was charged twice for order ${1000 + i}. Please refund the second charge.`, messageId: `<bench-${i}@example.com>` }));
      const handle = `bench${i}`;
      submitted.set(handle, performance.now());
      sends.push(fetch(`${e.httpUrl}/v1/chat/messages`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ customer: { handle }, text: `Hi! How do I export invoice ${2000 + i} as PDF?` }) }).then((r) => r.status === 202 || Promise.reject(new BenchError('BENCH_INCOMPLETE', `chat message refused: ${r.status}`))));
    }
    await Promise.all(sends);
    const ticketOwner = new Map<string, string>();
    const seen = new Set<string>();
    await waitFor(async () => {
      const { approvals } = (await (await fetch(`${e.httpUrl}/v1/approvals`, { headers: { authorization: `Bearer ${e.operatorToken}` } })).json()) as { approvals: ApprovalView[] };
      for (const a of approvals) {
        if (seen.has(a.id)) continue;
        seen.add(a.id);
        let owner = ticketOwner.get(a.payload.ticketId);
        if (!owner) {
          const t = await store.get<{ customerEmail?: string; customerHandle?: string }>('ticket', a.payload.ticketId);
          owner = t?.state.customerEmail ?? t?.state.customerHandle ?? '';
          ticketOwner.set(a.payload.ticketId, owner);
        }
        const at = submitted.get(owner);
        if (at !== undefined && !latency.has(owner)) latency.set(owner, performance.now() - at);
      }
      return latency.size >= 2 * n;
    }, { timeoutMs: 300_000, intervalMs: 50, what: `${2 * n} approvals` });
    const waitingMs = performance.now() - t0;
    ctx.progress(`  ${2 * n} messages waiting for approval after ${Math.round(waitingMs)} ms; approving them`);
    const ta = performance.now();
    for (const id of seen) {
      const r = await fetch(`${e.httpUrl}/v1/approvals/${encodeURIComponent(id)}`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${e.operatorToken}` }, body: JSON.stringify({ decision: 'approved' }) });
      if (r.status >= 300) throw new BenchError('BENCH_INCOMPLETE', `approving ${id}: HTTP ${r.status} ${await r.text()}`);
    }
    // the inbound runs (the memorizer's runs complete too, one per remembered event)
    await waitFor(async () => (await store.query('workflow_run', { filter: { status: 'completed', workflow: 'inbound-message' }, limit: 1 })).total >= 2 * n, { timeoutMs: 300_000, intervalMs: 100, what: `${2 * n} inbound runs completed` });
    const outbox = join(e.dir, 'outbox');
    const emls = existsSync(outbox) ? readdirSync(outbox).filter((f) => f.endsWith('.eml')).length : 0;
    if (emls < n) throw new BenchError('BENCH_INCOMPLETE', `${emls} of ${n} email replies in the outbox`);
    const sentMs = performance.now() - ta;
    const secs = (performance.now() - t0) / 1000;
    const cpuOf = (pid: number) => (readProcUsage(pid)?.cpuSeconds ?? 0) - (cpu0.get(pid) ?? 0);
    const cpu = processTree(root).reduce((s, p) => s + cpuOf(p.pid), 0);
    const per_process = [...peak.entries()].map(([pid, v]) => ({ name: v.name, pid, rss_mb: mb(v.rss), cpu_pct: Math.round((cpuOf(pid) / secs) * 1000) / 10 }));
    return {
      figures: figures(2 * n, waitingMs, [...latency.values()]),
      peak: { rss_mb: Math.round(per_process.reduce((s, p) => s + p.rss_mb, 0) * 10) / 10, cpu_pct: Math.round((cpu / secs) * 1000) / 10, per_process },
      sentMs,
    };
  } finally {
    clearInterval(sampler);
    smtp.close();
    await store.close();
  }
}

/** What a fresh process pays for importing each heavy module (RSS added, load time), compile cache warm. */
function moduleCosts(): Array<{ module: string; rss_mb: number; load_ms: number; used_by: string }> {
  const probes: Array<{ module: string; code: string; used_by: string }> = [
    { module: 'zod', code: "await import('zod')", used_by: 'every process' },
    { module: '@nats-io (transport, jetstream, kv)', code: "await import('@nats-io/transport-node'); await import('@nats-io/jetstream'); await import('@nats-io/kv')", used_by: 'every process' },
    { module: 'mongodb', code: "await import('mongodb')", used_by: 'only with a mongodb:// KEEL_STATE (loaded on open)' },
    { module: '@langchain/core (messages, chat models)', code: "await import('@langchain/core/messages'); await import('@langchain/core/language_models/chat_models')", used_by: 'only with KEEL_MODEL_* set (loaded at agent start) or on the first model call' },
    { module: '@langchain/openai', code: "await import('@langchain/openai')", used_by: 'only a process whose configured tier is openai: (on first use)' },
    { module: '@langchain/anthropic', code: "await import('@langchain/anthropic')", used_by: 'only a process whose configured tier is anthropic: (on first use)' },
    { module: '@langchain/ollama', code: "await import('@langchain/ollama')", used_by: 'only a process whose configured tier is ollama: (on first use)' },
    { module: 'OpenTelemetry trace SDK + OTLP exporter', code: "await import('@opentelemetry/sdk-trace-node'); await import('@opentelemetry/exporter-trace-otlp-http')", used_by: 'only a process exporting spans (OTEL_EXPORTER_OTLP_*)' },
    { module: 'OpenTelemetry metrics SDK + Prometheus exporter', code: "await import('@opentelemetry/sdk-metrics'); await import('@opentelemetry/exporter-prometheus')", used_by: 'the engine; an agent only with a metrics port' },
    { module: 'wink-nlp + English model (instantiated)', code: "const w = (await import('wink-nlp')).default; const m = (await import('wink-eng-lite-web-model')).default; w(m)", used_by: 'triage, summarizer, reply-suggester, on their first message' },
    { module: 'mailparser', code: "await import('mailparser')", used_by: 'the engine (SMTP ingress), on the first email' },
    { module: 'nodemailer', code: "await import('nodemailer')", used_by: 'sender, escalation, on the first mail' },
    { module: 'smtp-server', code: "await import('smtp-server')", used_by: 'the engine (SMTP ingress)' },
    { module: 'hono + @hono/node-server', code: "await import('hono'); await import('@hono/node-server')", used_by: 'the engine (HTTP API)' },
    { module: 'ws', code: "await import('ws')", used_by: 'the engine (chat WebSocket)' },
    { module: "an agent process's Keel floors (keel agent start intake)", code: `await import(${JSON.stringify(join(REPO_ROOT, 'cli', 'commands', 'agent.ts'))}); await import(${JSON.stringify(join(REPO_ROOT, 'agents', 'inbound', 'intake.ts'))})`, used_by: 'every agent process' },
  ];
  // as in an agent process: Node's compile cache (the supervisor's NODE_COMPILE_CACHE) and 2 MB semi-spaces
  const cache = process.env.NODE_COMPILE_CACHE ?? join(tmpdir(), 'node-compile-cache');
  const run = (code: string, env: Record<string, string | undefined> = {}) => {
    const script = `const r0 = process.memoryUsage.rss(); const t0 = performance.now(); ${code}; const ms = performance.now() - t0; await new Promise((r) => setTimeout(r, 100)); console.log(JSON.stringify({ rss: process.memoryUsage.rss() - r0, ms }));`;
    const r = spawnSync(process.execPath, ['--max-semi-space-size=2', '--input-type=module', '-e', script], { cwd: REPO_ROOT, env: { ...process.env, NODE_COMPILE_CACHE: cache, ...env }, encoding: 'utf8' });
    const last = r.stdout.trim().split('\n').pop() ?? '';
    try {
      return JSON.parse(last) as { rss: number; ms: number };
    } catch {
      throw new BenchError('BENCH_INCOMPLETE', `module probe failed: ${code}: ${r.stderr.slice(-500)}`);
    }
  };
  const median = (code: string, env: Record<string, string | undefined> = {}) => {
    run(code, env); // warms the compile cache
    return [run(code, env), run(code, env), run(code, env)].sort((a, b) => a.rss - b.rss)[1]!;
  };
  // what any first dynamic import costs (the loader itself), taken off every figure
  const base = median("await import('node:util')");
  const out = probes.map((p) => {
    const m = median(p.code);
    return { module: p.module, rss_mb: mb(m.rss - base.rss), load_ms: Math.round(m.ms), used_by: p.used_by };
  });
  // TypeScript type stripping: paid by any process that strips a .ts file (the compile cache skips it)
  const ts = `await import(${JSON.stringify(join(REPO_ROOT, 'config', 'version.ts'))})`;
  const stripped = median(ts, { NODE_COMPILE_CACHE: undefined, NODE_DISABLE_COMPILE_CACHE: '1' });
  const cached = median(ts);
  out.push({ module: 'TypeScript type stripping (amaro), without the compile cache', rss_mb: mb(stripped.rss - cached.rss), load_ms: Math.round(stripped.ms - cached.ms), used_by: 'a process whose .ts files are not in the compile cache' });
  return out;
}

type FootprintResult = ScenarioResult & Footprint & { layout: Layout; target: { rss_mb: number; cpu_pct: number } | null; within_target: boolean | null };

export const footprintBench: Bench = {
  name: 'footprint',
  description: 'RSS and CPU of every process of `keel start`, idle and through the inbound scenario, one process per agent vs all co-hosted; heavy modules\' cost',
  async run(ctx) {
    if (process.platform !== 'linux') throw new BenchError('BENCH_NO_SERVER', 'the footprint bench reads /proc (Linux only)');
    const settleMs = ctx.quick ? 3_000 : 10_000;
    const idleMs = ctx.quick ? 8_000 : 30_000;
    const n = ctx.quick ? 4 : 20;
    const results: ScenarioResult[] = [];
    const scenarioOf = new Map<Layout, ReturnType<typeof figures>>();
    for (const layout of Object.keys(FOOTPRINT_TARGETS) as Layout[]) {
      ctx.progress(`${layout}: starting the engine (node bin/keel.js start)`);
      const e = await startEngine(layout);
      try {
        const root = e.child.pid!;
        await new Promise((r) => setTimeout(r, settleMs));
        ctx.progress(`${layout}: idle for ${idleMs / 1000} s`);
        const idle = await measureWindow(root, idleMs);
        const target = FOOTPRINT_TARGETS[layout];
        const row = (scenario: string, f: Footprint, within: boolean | null, figs = { throughput_per_s: 0, p50_ms: 0, p99_ms: 0 }, baseline: ScenarioResult['baseline'] = null): FootprintResult => ({
          ...compare(`${scenario} (${layout})`, figs, baseline),
          ...f,
          layout,
          target: within === null ? null : target,
          within_target: within,
        });
        results.push(row('idle after start', idle, idle.rss_mb <= target.rss_mb && idle.cpu_pct <= target.cpu_pct));
        ctx.progress(`  idle: ${idle.rss_mb} MB, ${idle.cpu_pct}% of one core (${idle.per_process.map((p) => `${p.name} ${p.rss_mb} MB`).join(', ')})`);
        ctx.progress(`${layout}: inbound scenario, ${n} emails + ${n} chats`);
        const sc = await inboundScenario(e, n, ctx, root);
        scenarioOf.set(layout, sc.figures);
        const base = layout === 'one process per agent' ? null : { scenario: 'inbound scenario (one process per agent)', ...scenarioOf.get('one process per agent')! };
        results.push({ ...row('inbound scenario', sc.peak, null, sc.figures, base), notes: { messages: 2 * n, approve_to_all_sent_ms: Math.round(sc.sentMs), rss: 'peak per process during the scenario', cpu_pct: 'average over the scenario' } } as FootprintResult);
        ctx.progress(`  scenario: ${sc.figures.throughput_per_s} msg/s to approval, p50 ${sc.figures.p50_ms} ms; peak ${sc.peak.rss_mb} MB`);
        await new Promise((r) => setTimeout(r, settleMs));
        ctx.progress(`${layout}: idle again for ${idleMs / 1000} s`);
        const after = await measureWindow(root, idleMs);
        results.push(row('idle after the scenario', after, after.rss_mb <= target.rss_mb && after.cpu_pct <= target.cpu_pct));
        ctx.progress(`  idle after: ${after.rss_mb} MB, ${after.cpu_pct}% of one core`);
      } finally {
        await e.stop();
      }
    }
    ctx.progress('module costs (fresh processes)');
    const modules = moduleCosts();
    results.push({ scenario: 'module costs: RSS a fresh process adds by importing each alone (compile cache warm, 2 MB semi-spaces; overlapping, not additive)', throughput_per_s: 0, p50_ms: 0, p99_ms: 0, baseline: null, ratio: null, modules } as ScenarioResult);
    return { results };
  },
};
