/**
 * The soak bench's pure parts: its flags, and the summary it computes from samples and mails
 * (lost, duplicated, RSS flatness after warm-up, p99 per window and its drift, growth per hour).
 * No timings asserted: the inputs are made up, the outputs computed from them.
 */
import { describe, expect, it } from 'vitest';
import { defaultWarmupMs, parseDuration, parseSoakArgs, summarizeSoak, type MailRecord, type Sample } from '../../bench/soak.ts';

describe('soak flags', () => {
  it('parses durations, rates, kills and engine environment; refuses what it does not know', () => {
    expect([parseDuration('90s'), parseDuration('30m'), parseDuration('1h'), parseDuration('500ms'), parseDuration('2')]).toEqual([90_000, 1_800_000, 3_600_000, 500, 2_000]);
    const o = parseSoakArgs(['--json', '--duration', '30m', '--rate=3', '--kill-every', '45s', '--sample-every', '5s', '--retention', '2m', '--env', 'KEEL_SQLITE_SYNC=NORMAL', '--keep']);
    expect(o).toMatchObject({ durationMs: 1_800_000, ratePerS: 3, killEveryMs: 45_000, sampleEveryMs: 5_000, warmupMs: 360_000, keep: true, env: { KEEL_SQLITE_SYNC: 'NORMAL', KEEL_RUN_RETENTION: '2m', KEEL_RETENTION_INTERVAL: '1m' } });
    expect(parseSoakArgs([])).toMatchObject({ durationMs: 120_000, ratePerS: 2, senders: 80, killEveryMs: 60_000, sampleEveryMs: 10_000, warmupMs: 60_000 });
    expect(parseSoakArgs(['--rate', '0.1']).senders).toBe(10);
    expect(parseSoakArgs(['--senders', '500']).senders).toBe(500);
    expect(() => parseSoakArgs(['--senders', '0'])).toThrow(/--senders/);
    expect(parseSoakArgs(['--kill-every', 'off']).killEveryMs).toBe(0);
    expect(defaultWarmupMs(60_000)).toBe(30_000);
    expect(() => parseSoakArgs(['--durtion', '5m'])).toThrow(/unknown soak flag --durtion/);
    expect(() => parseSoakArgs(['--rate', '0'])).toThrow(/--rate/);
    expect(() => parseSoakArgs(['--duration', 'soon'])).toThrow(/not a duration/);
  });
});

