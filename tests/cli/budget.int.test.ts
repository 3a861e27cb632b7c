/**
 * `keel budget set|clear`, `keel budgets`, `keel cost --by workflow` and `--by customer` names,
 * each run as a real process against a real SQLite store.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { openStore, type StateStore } from '../../shared-state/index.ts';
import { createBudgetGuard } from '../../models/index.ts';
import { customerIdFor, CUSTOMER } from '../../agents/inbound/index.ts';
import { REPO_ROOT } from '../../config/index.ts';
import { tempDir } from '../../testkit/index.ts';
import { ALL_ENTITY_TYPES } from '../helpers/types.ts';

let dir: ReturnType<typeof tempDir>;
let state: string;

function keel(args: string[]) {
  const r = spawnSync(process.execPath, [join(REPO_ROOT, 'cli', 'keel.ts'), ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, KEEL_STATE: state, KEEL_LOG_LEVEL: 'silent' },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
const json = (args: string[]) => {
  const r = keel([...args, '--json']);
  if (r.code !== 0) throw new Error(`keel ${args.join(' ')} exited ${r.code}: ${r.stdout}${r.stderr}`);
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- CLI JSON, asserted field by field
  return JSON.parse(r.stdout) as Record<string, any>;
};
const withStore = async <T>(fn: (s: StateStore) => Promise<T>): Promise<T> => {
  const s = await openStore(state, { types: ALL_ENTITY_TYPES });
  try {
    return await fn(s);
  } finally {
    await s.close();
  }
};

beforeAll(async () => {
  dir = tempDir();
  state = `sqlite:${dir.path}/s.db`;
  await withStore(async () => undefined); // an engine's store exists
});
afterAll(() => dir.remove());

describe('keel budget', () => {
  it('sets a customer budget by email before the customer exists; admission finds it once they do', async () => {
    const set = json(['budget', 'set', '--customer', 'Ada@Example.com', '--usd', '0.01', '--period', 'month']);
    const id = customerIdFor({ email: 'ada@example.com' })!;
    expect(set.budget).toEqual({ scope: 'customer', key: id, alias: 'ada@example.com', period: 'month', mode: 'hard', limitUsd: 0.01 });

    // the customer writes for the first time: intake derives the same id
    await withStore(async (s) => {
      await s.append(CUSTOMER, id, 0, [{ type: 'created', data: { name: 'Ada', email: 'ada@example.com' } }], { actor: { kind: 'agent', id: 'intake' } });
      const guard = createBudgetGuard(s);
      await guard.settle(await guard.admit({ callId: 'a', scopes: { customerId: id, workflow: 'support-reply' }, estimateUsd: 0.008 }), 0.008);
      await expect(guard.admit({ callId: 'b', scopes: { customerId: id, workflow: 'support-reply' }, estimateUsd: 0.008 })).rejects.toMatchObject({ code: 'MODEL_BUDGET_REFUSED', scope: 'customer', key: id });
      await s.recordCost({ agent: 'reply-suggester', customerId: id, costUsd: 0.008, tokensIn: 100, details: { workflow: 'support-reply' } });
      await s.recordCost({ agent: 'triage', customerId: 'cus-unknown', costUsd: 0.001, details: { workflow: 'triage-flow' } });
    });

    const { budgets } = json(['budgets']);
    expect(budgets).toEqual([
      expect.objectContaining({ scope: 'customer', key: id, alias: 'ada@example.com', period: 'month', mode: 'hard', limitUsd: 0.01, reservedUsd: 0, spentUsd: 0.008, remainingUsd: 0.002, refusals: 1 }),
    ]);
    const table = keel(['budgets']);
    expect(table.stdout).toMatch(new RegExp(`customer ${id} \\(ada@example\\.com\\)\\s+month\\s+\\d{4}-\\d{2}\\s+hard\\s+\\$0\\.010000\\s+\\$0\\.000000\\s+\\$0\\.008000\\s+\\$0\\.002000\\s+1`));
  });

  it('keel cost --by workflow groups on the recorded workflow name; --by customer names each customer', () => {
    const byWf = json(['cost', '--by', 'workflow']);
    const wf = Object.fromEntries((byWf.groups as { key: { workflow: string | null }; totals: { costUsd: number; count: number }; refusals: number }[]).map((g) => [g.key.workflow, g]));
    expect(wf['support-reply']).toMatchObject({ totals: { count: 2, costUsd: 0.008 }, refusals: 1 }); // the paid call and the refusal
    expect(wf['triage-flow']).toMatchObject({ totals: { count: 1, costUsd: 0.001 }, refusals: 0 });

    const id = customerIdFor({ email: 'ada@example.com' })!;
    const byCus = json(['cost', '--by', 'customer']);
    const ada = (byCus.groups as { key: { customerId: string }; customer?: unknown }[]).find((g) => g.key.customerId === id);
    expect(ada?.customer).toEqual({ id, email: 'ada@example.com', name: 'Ada' });
    expect((byCus.groups as { key: { customerId: string }; customer?: unknown }[]).find((g) => g.key.customerId === 'cus-unknown')?.customer).toEqual({ id: 'cus-unknown' });
    expect(keel(['cost', '--by', 'customer']).stdout).toMatch(new RegExp(`^${id} \\(ada@example\\.com\\)\\s+2`, 'm'));
  });

  it('soft and engine budgets, clear, a handle before first contact, and clear errors', () => {
    expect(json(['budget', 'set', '--agent', 'triage', '--usd', '2', '--soft']).budget).toMatchObject({ scope: 'agent', key: 'triage', period: 'day', mode: 'soft' });
    expect(json(['budget', 'set', '--engine', '--usd', '50', '--period', 'month']).budget).toMatchObject({ scope: 'engine', key: 'engine' });
    expect(json(['budget', 'set', '--customer', '@grace', '--usd', '1']).budget).toMatchObject({ key: customerIdFor({ handle: 'grace' }), alias: '@grace' });
    expect(json(['budgets']).budgets.map((b: { scope: string; key: string }) => `${b.scope}:${b.key}`)).toEqual(expect.arrayContaining(['agent:triage', 'engine:engine', `customer:${customerIdFor({ handle: 'grace' })}`]));
    expect(json(['budget', 'clear', '--agent', 'triage'])).toMatchObject({ cleared: true });
    expect(json(['budget', 'clear', '--agent', 'triage'])).toMatchObject({ cleared: false });
    expect(json(['budgets']).budgets.some((b: { key: string }) => b.key === 'triage')).toBe(false);

    const none = keel(['budget', 'set', '--usd', '1', '--json']);
    expect(none.code).toBe(1);
    expect(JSON.parse(none.stdout)).toMatchObject({ error: 'CLI_BAD_ARGUMENT', message: expect.stringContaining('exactly one scope') });
    const badUsd = keel(['budget', 'set', '--engine', '--usd', 'lots']);
    expect(badUsd.code).toBe(1);
    expect(badUsd.stderr).toMatch(/error \[CLI_BAD_ARGUMENT\]: --usd takes a number/);
    expect(keel(['budget', 'set', '--help']).stdout).toMatch(/--customer <who>/);
  });
});
