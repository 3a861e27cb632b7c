// Agents: live instances (capabilities, health, restarts) and the dead letters with redrive.
import { h, mount, api, ago, when, table, badge, toast } from './dom.js';

// letters the operator opened stay open when a live update redraws the view
const opened = new Set();

export async function render(el, ctx) {
  const [a, d] = await Promise.all([api('/v1/agents'), api('/v1/dlq?limit=100')]);
  const restartsOf = (m) => {
    const p = a.processes.find((x) => x.agents.includes(m.agent));
    return p ? p.restarts : (m.process?.restarts ?? 0);
  };
  const open = ctx.params.get('dlq');
  mount(
    el,
    h('h1', {}, 'Agents'),
    a.agents.length === 0
      ? h('p', { class: 'empty' }, 'No live agent instances.')
      : table(
          `${a.agents.length} live instance(s)`,
          ['agent', 'instance', 'host:pid', 'capabilities', 'health', 'restarts', 'memory', 'circuit breakers'],
          a.agents.map((m) => [
            h('strong', {}, m.agent),
            m.instanceId,
            `${m.host}:${m.pid}`,
            m.capabilities.map((c) => `${c.name}@${c.version}`).join(', '),
            [badge(m.health, m.health === 'ok' ? 'completed' : 'failed'), ` heartbeat ${ago(m.heartbeatAt)}`],
            String(restartsOf(m)),
            m.process ? `${Math.round(m.process.rssBytes / 1048576)} MB` : '',
            breakers(m.breakers ?? []),
          ]),
          { id: 'agents' },
        ),
    h('p', { class: 'muted' }, 'Circuit breakers: one per connector an agent has called (as of its last heartbeat, every 5 s). Open: calls fail fast until the reset time, then one trial call decides.'),
    h('h2', {}, `Dead letters (${d.total})`),
    d.letters.length === 0
      ? h('p', { class: 'empty' }, 'No dead letters.')
      : h('ul', { class: 'letters', id: 'dlq' }, d.letters.map((l) => letter(l, String(l.seq) === open || opened.has(String(l.seq)), ctx))),
  );
}

function breakers(list) {
  if (list.length === 0) return h('span', { class: 'muted' }, 'none used');
  return list.map((b, i) => [i ? ' ' : '', badge(`${b.name}: ${b.state.replace('_', '-')}${b.failures ? ` (${b.failures} failed)` : ''}`, b.state === 'closed' ? 'completed' : 'failed')]);
}

function letter(l, open, ctx) {
  const body = h('pre', { class: 'body' }, 'loading…');
  const det = h(
    'details',
    { open, 'data-seq': l.seq },
    h('summary', {}, h('strong', {}, `#${l.seq}`), ` ${l.capability} · `, badge(l.reason, 'failed'), ` · ${ago(l.deadAt)}`, l.redriven.length ? [' · ', badge('re-driven', 'completed')] : ''),
    h('p', {}, `[${l.error.code}] ${l.error.message}`),
    h('p', { class: 'muted' }, `dead ${when(l.deadAt)} after ${l.deliveries} deliver${l.deliveries === 1 ? 'y' : 'ies'} · ${l.subject}`, l.run ? [' · run ', h('a', { href: ctx.href('runs', [l.run.id]) }, l.run.id.slice(0, 12)), ` step ${l.run.step}`] : ''),
    l.redriven.map((r) => h('p', { class: 'muted' }, `re-driven ${when(r.at)} by ${r.by}`)),
    h('h3', {}, 'Body'),
    body,
    h('div', { class: 'actions' }, h('button', { type: 'button', class: 'primary', onclick: () => redrive(l, false, ctx) }, 'Redrive')),
  );
  const load = async () => {
    try {
      const full = await api(`/v1/dlq/${l.seq}`);
      body.textContent = typeof full.body === 'string' ? full.body : JSON.stringify(full.body, null, 2);
    } catch (err) {
      body.textContent = `could not load: ${err.message}`;
    }
  };
  let loaded = false;
  det.addEventListener('toggle', () => {
    if (det.open) opened.add(String(l.seq));
    else opened.delete(String(l.seq));
    if (det.open && !loaded && !open) {
      loaded = true;
      void load();
    }
  });
  if (open) load();
  return h('li', {}, det);
}

async function redrive(l, force, ctx) {
  try {
    const r = await api(`/v1/dlq/${l.seq}/redrive`, { method: 'POST', body: force ? { force: true } : {} });
    toast(`Re-drove #${l.seq} as ${r.messageId}${r.run ? `; run ${r.run.id} step ${r.run.step} ${r.run.reopened ? 'waits for it' : 'had moved on'}` : ''}`);
    ctx.refresh();
  } catch (err) {
    if (err.status === 409 && !force && confirm(`${err.message}\n\nSend it anyway?`)) return redrive(l, true, ctx);
    toast(err.message, 'error');
  }
}
