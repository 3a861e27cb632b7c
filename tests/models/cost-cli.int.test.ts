/**
 * The must-show: a scripted chat model with known token usage, calls attributed to two
 * customers, and `keel cost --by customer --json` (a real process) reports each customer's
 * tokens and USD exactly.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openStore } from '../../shared-state/index.ts';
import { createModelRegistry, invokeModel } from '../../models/index.ts';
import { REPO_ROOT } from '../../config/index.ts';
import { tempDir } from '../../testkit/common.ts';
import { ALL_ENTITY_TYPES } from '../helpers/types.ts';

let dir: ReturnType<typeof tempDir>;
let state: string;

function keel(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [join(REPO_ROOT, 'cli', 'keel.ts'), ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, KEEL_STATE: state, KEEL_LOG_LEVEL: 'silent', ...env },
    encoding: 'utf8',
    timeout: 30_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

// $2 input, $0.50 cached input, $8 output per 1M tokens for scripted models
const PRICE_ENV = { KEEL_PRICE_SCRIPTED: '2,0.5,8' };
const cost = (input: number, cached: number, output: number) => ((input - cached) * 2 + cached * 0.5 + output * 8) / 1e6;

const SCRIPT = [
  { content: 'triage: refund', usage: { input_tokens: 1000, output_tokens: 100, cached_tokens: 400 } }, // acme
  { content: 'draft reply', usage: { input_tokens: 3000, output_tokens: 500, cached_tokens: 2000 } }, // globex
  { content: 'check reply', usage: { input_tokens: 800, output_tokens: 50, cached_tokens: 0 } }, // acme
];

beforeAll(async () => {
  dir = tempDir();
  state = `sqlite:${dir.path}/s.db`;
  const scriptPath = join(dir.path, 'replies.json');
  writeFileSync(scriptPath, JSON.stringify({ model: 'scripted-small', replies: SCRIPT }));

  // configured exactly as an operator would: a scripted tier-1 model and a price for it
  const models = createModelRegistry({ KEEL_MODEL_SMALL: `scripted:${scriptPath}`, ...PRICE_ENV });
  const store = await openStore(state, { types: ALL_ENTITY_TYPES });
  try {
    const calls = [
      { customerId: 'acme', agent: 'triage', capability: 'ticket.triage', runId: 'run-a' },
      { customerId: 'globex', agent: 'writer', capability: 'ticket.reply', runId: 'run-g' },
      { customerId: 'acme', agent: 'checker', capability: 'ticket.check', runId: 'run-a' },
    ];
    for (const a of calls) {
      await invokeModel({ model: models.get('small'), messages: [{ role: 'user', content: 'Where is my refund?' }], attribution: { ...a, entityType: 'ticket', entityId: `T-${a.customerId}` }, costs: store });
    }
  } finally {
    await store.close();
  }
});
afterAll(() => dir.remove());

interface Totals {
  count: number;
  tokensIn: number;
  tokensOut: number;
  tokensCached: number;
  costUsd: number;
}
interface Out {
  since: string;
  by: string[];
  totals: Totals;
  groups: { key: Record<string, string | null>; totals: Totals; records: { customerId: string; agent: string; capability: string; model: string; costUsd: number; tokensIn: number }[] }[];
}

describe('keel cost', () => {
  it('--by customer --json reports each customer\'s tokens and USD exactly, with the records behind them', () => {
    const r = keel(['cost', '--by', 'customer', '--since', '1h', '--json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as Out;
    expect(out.by).toEqual(['customerId']);
    expect(Date.now() - Date.parse(out.since)).toBeGreaterThanOrEqual(3_600_000);
    expect(Date.now() - Date.parse(out.since)).toBeLessThan(3_600_000 + 30_000);

    const acmeUsd = cost(1000, 400, 100) + cost(800, 0, 50); // (1200 + 200 + 800)/1e6 + (1600 + 400)/1e6 = 0.0022 + 0.002 = 0.0042
    const globexUsd = cost(3000, 2000, 500); // 0.002 + 0.001 + 0.004 = 0.007
    const acme = out.groups.find((g) => g.key.customerId === 'acme')!;
    const globex = out.groups.find((g) => g.key.customerId === 'globex')!;
    expect(acme.totals).toMatchObject({ count: 2, tokensIn: 1800, tokensCached: 400, tokensOut: 150 });
    expect(globex.totals).toMatchObject({ count: 1, tokensIn: 3000, tokensCached: 2000, tokensOut: 500 });
    expect(acme.totals.costUsd).toBe(0.0042);
    expect(globex.totals.costUsd).toBe(0.007);
    expect(acme.totals.costUsd).toBeCloseTo(acmeUsd, 12);
    expect(globex.totals.costUsd).toBeCloseTo(globexUsd, 12);
    expect(out.totals).toMatchObject({ count: 3, tokensIn: 4800, tokensCached: 2400, tokensOut: 650, costUsd: 0.0112 });
    expect(out.groups.map((g) => g.key.customerId)).toEqual(['globex', 'acme']); // most expensive first

    // the records behind each total: who spent it, on what, with which model
    expect(acme.records.map((x) => [x.agent, x.capability, x.model, x.tokensIn])).toEqual([
      ['checker', 'ticket.check', 'scripted-small', 800],
      ['triage', 'ticket.triage', 'scripted-small', 1000],
    ]);
    expect(acme.records.every((x) => x.customerId === 'acme')).toBe(true);
    expect(globex.records).toHaveLength(1);
  });

  it('groups by agent, capability and run, and filters', () => {
    const byAgent = JSON.parse(keel(['cost', '--by', 'agent', '--json']).stdout) as Out;
    expect(Object.fromEntries(byAgent.groups.map((g) => [g.key.agent, g.totals.count]))).toEqual({ triage: 1, writer: 1, checker: 1 });
    const byRun = JSON.parse(keel(['cost', '--by', 'run,capability', '--json']).stdout) as Out;
    expect(byRun.by).toEqual(['runId', 'capability']);
    expect(byRun.groups).toHaveLength(3);
    const oneRun = JSON.parse(keel(['cost', '--by', 'capability', '--run', 'run-a', '--records', '0', '--json']).stdout) as Out;
    expect(oneRun.totals).toMatchObject({ count: 2, costUsd: 0.0042 });
    expect(oneRun.groups.every((g) => g.records.length === 0)).toBe(true);
  });

  it('prints a table with the records behind each total', () => {
    const r = keel(['cost', '--by', 'customer']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/by customer/);
    expect(r.stdout).toMatch(/^acme\s+2\s+1800\s+400\s+150\s+\$0\.004200/m);
    expect(r.stdout).toMatch(/^globex\s+1\s+3000\s+2000\s+500\s+\$0\.007000/m);
    expect(r.stdout).toMatch(/^TOTAL\s+3\s+4800\s+2400\s+650\s+\$0\.011200/m);
    expect(r.stdout).toMatch(/checker\s+ticket\.check\s+scripted-small\s+run-a\s+ticket\/T-acme\s+800\/0\/50\s+\$0\.002000/);
  });

  it('says clearly when a duration or a dimension is wrong', () => {
    const bad = keel(['cost', '--since', 'yesterday', '--json']);
    expect(bad.code).toBe(1);
    expect(JSON.parse(bad.stdout)).toEqual({ error: 'COST_BAD_ARGUMENT', message: expect.stringMatching(/--since takes a duration like 30m, 24h or 7d.*'yesterday'/) });
    const dim = keel(['cost', '--by', 'planet']);
    expect(dim.code).toBe(1);
    expect(dim.stderr).toMatch(/--by takes agent, capability, customer, run/);
  });

  it('reports an empty window', () => {
    const r = keel(['cost', '--since', '30m', '--customer', 'nobody']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/no model calls recorded/);
  });
});
