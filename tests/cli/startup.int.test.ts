/**
 * The CLI bench's target: `keel --version`, `keel tickets` and `keel approvals` (a new process
 * each, against a real store) start and exit within 250 ms at the median. Runs the bench itself
 * (`npm run bench -- cli`, here in --quick mode) and checks its JSON shape too.
 */
import { describe, expect, it } from 'vitest';
import { cliBench, CLI_TARGET_P50_MS } from '../../bench/cli.ts';

describe('keel start-up (bench cli)', () => {
  // a start-up time measured on a shared 2-core machine: a busy moment gets another go, a regression fails every one
  it(`--version, tickets and approvals each answer within ${CLI_TARGET_P50_MS} ms p50`, { timeout: 120_000, retry: 2 }, async () => {
    const lines: string[] = [];
    const { results } = await cliBench.run({ progress: (m) => lines.push(m), quick: true });
    expect(results.map((r) => r.scenario)).toEqual(['keel --version', 'keel tickets', 'keel approvals']);
    for (const r of results) {
      expect(r.baseline).toMatchObject({ scenario: "node -e ''" });
      expect(r.ratio).toBeGreaterThan(0);
      expect(r.p99_ms).toBeGreaterThanOrEqual(r.p50_ms);
      expect(r.p50_ms, `${r.scenario}: p50 ${r.p50_ms} ms (baseline ${r.baseline?.p50_ms} ms)`).toBeLessThanOrEqual(CLI_TARGET_P50_MS);
      expect(r.notes).toMatchObject({ meets_target: true });
    }
  });
});
