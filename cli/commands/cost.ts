import type { Command } from 'commander';
import { openCliStore } from '../context.ts';
import { resolveCustomer } from '../../agents/index.ts';
import { CUSTOMER } from '../../agents/inbound/index.ts';
import { CliError } from '../errors.ts';
import { addCostRecord, emptyCostTotals, roundCostTotals, type CostDimension, type CostQuery, type CostRecord, type CostTotals, type StateStore } from '../../shared-state/index.ts';

/** A bad `keel cost` argument (duration, dimension, count). */
export class CostArgumentError extends CliError {
  declare readonly code: 'COST_BAD_ARGUMENT';
  constructor(message: string) {
    super('COST_BAD_ARGUMENT', message);
    this.name = 'CostArgumentError';
  }
}

const UNIT_MS: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/** `30m`, `24h`, `7d`, `90s`, `2w` (also `1.5h`) → milliseconds. */
export function parseDuration(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$/i.exec(text);
  const ms = m ? Number(m[1]) * UNIT_MS[m[2]!.toLowerCase()]! : NaN;
  if (!Number.isFinite(ms) || ms <= 0) throw new CostArgumentError(`--since takes a duration like 30m, 24h or 7d (s, m, h, d, w), or an ISO time; got '${text}'`);
  return ms;
}

/** The ISO time `--since` means: now minus a duration, or an ISO time given as is. */
export function sinceTime(text: string, now = Date.now()): string {
  if (/^\d{4}-\d{2}-\d{2}/.test(text.trim())) {
    const t = Date.parse(text);
    if (Number.isFinite(t)) return new Date(t).toISOString();
  }
  return new Date(now - parseDuration(text)).toISOString();
}

/**
 * What `--by` groups on: the ledger's dimensions, plus `workflow` — the workflow name model calls
 * record in their details (`details.workflow`), grouped here rather than in the store.
 */
export type CostBy = CostDimension | 'workflow';
type GroupKey = Partial<Record<CostBy, string | null>>;

/** `--by` names → the ledger's dimensions. */
const DIMENSIONS: Record<string, CostBy[]> = {
  workflow: ['workflow'],
  agent: ['agent'],
  capability: ['capability'],
  customer: ['customerId'],
  customerid: ['customerId'],
  run: ['runId'],
  runid: ['runId'],
  model: ['model'],
  entity: ['entityType', 'entityId'],
};

export function parseBy(text: string): CostBy[] {
  const out: CostBy[] = [];
  for (const part of text.split(',').map((s) => s.trim()).filter(Boolean)) {
    const dims = DIMENSIONS[part.toLowerCase()];
    if (!dims) throw new CostArgumentError(`--by takes agent, capability, customer, run, workflow, model or entity (comma-separated); got '${part}'`);
    for (const d of dims) if (!out.includes(d)) out.push(d);
  }
  if (out.length === 0) throw new CostArgumentError('--by needs at least one of agent, capability, customer, run, workflow, model, entity');
  return out;
}

/** A customer as the operator knows them: the id plus the email or chat handle. */
export interface CustomerName {
  id: string;
  email?: string;
  handle?: string;
  name?: string;
}

export interface CostGroupView {
  key: GroupKey;
  totals: CostTotals;
  /** calls a budget refused in this group (ledger records with `details.refused`, at $0) */
  refusals: number;
  /** with `--by customer`: the group's customer, named */
  customer?: CustomerName;
  /** the newest records behind this total (at most `--records`) */
  records: CostRecord[];
  /** how many more records make up this total than are listed */
  omitted: number;
}

export interface CostView {
  since: string;
  by: CostBy[];
  filters: Partial<Record<CostDimension, string>>;
  totals: CostTotals;
  groups: CostGroupView[];
}

/** A record's value for a `--by` dimension (the workflow name lives in its details). */
export function dimensionOf(r: CostRecord, d: CostBy): string | null {
  if (d === 'workflow') return typeof r.details?.workflow === 'string' ? r.details.workflow : null;
  return r[d];
}


