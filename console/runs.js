// Runs: the list, and one run's steps as a timeline (attempts, durations, costs, models, tiers,
// recalled memories, trace id), with retry-from-step and cancel.
import { h, mount, api, usd, ms, when, ago, table, badge, toast } from './dom.js';

const STATUSES = ['', 'running', 'completed', 'failed', 'compensating', 'cancelled', 'superseded'];

export async function render(el, ctx) {
  if (ctx.parts[0]) return detail(el, ctx, ctx.parts[0]);
  const status = ctx.params.get('status') ?? '';
  const r = await api(`/v1/runs?limit=100${status ? `&status=${status}` : ''}`);
  mount(
    el,
    h('h1', {}, 'Runs'),
    h('div', { class: 'toolbar' }, h('label', { for: 'run-status' }, 'Status'), h('select', { id: 'run-status', onchange: (e) => (location.hash = ctx.href('runs', [], { status: e.target.value })) }, STATUSES.map((s) => h('option', { value: s, selected: s === status }, s || 'any')))),
    r.runs.length === 0
      ? h('p', { class: 'empty' }, 'No runs.')
      : table(
          `${r.runs.length} of ${r.total} runs, newest first`,
          ['run', 'workflow', 'status', 'started', 'cost', 'customer'],
          r.runs.map((x) => [h('a', { href: ctx.href('runs', [x.id]) }, x.id.slice(0, 14)), `${x.workflow} v${x.version}`, badge(x.status), ago(x.startedAt), h('span', { class: 'num' }, usd(x.spentUsd)), x.customer ?? '']),
          { id: 'runs' },
        ),
  );
}

async function detail(el, ctx, id) {
  const r = await api(`/v1/runs/${encodeURIComponent(id)}/timeline`);
  const run = r.run;
  const t0 = Date.parse(run.startedAt);
  const end = Math.max(Date.parse(run.finishedAt ?? '') || Date.now(), ...r.steps.map((s) => Date.parse(s.completedAt ?? '') || 0));
  const span = Math.max(1, end - t0);
  const trace = run.traceId ? (r.tracesUi ? h('a', { href: `${r.tracesUi}/trace/${encodeURIComponent(run.traceId)}`, target: '_blank', rel: 'noopener' }, run.traceId) : h('code', {}, run.traceId)) : '—';
  const act = async (path, body, done) => {
    try {
      await api(`/v1/runs/${encodeURIComponent(run.id)}/${path}`, { method: 'POST', body });
      toast(done);
      ctx.refresh();
    } catch (err) {
      toast(`${err.message}`, 'error');
    }
  };
  const rows = r.steps.map((s) => {
    const start = Date.parse(s.scheduledAt ?? '') || t0;
    const stop = Date.parse(s.completedAt ?? '') || (s.status === 'running' || s.status === 'scheduled' ? Date.now() : start);
    const left = ((start - t0) / span) * 100;
    const width = Math.max(0.8, ((stop - start) / span) * 100);
    const bar = h('div', { class: 'track', 'aria-hidden': 'true' }, h('div', { class: `bar b-${s.status}` }));
    bar.firstChild.style.marginLeft = `${left.toFixed(2)}%`;
    bar.firstChild.style.width = `${Math.min(100 - left, width).toFixed(2)}%`;
    return h(
      'li',
      { class: 'step' },
      h(
        'div',
        { class: 'step-head' },
        h('strong', {}, s.id),
        ' ',
        badge(s.status),
        ` attempt ${s.attempt}`,
        s.agent ? ` · ${s.agent}` : '',
        s.durationMs !== null ? ` · ${ms(s.durationMs)}` : '',
        s.costUsd ? ` · ${usd(s.costUsd)}` : '',
        s.models.length ? ` · model ${s.models.join(', ')}` : '',
        s.tier !== null ? ` · tier ${s.tier}` : '',
        ' ',
        h('button', { type: 'button', class: 'small', onclick: () => confirm(`Re-drive run ${run.id} from step ${s.id}? It and every later step run again.`) && act('retry', { from: s.id }, `Re-driving from ${s.id}`) }, 'Retry from here'),
      ),
      bar,
      s.error ? h('p', { class: s.status === 'failed' ? 'error' : 'muted' }, s.error) : null,
      s.deadLetter ? h('p', {}, `Dead-lettered (${s.deadLetter.reason}) `, h('a', { href: ctx.href('agents', [], { dlq: s.deadLetter.seq }) }, 'see the dead letter')) : null,
      s.memories.length ? h('p', { class: 'muted' }, `Recalled memories: ${s.memories.join(', ')}`) : null,
      s.events.length ? h('details', {}, h('summary', {}, `${s.events.length} event(s)`), h('ul', { class: 'events' }, s.events.map((e) => h('li', {}, `${when(e.time)} ${e.type}${e.attempt ? ` (attempt ${e.attempt})` : ''}${e.error ? `: ${e.error}` : ''} by ${e.actor}`)))) : null,
    );
  });
  mount(
    el,
    h('p', {}, h('a', { href: ctx.href('runs') }, '← all runs')),
    h('h1', {}, `Run ${run.id}`),
    h(
      'dl',
      { class: 'facts' },
      h('dt', {}, 'Workflow'),
      h('dd', {}, `${run.workflow} v${run.version}`),
      h('dt', {}, 'Status'),
      h('dd', {}, badge(run.status), run.error ? ` ${run.error}` : ''),
      h('dt', {}, 'Started'),
      h('dd', {}, `${when(run.startedAt)}${run.finishedAt ? ` · finished ${when(run.finishedAt)}` : ''}`),
      h('dt', {}, 'Cost'),
      h('dd', {}, h('a', { href: ctx.href('cost', [], { run: run.id, by: 'records', since: 'all' }) }, usd(run.spentUsd)), ` (${r.costs.length} ledger record${r.costs.length === 1 ? '' : 's'})`),
      h('dt', {}, 'Customer'),
      h('dd', {}, run.customer ?? '—'),
      h('dt', {}, 'Trace'),
      h('dd', { id: 'trace' }, trace),
    ),
    run.status === 'running' ? h('div', { class: 'actions' }, h('button', { type: 'button', class: 'danger', onclick: () => confirm(`Cancel run ${run.id}?`) && act('cancel', {}, 'Cancelled') }, 'Cancel run')) : null,
    h('h2', {}, 'Steps'),
    h('ol', { class: 'timeline', 'aria-label': 'Steps in order' }, rows),
  );
}
