import { cpus, totalmem, platform, release, arch } from 'node:os';
import { BenchError } from './errors.ts';

/** One measured figure set. Latencies are per operation (or per hop) in milliseconds. */
export interface Figures {
  throughput_per_s: number;
  p50_ms: number;
  p99_ms: number;
  /** anything else worth printing: message count, durability settings, ... */
  notes?: Record<string, unknown>;
}

/** A scenario beside its raw reference run from the same process. `ratio` = throughput / baseline throughput. */
export interface ScenarioResult extends Figures {
  scenario: string;
  baseline: (Figures & { scenario?: string }) | null;
  ratio: number | null;
}

export interface BenchReport {
  bench: string;
  machine: Record<string, unknown>;
  results: ScenarioResult[];
}

export interface BenchContext {
  /** progress lines go to stderr so `--json` stdout stays one JSON object */
  progress(msg: string): void;
  /** scale factor from `--quick` (smaller runs for smoke tests) */
  quick: boolean;
}

export interface Bench {
  name: string;
  description: string;
  run(ctx: BenchContext): Promise<{ results: ScenarioResult[]; machine?: Record<string, unknown> }>;
}

export function machineInfo(): Record<string, unknown> {
  const c = cpus();
  return {
    cpus: c.length,
    cpu_model: c[0]?.model ?? 'unknown',
    memory_gib: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    os: `${platform()} ${release()} ${arch()}`,
    node: process.version,
  };
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx]!;
}

/** Figures from a run of `count` operations that took `elapsedMs`, with per-op latencies. */
export function figures(count: number, elapsedMs: number, latenciesMs: number[], notes?: Record<string, unknown>): Figures {
  const sorted = [...latenciesMs].sort((a, b) => a - b);
  const round = (n: number, d = 3) => Math.round(n * 10 ** d) / 10 ** d;
  return {
    throughput_per_s: round(count / (elapsedMs / 1000), 1),
    p50_ms: round(percentile(sorted, 50)),
    p99_ms: round(percentile(sorted, 99)),
    ...(notes ? { notes } : {}),
  };
}

export function compare(scenario: string, measured: Figures, baseline: (Figures & { scenario?: string }) | null): ScenarioResult {
  return {
    scenario,
    ...measured,
    baseline,
    ratio: baseline && baseline.throughput_per_s > 0 ? Math.round((measured.throughput_per_s / baseline.throughput_per_s) * 1000) / 1000 : null,
  };
}

/** The NATS server a benchmark uses: KEEL_NATS_URL / NATS_URL, else a provisioned local one. */
export async function benchNats(): Promise<{ url: string; stop(): Promise<void> }> {
  const env = process.env.KEEL_NATS_URL ?? process.env.NATS_URL;
  if (env) return { url: env, stop: async () => undefined };
  const { startNats } = await import('../testkit/index.ts');
  const local = await startNats();
  if (!local.ok) throw new BenchError('BENCH_NO_SERVER', local.reason);
  return { url: local.server.url, stop: () => local.server.stop() };
}