describe('soak summary', () => {
  const t0 = 1_000_000;
  // 100 s run, 20 s warm-up; samples every 10 s
  const samples: Sample[] = Array.from({ length: 11 }, (_, i) => ({
    t_s: i * 10,
    processes: {
      'keel-engine': { pid: 1, rss_mb: 100 + i, age_s: i * 10 },
      // triage grows until 30 s, then flat; restarted at 60 s (new pid, young until 120 s)
      triage: i < 6 ? { pid: 2, rss_mb: i < 3 ? 50 + 20 * i : 110, age_s: i * 10 } : { pid: 3, rss_mb: 60, age_s: (i - 6) * 10 },
    },
    files: { 'keel.db': 1000 * i, nats: 500 },
    streams: { KEEL_EVT: { bytes: 100 * i, msgs: 10 * i } },
    rows: { events: i < 6 ? 40 * i : 200 },
    dlq_depth: i === 10 ? 2 : 0,
    sent: 0,
    accepted: 0,
    completed: 0,
    kills: 0,
  }));
  const mail = (i: number, acceptedS: number | undefined, latencyMs: number | undefined, o: Partial<MailRecord> = {}): MailRecord => ({
    messageId: `<m${i}@x>`,
    sentAt: (acceptedS ?? 0) * 1000,
    ...(acceptedS !== undefined ? { acceptedAt: t0 + acceptedS * 1000 } : { refused: '421 try later' }),
    ...(acceptedS !== undefined && latencyMs !== undefined ? { completedAt: t0 + acceptedS * 1000 + latencyMs } : {}),
    completedRuns: acceptedS !== undefined && latencyMs !== undefined ? [`run-${i}`] : [],
    otherRuns: [],
    replies: acceptedS !== undefined && latencyMs !== undefined ? 1 : 0,
    ...o,
  });
  const mails: MailRecord[] = [
    ...Array.from({ length: 80 }, (_, i) => mail(i, 20 + i, 100 + (i < 16 ? i : 10 * i))),
    mail(100, 50, undefined), // accepted, never completed: lost
    mail(101, 55, 300, { completedRuns: ['run-101', 'run-101b'] }), // two runs: duplicated
    mail(102, 60, 300, { replies: 2 }), // two replies: duplicated
    mail(103, undefined, undefined), // refused at SMTP: not lost
    mail(104, 70, undefined, { otherRuns: ['run-104'] }), // failed run: lost, and counted failed
    mail(105, 5, 5_000), // accepted during warm-up: not in the latency figures
  ];
  const s = summarizeSoak({ samples, mails, t0, warmupMs: 20_000, durationMs: 100_000, ratePerS: 1, kills: 1, windows: 4, procWarmupS: 30 });

  it('counts sent, accepted, refused, completed, failed, lost and duplicated from the mails', () => {
    expect(s.mails).toEqual({ sent: 86, accepted: 85, refused: 1, completed: 83, failed: 1, lost: 2, duplicated: 2, replied: 83 });
  });

  it('measures RSS after warm-up per process, leaving out a restarted process\'s own warm-up', () => {
    expect(s.rss['keel-engine']).toEqual({ samples: 9, restarts: 0, min_mb: 102, max_mb: 110, first_mb: 102, last_mb: 110, flat_within_pct: 7.8, flat_within_pct_per_process: 7.8 });
    // samples at 20..50 s of the first pid (90, 110, 110, 110) and 90, 100 s of the second (age >= 30 s)
    expect(s.rss.triage).toEqual({ samples: 6, restarts: 1, min_mb: 60, max_mb: 110, first_mb: 90, last_mb: 60, flat_within_pct: 83.3, flat_within_pct_per_process: 22.2 });
    // each process on its own: the first pid 90 → 110 (22.2 %); the second has 2 samples, too few to judge
    expect(s.rss_flat_within_pct_max).toBe(83.3);
    expect(s.rss_flat_within_pct_max_per_process).toBe(22.2);
  });

  it('gives p50/p99 per window after warm-up and the p99 drift of the last window against the first', () => {
    // 20 s windows from 20 s: the 80 regular mails, 101 (55 s) and 102 (60 s); 105 came in the warm-up
    expect(s.latency.windows.map((w) => [w.from_s, w.count])).toEqual([[20, 20], [40, 21], [60, 21], [80, 20]]);
    const first = s.latency.windows[0]!;
    const last = s.latency.windows.at(-1)!;
    // first window: 100..115 ms and 260..290 ms; last: 700..890 ms
    expect([first.p50_ms, first.p99_ms]).toEqual([109, 290]);
    expect([last.p50_ms, last.p99_ms]).toEqual([790, 890]);
    expect(s.latency.p99_drift_pct).toBe(Math.round(((890 - 290) / 290) * 1000) / 10);
  });

  it('reports growth per hour of files, streams and tables, and over the last half (falls off when bounded)', () => {
    // keel.db: 2000 -> 10000 bytes in 80 s
    expect(s.growth['file:keel.db']).toEqual({ first: 2000, last: 10000, per_hour: 360_000, per_hour_last_half: 360_000, unit: 'bytes' });
    expect(s.growth['stream:KEEL_EVT:msgs']).toMatchObject({ first: 20, last: 100, per_hour: 3600, unit: 'msgs' });
    // the change log stops growing at 50 s
    expect(s.growth['rows:events']).toEqual({ first: 80, last: 200, per_hour: 5400, per_hour_last_half: 0, unit: 'rows' });
    expect(s.dlq_depth_end).toBe(2);
  });
});
