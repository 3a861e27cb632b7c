import type { Command } from 'commander';
import { openCliStore } from '../context.ts';
import { resolveCustomer } from '../../agents/index.ts';
import { customerIdFor } from '../../agents/inbound/index.ts';
import { CliError } from '../errors.ts';
import type { StateStore } from '../../shared-state/index.ts';
import type { BudgetScope, BudgetStatus } from '../../models/index.ts';

interface ScopeOptions {
  customer?: string;
  agent?: string;
  workflow?: string;
  run?: string;
  engine?: boolean;
  period?: string;
  json?: boolean;
}

const bad = (message: string) => new CliError('CLI_BAD_ARGUMENT', message);

/**
 * The one scope the options name. A customer is given by id, email or handle; one who has not
 * written yet is keyed by the id intake will derive from that address or handle (the same
 * derivation `resolveCustomer` uses), so admission finds the budget once the customer exists.
 */
async function scopeOf(store: StateStore, o: ScopeOptions): Promise<{ scope: BudgetScope; key?: string; alias?: string }> {
  const given = [o.customer !== undefined, o.agent !== undefined, o.workflow !== undefined, o.run !== undefined, !!o.engine].filter(Boolean).length;
  if (given !== 1) throw bad('name exactly one scope: --customer <id|email|handle>, --agent <name>, --workflow <name>, --run <id> or --engine');
  if (o.engine) return { scope: 'engine' };
  if (o.agent !== undefined) return { scope: 'agent', key: o.agent };
  if (o.workflow !== undefined) return { scope: 'workflow', key: o.workflow };
  if (o.run !== undefined) return { scope: 'run', key: o.run };
  const text = o.customer!.trim();
  const c = await resolveCustomer(store, text);
  if (!c.id) throw bad('--customer needs an id, an email address or a chat handle');
  // a handle nobody wrote from yet: the id intake will derive for it (`@alice`, or any text that is not an id)
  const handle = !c.found && c.by !== 'email' && (text.startsWith('@') || !/^[A-Za-z0-9_-]{1,128}$/.test(text)) ? text.replace(/^@/, '') : undefined;
  if (handle) return { scope: 'customer', key: customerIdFor({ handle })!, alias: `@${handle}` };
  const alias = c.email ?? (c.by === 'handle' ? `@${text.replace(/^@/, '')}` : undefined);
  return { scope: 'customer', key: c.id, ...(alias ? { alias } : {}) };
}

function periodOf(text: string | undefined): 'day' | 'month' {
  if (text === 'day' || text === 'month') return text;
  throw bad(`--period takes day or month (UTC windows); got '${text ?? ''}'`);
}

const usd = (n: number) => `$${n.toFixed(6)}`;
const who = (b: Pick<BudgetStatus, 'scope' | 'key' | 'alias'>) => (b.scope === 'engine' ? 'engine' : `${b.scope} ${b.key}${b.alias ? ` (${b.alias})` : ''}`);

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n');
}

type Scoped = Awaited<ReturnType<typeof scopeOf>>;

/** The budget of one scope and period as the audit log records it (null: none set). */
async function budgetNow(store: StateStore, s: Scoped, period: 'day' | 'month'): Promise<{ limitUsd: number; mode: string } | null> {
  const { createBudgetGuard } = await import('../../models/index.ts');
  const b = (await createBudgetGuard(store).list()).find((x) => x.scope === s.scope && (s.scope === 'engine' || x.key === s.key) && x.period === period);
  return b ? { limitUsd: b.limitUsd, mode: b.mode } : null;
}

/** `budget.changed` with before/after; nothing when the command changed nothing. */
async function auditBudget(store: StateStore, actor: { kind: 'human'; id: string }, s: Scoped, period: 'day' | 'month', before: Awaited<ReturnType<typeof budgetNow>>): Promise<void> {
  const after = await budgetNow(store, s, period);
  if (JSON.stringify(before) === JSON.stringify(after)) return;
  await store.appendAudit({ actor, action: 'budget.changed', subject: `budget/${s.scope}/${s.key ?? 'engine'}`, details: { scope: s.scope, key: s.key ?? 'engine', period, before, after } });
}

const SCOPE_HELP = 'one of --customer <id|email|handle>, --agent <name>, --workflow <name>, --run <id>, --engine';