/** Totals per group computed from the records themselves (for dimensions the store does not group on). */
export function groupRecords(records: CostRecord[], by: CostBy[]): { key: GroupKey; totals: CostTotals }[] {
  const groups = new Map<string, { key: GroupKey; totals: CostTotals }>();
  for (const r of records) {
    const key: GroupKey = {};
    for (const d of by) key[d] = dimensionOf(r, d);
    const id = JSON.stringify(by.map((d) => key[d]));
    let g = groups.get(id);
    if (!g) groups.set(id, (g = { key, totals: emptyCostTotals() }));
    addCostRecord(g.totals, r);
  }
  return [...groups.values()].map((g) => ({ key: g.key, totals: roundCostTotals(g.totals) })).sort((a, b) => b.totals.costUsd - a.totals.costUsd);
}

/** Totals per group plus the records behind each, newest first. */
export function buildCostView(report: { totals: CostTotals; groups: { key: GroupKey; totals: CostTotals }[]; records: CostRecord[] }, since: string, by: CostBy[], filters: Partial<Record<CostDimension, string>>, perGroup: number): CostView {
  return {
    since,
    by,
    filters,
    totals: report.totals,
    groups: report.groups.map((g) => {
      const mine = report.records.filter((r) => by.every((d) => dimensionOf(r, d) === (g.key[d] ?? null)));
      const records = mine.slice(0, perGroup);
      return { key: g.key, totals: g.totals, refusals: mine.filter((r) => r.details?.refused).length, records, omitted: g.totals.count - records.length };
    }),
  };
}

/** The customer behind an id, named by email or chat handle (from the customer entity). */
export async function nameCustomer(store: StateStore, id: string): Promise<CustomerName> {
  const e = await store.get<{ email?: string; name?: string; tags?: string[] }>(CUSTOMER, id).catch(() => null);
  if (!e) return { id };
  const handle = e.state.tags?.find((t) => t.startsWith('handle:'))?.slice('handle:'.length);
  return { id, ...(e.state.email ? { email: e.state.email } : {}), ...(handle ? { handle: `@${handle}` } : {}), ...(e.state.name ? { name: e.state.name } : {}) };
}

const LABELS: Record<CostBy, string> = { agent: 'agent', capability: 'capability', customerId: 'customer', runId: 'run', workflow: 'workflow', model: 'model', entityType: 'entity type', entityId: 'entity id' };
const usd = (n: number) => `$${n.toFixed(6)}`;
const ms = (n: number) => (n >= 10_000 ? `${(n / 1000).toFixed(1)} s` : `${n.toFixed(1)} ms`);
const keyText = (g: { key: GroupKey; customer?: CustomerName }, by: CostBy[]) =>
  by.map((d) => {
    const v = g.key[d] ?? '(none)';
    const named = d === 'customerId' && g.customer ? (g.customer.email ?? g.customer.handle) : undefined;
    return named ? `${v} (${named})` : v;
  }).join(' / ');

function table(rows: string[][], indent = ''): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => indent + r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n');
}

function printView(v: CostView, sinceText: string): void {
  const filters = Object.entries(v.filters).map(([k, x]) => `${LABELS[k as CostDimension]}=${x}`);
  const since = /^\d{4}-/.test(sinceText.trim()) ? '' : ` (last ${sinceText.trim()})`;
  console.log(`cost since ${v.since}${since}, by ${v.by.map((d) => LABELS[d]).join(', ')}${filters.length ? `, where ${filters.join(' ')}` : ''}`);
  if (v.totals.count === 0) {
    console.log('no model calls recorded in that window');
    return;
  }
  const head = [v.by.map((d) => LABELS[d].toUpperCase()).join(' / '), 'CALLS', 'TOKENS IN', 'CACHED', 'OUT', 'COST USD', 'COMPUTE', 'REFUSED'];
  const line = (label: string, t: CostTotals, refused: number) => [label, String(t.count), String(t.tokensIn), String(t.tokensCached), String(t.tokensOut), usd(t.costUsd), ms(t.computeMs), String(refused)];
  console.log('');
  console.log(table([head, ...v.groups.map((g) => line(keyText(g, v.by), g.totals, g.refusals)), line('TOTAL', v.totals, v.groups.reduce((n, g) => n + g.refusals, 0))]));
  for (const g of v.groups) {
    console.log('');
    console.log(`${keyText(g, v.by)}: ${g.totals.count} call(s)${g.refusals ? ` (${g.refusals} refused by a budget)` : ''}, ${usd(g.totals.costUsd)}`);
    if (g.records.length === 0) {
      if (g.omitted) console.log(`  (${g.omitted} record(s); raise --records to list them)`);
      continue;
    }
    const rows = g.records.map((r) => [
      r.time,
      r.agent ?? '',
      r.capability ?? '',
      r.model ?? '',
      r.runId ?? '',
      r.entityType && r.entityId ? `${r.entityType}/${r.entityId}` : '',
      `${r.tokensIn}/${r.tokensCached}/${r.tokensOut}`,
      r.details?.refused ? 'refused' : usd(r.costUsd),
      ms(r.computeMs),
      r.traceId ?? '',
    ]);
    console.log(table([['TIME', 'AGENT', 'CAPABILITY', 'MODEL', 'RUN', 'ENTITY', 'IN/CACHED/OUT', 'COST USD', 'COMPUTE', 'TRACE'], ...rows], '  '));
    if (g.omitted) console.log(`  ... and ${g.omitted} older record(s) (--records ${g.totals.count} lists them all)`);
  }
}

