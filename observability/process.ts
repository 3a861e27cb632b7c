import { readFileSync } from 'node:fs';

/** What a process costs: resident memory and CPU (fraction of one core) since the previous sample. */
export interface ProcessUsage {
  pid: number;
  rssBytes: number;
  /** fraction of one core used since the previous sample (0.011 = 1.1 %) */
  cpu: number;
  /** total CPU time (user + system) since the process started, in seconds */
  cpuSeconds: number;
}

/**
 * Samples this process: `sample()` returns its RSS now and its CPU use since the previous call
 * (or since the sampler was made). One sampler per reader, so two readers do not shorten each
 * other's window.
 */
export function selfSampler(): () => ProcessUsage {
  let last = { cpu: process.cpuUsage(), at: performance.now() };
  return () => {
    const cpu = process.cpuUsage();
    const at = performance.now();
    const usedUs = cpu.user - last.cpu.user + (cpu.system - last.cpu.system);
    const ratio = at > last.at ? usedUs / 1000 / (at - last.at) : 0;
    last = { cpu, at };
    return { pid: process.pid, rssBytes: process.memoryUsage.rss(), cpu: round(ratio), cpuSeconds: (cpu.user + cpu.system) / 1e6 };
  };
}

const CLK_TCK = 100; // USER_HZ on Linux

/** Another process, read from /proc (Linux only): undefined when it is gone or /proc is not there. */
export function readProcUsage(pid: number): { rssBytes: number; cpuSeconds: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // fields after the command name (which may contain spaces) start at state (field 3)
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const cpuSeconds = (Number(f[11]) + Number(f[12])) / CLK_TCK; // utime, stime (fields 14, 15)
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
    if (!Number.isFinite(rssKb) || !Number.isFinite(cpuSeconds)) return undefined;
    return { rssBytes: rssKb * 1024, cpuSeconds };
  } catch {
    return undefined;
  }
}

/** Samples another process through /proc like {@link selfSampler}; undefined when it cannot be read. */
export function procSampler(pid: number): () => ProcessUsage | undefined {
  let last: { cpuSeconds: number; at: number } | undefined;
  return () => {
    const u = readProcUsage(pid);
    if (!u) return undefined;
    const at = performance.now();
    const ratio = last && at > last.at ? (u.cpuSeconds - last.cpuSeconds) / ((at - last.at) / 1000) : 0;
    last = { cpuSeconds: u.cpuSeconds, at };
    return { pid, rssBytes: u.rssBytes, cpu: round(Math.max(0, ratio)), cpuSeconds: u.cpuSeconds };
  };
}

const round = (x: number) => Math.round(x * 10_000) / 10_000;