/** `keel budget set|clear` and `keel budgets`: model spend admitted before the call. */
export function registerBudget(program: Command): void {
  const budget = program.command('budget').description(`Budgets for model spend, checked BEFORE each call (docs/models-and-cost.md): per ${SCOPE_HELP}; per UTC day or month; hard (refuse) or soft (warn).`);

  budget
    .command('set')
    .description('Set (or change) a budget. A customer may be named by email or handle before their first message.')
    .option('--customer <who>', 'a customer: id (cus-…), email address or chat handle')
    .option('--agent <name>', 'an agent')
    .option('--workflow <name>', 'a workflow, by name (all its runs)')
    .option('--run <id>', 'one workflow run (counted over its whole life)')
    .option('--engine', 'the whole engine')
    .requiredOption('--usd <n>', 'the limit in USD')
    .option('--period <p>', 'day or month (UTC windows)', 'day')
    .option('--soft', 'warn and record instead of refusing')
    .option('--json', 'print JSON: { budget: { scope, key, alias?, period, mode, limitUsd } }')
    .action(async (o: ScopeOptions & { usd: string; soft?: boolean }) => {
      const n = Number(o.usd);
      if (!Number.isFinite(n) || n < 0 || o.usd.trim() === '') throw bad(`--usd takes a number of dollars >= 0; got '${o.usd}'`);
      const period = periodOf(o.period);
      const store = await openCliStore();
      try {
        const s = await scopeOf(store, o);
        const { createBudgetGuard } = await import('../../models/index.ts');
        const mode = o.soft ? 'soft' : 'hard';
        const actor = { kind: 'human', id: process.env.USER ?? 'operator' } as const;
        const before = await budgetNow(store, s, period);
        await createBudgetGuard(store).set({ ...s, usd: n, period, mode }, actor);
        await auditBudget(store, actor, s, period, before);
        const view = { scope: s.scope, key: s.key ?? 'engine', ...(s.alias ? { alias: s.alias } : {}), period, mode, limitUsd: n };
        if (o.json) console.log(JSON.stringify({ budget: view }));
        else console.log(`budget set: ${who(view)} ${usd(n)} per ${period}, ${mode}`);
      } finally {
        await store.close();
      }
    });

  budget
    .command('clear')
    .description('Remove a budget (its spend stays in the ledger).')
    .option('--customer <who>', 'a customer: id (cus-…), email address or chat handle')
    .option('--agent <name>', 'an agent')
    .option('--workflow <name>', 'a workflow, by name')
    .option('--run <id>', 'one workflow run')
    .option('--engine', 'the whole engine')
    .option('--period <p>', 'day or month', 'day')
    .option('--json', 'print JSON: { cleared: boolean, scope, key, period }')
    .action(async (o: ScopeOptions) => {
      const period = periodOf(o.period);
      const store = await openCliStore();
      try {
        const s = await scopeOf(store, o);
        const { createBudgetGuard } = await import('../../models/index.ts');
        const actor = { kind: 'human', id: process.env.USER ?? 'operator' } as const;
        const before = await budgetNow(store, s, period);
        const cleared = await createBudgetGuard(store).clear({ ...s, period }, actor);
        if (cleared) await auditBudget(store, actor, s, period, before);
        const view = { scope: s.scope, key: s.key ?? 'engine', ...(s.alias ? { alias: s.alias } : {}) };
        if (o.json) console.log(JSON.stringify({ cleared, ...view, period }));
        else console.log(cleared ? `budget cleared: ${who(view)} per ${period}` : `no ${period} budget for ${who(view)}`);
      } finally {
        await store.close();
      }
    });

  program
    .command('budgets')
    .description('Every budget with its current window: limit, reserved (calls in flight), spent, remaining, refusals.')
    .option('--json', 'print JSON: { budgets: [{ scope, key, alias?, period, mode, window, limitUsd, reservedUsd, spentUsd, remainingUsd, refusals, warnings }] }')
    .action(async (o: { json?: boolean }) => {
      const store = await openCliStore();
      try {
        const { createBudgetGuard } = await import('../../models/index.ts');
        const budgets = await createBudgetGuard(store).list();
        if (o.json) {
          console.log(JSON.stringify({ budgets }));
          return;
        }
        if (budgets.length === 0) {
          console.log('no budgets set (keel budget set --customer C --usd 5 --period month)');
          return;
        }
        const head = ['SCOPE', 'PERIOD', 'WINDOW', 'MODE', 'LIMIT', 'RESERVED', 'SPENT', 'REMAINING', 'REFUSALS', 'WARNINGS'];
        console.log(table([head, ...budgets.map((b) => [who(b), b.period, b.window, b.mode, usd(b.limitUsd), usd(b.reservedUsd), usd(b.spentUsd), usd(b.remainingUsd), String(b.refusals), String(b.warnings)])]));
      } finally {
        await store.close();
      }
    });
}
