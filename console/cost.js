// Cost explorer: totals by customer, workflow, agent, model and day; click a total to drill down
// (a customer → their tickets → the ledger records), each record links to its run and trace.
import { h, mount, api, usd, ms, when, table } from './dom.js';

const DIMS = [
  ['customer', 'Customer'],
  ['workflow', 'Workflow'],
  ['agent', 'Agent'],
  ['model', 'Model'],
  ['day', 'Day'],
  ['ticket', 'Ticket'],
];
const FILTERS = ['customer', 'workflow', 'agent', 'model', 'day', 'capability', 'ticket', 'run'];
const SINCE = [
  ['24h', 'last 24 hours'],
  ['7d', 'last 7 days'],
  ['30d', 'last 30 days'],
  ['all', 'all time'],
];
/** what a click on a group of this dimension opens next */
const NEXT = { customer: 'ticket', ticket: 'records', workflow: 'ticket', agent: 'records', model: 'records', day: 'customer' };

export async function render(el, ctx) {
  const p = ctx.params;
  const since = p.get('since') ?? '30d';
  const filters = Object.fromEntries(FILTERS.filter((f) => p.get(f)).map((f) => [f, p.get(f)]));
  const by = p.get('by') ?? (filters.ticket || filters.run ? 'records' : 'customer');
  const q = new URLSearchParams({ since, ...filters });
  const go = (over) => ctx.href('cost', [], { since, ...filters, by, ...over });

  const [view, budgets] = await Promise.all([by === 'records' ? api(`/v1/cost/records?${q}`) : api(`/v1/cost?by=${by}&${q}`), api('/v1/budgets')]);

  const sinceSel = h('select', { id: 'cost-since', onchange: (e) => (location.hash = go({ since: e.target.value })) }, SINCE.map(([v, l]) => h('option', { value: v, selected: v === since }, l)));
  const tabs = h(
    'div',
    { class: 'tabs', role: 'group', 'aria-label': 'Group totals by' },
    DIMS.map(([d, l]) => h('a', { href: go({ by: d }), class: 'tab', 'aria-current': by === d ? 'true' : null }, l)),
    h('a', { href: go({ by: 'records' }), class: 'tab', 'aria-current': by === 'records' ? 'true' : null }, 'Records'),
  );
  const chips = Object.keys(filters).length
    ? h(
        'p',
        { class: 'chips', 'aria-label': 'Filters' },
        'Only ',
        Object.entries(filters).map(([k, v]) => h('a', { class: 'chip', href: ctx.href('cost', [], { since, by: by === 'records' ? 'customer' : by, ...filters, [k]: '' }), title: `remove the ${k} filter` }, `${k}: ${k === 'customer' && view.customer ? (view.customer.email ?? view.customer.handle ?? v) : v} ✕`)),
        ' ',
        h('a', { href: ctx.href('cost', [], { since }) }, 'clear all'),
      )
    : null;

  const t = view.totals;
  const summary = h(
    'p',
    { class: 'totals', id: 'cost-total' },
    h('strong', { 'data-usd': t.costUsd }, usd(t.costUsd)),
    ` in ${t.count} ledger record${t.count === 1 ? '' : 's'} (model calls and task compute) · tokens in ${t.tokensIn} (cached ${t.tokensCached}) · out ${t.tokensOut} · compute ${ms(t.computeMs)}`,
  );

  let body;
  if (by === 'records') body = recordsTable(view, ctx);
  else if (view.groups.length === 0) body = h('p', { class: 'empty' }, 'No model calls recorded in this window.');
  else {
    const label = (g) => {
      if (by === 'customer' && g.customer) return [g.customer.email ?? g.customer.handle ?? g.key, g.customer.name && g.customer.name !== g.customer.email ? ` (${g.customer.name})` : '', g.customer.email || g.customer.handle ? h('span', { class: 'muted' }, ` ${g.key}`) : ''];
      if (by === 'ticket') return [g.subject ?? g.key ?? '(no ticket)', g.key ? h('span', { class: 'muted' }, ` ${g.key}`) : ''];
      return g.key ?? '(none)';
    };
    body = table(
      `Totals by ${by}`,
      [by, 'records', 'tokens in / cached / out', 'cost'],
      view.groups.map((g) => [
        g.key === null ? label(g) : h('a', { href: go({ [by]: g.key, by: NEXT[by] ?? 'records' }), class: 'drill', 'data-key': g.key }, label(g)),
        String(g.totals.count),
        `${g.totals.tokensIn} / ${g.totals.tokensCached} / ${g.totals.tokensOut}`,
        h('span', { class: 'num' }, usd(g.totals.costUsd)),
      ]),
      { id: 'cost-groups' },
    );
  }

  mount(
    el,
    h('h1', {}, 'Cost'),
    h('div', { class: 'toolbar' }, h('label', { for: 'cost-since' }, 'Window'), sinceSel),
    tabs,
    chips,
    summary,
    body,
    h('h2', {}, 'Budgets'),
    budgets.budgets.length === 0
      ? h('p', { class: 'empty' }, 'No budgets set (keel budget set --customer C --usd 5 --period month).')
      : table(
          null,
          ['scope', 'period', 'mode', 'limit', 'spent', 'reserved', 'left', 'refusals'],
          budgets.budgets.map((b) => [
            b.scope === 'engine' ? 'engine' : `${b.scope} ${b.alias ?? b.key}`,
            `${b.period} (${b.window})`,
            b.mode,
            usd(b.limitUsd),
            usd(b.spentUsd),
            usd(b.reservedUsd),
            h('span', { class: b.remainingUsd <= 0 ? 'num over' : 'num' }, usd(b.remainingUsd), h('meter', { min: 0, max: b.limitUsd, value: Math.max(0, b.remainingUsd), 'aria-label': `${usd(b.remainingUsd)} of ${usd(b.limitUsd)} left` })),
            String(b.refusals),
          ]),
        ),
  );
}

function recordsTable(view, ctx) {
  const trace = (id) => (!id ? '' : view.tracesUi ? h('a', { href: `${view.tracesUi}/trace/${encodeURIComponent(id)}`, target: '_blank', rel: 'noopener' }, id.slice(0, 12)) : h('code', { title: id }, id.slice(0, 12)));
  if (view.records.length === 0) return h('p', { class: 'empty' }, 'No records behind this total.');
  return h(
    'div',
    {},
    table(
      'Ledger records behind this total, newest first',
      ['time', 'agent / capability', 'model', 'customer / entity', 'in / cached / out', 'cost', 'run', 'trace'],
      view.records.map((r) => [
        when(r.time),
        `${r.agent ?? ''} ${r.capability ? `/ ${r.capability}` : ''}`,
        r.model ?? '',
        [r.customerId ?? '', r.entityType && r.entityId ? ` ${r.entityType}/${r.entityId}` : ''],
        `${r.tokensIn} / ${r.tokensCached} / ${r.tokensOut}`,
        h('span', { class: 'num' }, r.details?.refused ? 'refused' : usd(r.costUsd)),
        r.runId ? h('a', { href: ctx.href('runs', [r.runId]) }, r.runId.slice(0, 12)) : '',
        trace(r.traceId),
      ]),
      { id: 'cost-records' },
    ),
    view.omitted ? h('p', { class: 'muted' }, `… and ${view.omitted} older record(s).`) : null,
  );
}
