/**
 * `npm run bench -- cli [--json] [--quick]`: how long the operator waits for `keel` — start-up
 * to exit of `keel --version`, `keel tickets` and `keel approvals`, each a new process as typed
 * in a shell (`bin/keel.js` on the pinned Node), against a real store in a temp data dir (200
 * tickets, 20 pending approvals). Baseline: a bare `node -e ''` start on the same Node. Target:
 * p50 ≤ 250 ms for each.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../config/index.ts';
import { openStore } from '../shared-state/index.ts';
import { BUILTIN_FEATURES, entityTypesOf } from '../agents/index.ts';
import { BenchError } from './errors.ts';
import { compare, figures, type Bench, type Figures } from './lib.ts';

/** The start-up target of every measured command (p50, ms). */
export const CLI_TARGET_P50_MS = 250;

const KEEL = join(REPO_ROOT, 'bin', 'keel.js');

/** Runs one process to its exit; resolves with the wall time in ms. */
function timeProcess(args: string[], env: Record<string, string | undefined>): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => {
      const ms = performance.now() - t0;
      if (code === 0) resolve(ms);
      else reject(new BenchError('BENCH_INCOMPLETE', `${args.join(' ')} exited with ${code}: ${err.trim()}`));
    });
  });
}

async function measure(n: number, warmup: number, args: string[], env: Record<string, string | undefined>): Promise<Figures> {
  for (let i = 0; i < warmup; i++) await timeProcess(args, env); // fills the compile cache, as any earlier call would have
  const lat: number[] = [];
  const t0 = performance.now();
  for (let i = 0; i < n; i++) lat.push(await timeProcess(args, env));
  return figures(n, performance.now() - t0, lat);
}

/** A store like an operator's after a while: 200 tickets (with messages and triage), 20 pending approvals. */
async function seedStore(state: string): Promise<void> {
  const store = await openStore(state, { types: entityTypesOf(BUILTIN_FEATURES) });
  const meta = { actor: { kind: 'system', id: 'bench' } } as const;
  try {
    for (let i = 0; i < 200; i++) {
      const at = new Date(Date.now() - i * 60_000).toISOString();
      await store.append('ticket', `tkt-bench${String(i).padStart(11, '0')}`, 0, [
        { type: 'created', data: { subject: `Refund for order ${1000 + i}`, status: i % 3 ? 'open' : 'pending', channel: 'email', customerId: `cus-bench${i % 40}`, customerEmail: `customer${i % 40}@example.com`, messages: [] } },
        { type: 'message_added', data: { id: `m-${i}`, direction: 'in', channel: 'email', from: `customer${i % 40}@example.com`, text: `I was charged twice for order ${1000 + i}. Please refund the second charge.`, at } },
        { type: 'triaged', data: { intent: 'refund', urgency: 'normal', sentiment: 'neutral', entities: [`ORDER:${1000 + i}`], confidence: 0.8, tier: 0, escalate: false, reasons: ['intent refund: refund'] } },
      ], meta);
    }
    for (let i = 0; i < 20; i++) {
      await store.createApproval({ id: `bench-${i}_approve`, action: 'reply.email', subject: `ticket/tkt-bench${String(i).padStart(11, '0')}`, payload: { ticketId: `tkt-bench${String(i).padStart(11, '0')}`, text: 'Hello, I refunded the second charge.' }, requestedBy: { kind: 'system', id: 'bench' }, deadline: new Date(Date.now() + 86_400_000).toISOString() });
    }
  } finally {
    await store.close();
  }
}

export const cliBench: Bench = {
  name: 'cli',
  description: `keel start-up to exit: --version, tickets, approvals (real store, temp data dir) vs a bare node start; target p50 <= ${CLI_TARGET_P50_MS} ms`,
  async run(ctx) {
    const n = ctx.quick ? 7 : 30;
    const warmup = 2;
    const dir = mkdtempSync(join(tmpdir(), 'keel-bench-cli-'));
    try {
      const env = { ...process.env, KEEL_DATA_DIR: dir, KEEL_STATE: undefined, KEEL_LOG_LEVEL: 'silent', KEEL_FEATURES: undefined };
      ctx.progress(`keel init and a seeded store in ${dir}`);
      await timeProcess([KEEL, 'init'], env);
      await seedStore(`sqlite:${join(dir, 'keel.db')}`);

      ctx.progress(`baseline: node -e '' x ${n}`);
      const base = await measure(n, warmup, ['-e', ''], env);
      const baseline = { scenario: "node -e ''", ...base };
      const results = [];
      for (const args of [['--version'], ['tickets'], ['approvals']]) {
        const name = `keel ${args.join(' ')}`;
        ctx.progress(`${name} x ${n}`);
        const f = await measure(n, warmup, [KEEL, ...args], env);
        results.push(compare(name, { ...f, notes: { target_p50_ms: CLI_TARGET_P50_MS, meets_target: f.p50_ms <= CLI_TARGET_P50_MS, runs: n } }, baseline));
      }
      return { results, machine: { compile_cache: process.env.NODE_DISABLE_COMPILE_CACHE ? 'disabled' : 'on' } };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
};
