// Audit log with verify, memory search, products and launches.
import { h, mount, api, usd, when, table, badge } from './dom.js';

export const audit = {
  async render(el) {
    const r = await api('/v1/audit?limit=200');
    const result = h('p', { id: 'verify-result', role: 'status' });
    mount(
      el,
      h('h1', {}, 'Audit log'),
      h(
        'div',
        { class: 'toolbar' },
        h('button', {
          type: 'button',
          class: 'primary',
          onclick: async () => {
            result.textContent = 'verifying…';
            try {
              const v = await api('/v1/audit/verify');
              mount(result, v.ok ? [badge('intact', 'completed'), ` ${v.records} records, head ${v.head ?? '—'}`] : [badge('BROKEN', 'failed'), ` at record ${v.brokenAt}: ${v.reason}`]);
            } catch (err) {
              result.textContent = err.message;
            }
          },
        }, 'Verify the hash chain'),
        result,
      ),
      table(
        `Newest ${r.records.length} of ${r.total} records`,
        ['#', 'time', 'actor', 'action', 'subject', 'details'],
        r.records.map((x) => [String(x.seq), when(x.time), `${x.actor.kind}:${x.actor.id}`, x.action, x.subject, h('code', { class: 'clip' }, JSON.stringify(x.details))]),
      ),
    );
  },
};

export const memory = {
  async render(el, ctx) {
    const q = ctx.params.get('q') ?? '';
    const input = h('input', { id: 'memory-q', name: 'q', type: 'search', value: q, placeholder: 'did we refund her?' });
    const form = h('form', { class: 'toolbar', role: 'search' }, h('label', { for: 'memory-q' }, 'Recall'), input, h('button', { type: 'submit', class: 'primary' }, 'Search'));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      location.hash = ctx.href('memory', [], { q: input.value });
    });
    let results = h('p', { class: 'muted' }, 'Hybrid recall (meaning and words) over long-term memory.');
    if (q) {
      try {
        const r = await api(`/v1/memory/search?q=${encodeURIComponent(q)}`);
        results = r.hits.length === 0 ? h('p', { class: 'empty' }, 'Nothing recalled.') : table(null, ['score', 'kind', 'customer', 'from', 'text'], r.hits.map((x) => [x.score.toFixed(3), x.kind, x.customerId ?? '', x.entityId ?? '', x.text]));
      } catch (err) {
        results = h('p', { class: 'error' }, err.message);
      }
    }
    mount(el, h('h1', {}, 'Memory'), form, results);
  },
  busy: () => document.activeElement?.id === 'memory-q',
};

export const products = {
  async render(el, ctx) {
    const r = await api('/v1/products');
    mount(
      el,
      h('h1', {}, 'Products and launches'),
      r.products.length === 0
        ? h('p', { class: 'empty' }, 'No products (keel product create …).')
        : table(null, ['product', 'name', 'lifecycle', 'subscribers', 'launch run'], r.products.map((p) => [p.id, p.name ?? '', p.blocked ? [p.lifecycle, ' ', badge('blocked', 'failed')] : (p.lifecycle ?? ''), String(p.subscribers), p.launchRunId ? h('a', { href: ctx.href('runs', [p.launchRunId]) }, p.launchRunId.slice(0, 12)) : ''])),
      h('h2', {}, 'Launch runs'),
      r.launches.length === 0 ? h('p', { class: 'empty' }, 'No launches.') : table(null, ['run', 'product', 'status', 'started', 'cost'], r.launches.map((l) => [h('a', { href: ctx.href('runs', [l.runId]) }, l.runId.slice(0, 12)), l.productId ?? '', badge(l.status), when(l.startedAt), usd(l.spentUsd)])),
    );
  },
};