interface CostOptions {
  by: string;
  since: string;
  customer?: string;
  run?: string;
  agent?: string;
  capability?: string;
  model?: string;
  records: string;
  json?: boolean;
}

/** `keel cost --by agent|capability|customer|run --since 24h [--json]`: what did this cost, and why. */
export function registerCost(program: Command): void {
  program
    .command('cost')
    .description('What model calls cost and why: totals from the cost ledger (KEEL_STATE) grouped by agent, capability, customer, run, model or entity, with the records behind each total (time, agent, capability, model, tokens, cost, trace id).')
    .option('--by <dims>', 'group by agent, capability, customer, run, workflow, model, entity (comma-separated)', 'agent')
    .option('--since <duration>', 'window: a duration back from now (30m, 24h, 7d) or an ISO time', '24h')
    .option('--customer <who>', 'only this customer: a customer id (cus-…), an email address or a chat handle')
    .option('--run <id>', 'only this workflow run')
    .option('--agent <name>', 'only this agent')
    .option('--capability <name>', 'only this capability')
    .option('--model <name>', 'only this model')
    .option('--records <n>', 'records listed under each group, newest first (0: none)', '20')
    .option('--json', 'print JSON: { since, by, filters, totals, groups: [{ key, customer?: { id, email?, handle?, name? }, totals, refusals, records, omitted }] }')
    .action(async (opts: CostOptions) => {
      const since = sinceTime(opts.since);
      const by = parseBy(opts.by);
      const perGroup = Number(opts.records);
      if (!Number.isInteger(perGroup) || perGroup < 0) throw new CostArgumentError(`--records must be an integer >= 0 (got '${opts.records}')`);
      const filters: Partial<Record<CostDimension, string>> = {};
      if (opts.run) filters.runId = opts.run;
      if (opts.agent) filters.agent = opts.agent;
      if (opts.capability) filters.capability = opts.capability;
      if (opts.model) filters.model = opts.model;

      const store = await openCliStore();
      try {
        if (opts.customer) filters.customerId = (await resolveCustomer(store, opts.customer)).id;
        // the store groups on its own dimensions; the workflow name is in each record's details
        const storeBy = by.includes('workflow') ? undefined : (by as CostDimension[]);
        // every record in the window, so each group can list its own and count its refusals (the ledger is filtered by time first)
        const q: CostQuery = { since, ...(storeBy ? { by: storeBy } : {}), ...filters, records: Number.MAX_SAFE_INTEGER };
        const report = await store.costs(q);
        const view = buildCostView(storeBy ? report : { ...report, groups: groupRecords(report.records, by) }, since, by, filters, perGroup);
        if (by.includes('customerId')) for (const g of view.groups) if (g.key.customerId) g.customer = await nameCustomer(store, g.key.customerId);
        if (opts.json) console.log(JSON.stringify(view));
        else printView(view, opts.since);
      } finally {
        await store.close();
      }
    });
}
