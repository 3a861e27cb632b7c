/**
 * A short soak through the real command (`node bench/run.ts soak --json ...`): the engine as its
 * own process tree, mail by real SMTP, agents SIGKILLed and restarted, retention at work. Asserts
 * the report's fields are computed from what happened (every accepted mail completed once, RSS
 * samples of every process, files and streams that grew, compaction seen in the change log), not
 * that anything is fast.
 */
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { REPO_ROOT } from '../../config/index.ts';
import type { SoakSummary, Sample } from '../../bench/soak.ts';

interface Report {
  bench: string;
  machine: Record<string, unknown>;
  results: Array<{ scenario: string; throughput_per_s: number; p50_ms: number; p99_ms: number; baseline: unknown; ratio: unknown; summary: SoakSummary; timeline: Sample[]; kills: Array<{ t_s: number; name: string; pid: number }> }>;
}

function runBench(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(REPO_ROOT, 'bench', 'run.ts'), 'soak', '--json', ...args], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('soak bench (short)', () => {
  it('runs 45 s of mail with agent kills and reports computed figures: nothing lost or doubled, RSS of every process, growth, compaction', async (ctx) => {
    if (process.platform !== 'linux') return ctx.skip('the soak bench reads /proc (Linux only)');
    const r = await runBench(['--duration', '45s', '--rate', '1', '--kill-every', '15s', '--sample-every', '5s', '--warmup', '10s', '--drain', '90s', '--retention', '10s', '--retention-every', '3s']);
    expect(r.code, r.stderr.slice(-3000)).toBe(0);
    expect(r.stderr).toMatch(/\[bench soak\] t=\d+s sent \d+/);
    const report = JSON.parse(r.stdout) as Report;
    expect(report.bench).toBe('soak');
    const [res] = report.results;
    for (const f of ['scenario', 'throughput_per_s', 'p50_ms', 'p99_ms', 'baseline', 'ratio'] as const) expect(res).toHaveProperty(f);
    const s = res!.summary;
    // every mail was taken, every one completed once and answered once
    expect(s.mails.sent).toBe(45);
    expect(s.mails.accepted).toBe(s.mails.sent);
    expect(s.mails).toMatchObject({ lost: 0, duplicated: 0, refused: 0, failed: 0, completed: s.mails.accepted, replied: s.mails.accepted });
    expect(res!.throughput_per_s).toBeGreaterThan(0);
    expect(res!.p99_ms).toBeGreaterThanOrEqual(res!.p50_ms);
    // kills happened and the supervisor brought the victims back (a later sample has a new pid)
    expect(res!.kills.length).toBeGreaterThanOrEqual(2);
    expect(s.kills).toBe(res!.kills.length);
    const last = res!.timeline.at(-1)!;
    const victim = res!.kills[0]!;
    expect(last.processes[victim.name], `${victim.name} restarted`).toBeDefined();
    expect(last.processes[victim.name]!.pid).not.toBe(victim.pid);
    // RSS after warm-up for the engine, nats-server and each inbound agent
    for (const name of ['keel-engine', 'nats-server', 'intake', 'triage', 'summarizer', 'reply-suggester', 'sender', 'memorizer']) {
      const p = s.rss[name];
      expect(p, `RSS of ${name}`).toBeDefined();
      expect(p!.samples).toBeGreaterThan(0);
      expect(p!.min_mb).toBeGreaterThan(0);
      expect(p!.flat_within_pct).toBe(Math.round(((p!.max_mb - p!.min_mb) / p!.min_mb) * 1000) / 10);
    }
    // files and streams: present and grown; the DLQ sampled
    expect(last.files['keel.db']).toBeGreaterThan(0);
    expect(last.files.nats).toBeGreaterThan(0);
    expect(s.growth['file:keel.db']!.last).toBe(last.files['keel.db']);
    expect(s.growth['stream:KEEL_EVT:msgs']!.last).toBeGreaterThan(s.growth['stream:KEEL_EVT:msgs']!.first);
    expect(s.dlq_depth_end).toBe(last.dlq_depth);
    // the engine's retention (10 s, every 3 s) compacted finished runs during the soak
    expect(last.rows.compacted).toBeGreaterThan(0);
    expect(last.rows.events).toBeGreaterThan(0);
    // latency windows after warm-up, with a drift computed from them
    expect(s.latency.windows.length).toBeGreaterThan(1);
    const w = s.latency.windows;
    expect(s.latency.p99_drift_pct).toBe(Math.round(((w.at(-1)!.p99_ms - w[0]!.p99_ms) / w[0]!.p99_ms) * 1000) / 10);
  }, 420_000);
});
