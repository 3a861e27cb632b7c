// Inbox: pending approvals with the ticket's triage, summary and the suggested reply.
// Keys: j/k next/previous, a approve, e edit (then Ctrl+Enter approves the edit), r reject, Esc cancel.
import { h, mount, api, ago, badge, toast } from './dom.js';

let items = [];
let selected = 0;
let mode = 'view'; // view | edit | reject
let root = null;
let keysBound = false;

export const busy = () => mode !== 'view';

export async function render(el, ctx) {
  root = el;
  const r = await api(`/v1/inbox${ctx.params.get('state') ? `?state=${encodeURIComponent(ctx.params.get('state'))}` : ''}`);
  const keep = items[selected]?.id;
  items = r.items;
  const at = items.findIndex((i) => i.id === keep);
  selected = at >= 0 ? at : Math.min(selected, Math.max(0, items.length - 1));
  mode = 'view';
  draw();
  if (!keysBound) {
    document.addEventListener('keydown', onKey);
    keysBound = true;
  }
}

export function leave() {
  document.removeEventListener('keydown', onKey);
  keysBound = false;
  mode = 'view';
}

function draw() {
  const list = h(
    'ol',
    { class: 'inbox-list', 'aria-label': 'Pending approvals' },
    items.map((it, i) =>
      h(
        'li',
        {},
        h(
          'button',
          { type: 'button', class: `item${i === selected ? ' selected' : ''}`, 'aria-current': i === selected ? 'true' : null, 'data-id': it.id, onclick: () => select(i) },
          h('span', { class: 'item-top' }, h('strong', {}, it.customer ?? 'unknown sender'), ' ', h('span', { class: 'muted' }, ago(it.createdAt))),
          h('span', { class: 'item-subject' }, it.subject ?? it.ticket?.subject ?? it.action),
          it.ticket?.triage ? h('span', { class: 'item-tags' }, badge(String(it.ticket.triage.intent ?? '?'), 'intent'), ' ', badge(String(it.ticket.triage.urgency ?? ''), String(it.ticket.triage.urgency ?? ''))) : null,
        ),
      ),
    ),
  );
  mount(
    root,
    h('h1', {}, 'Inbox'),
    h('p', { class: 'help', id: 'inbox-keys' }, 'Keys: ', h('kbd', {}, 'j'), '/', h('kbd', {}, 'k'), ' next/previous · ', h('kbd', {}, 'a'), ' approve · ', h('kbd', {}, 'e'), ' edit, then ', h('kbd', {}, 'Ctrl'), '+', h('kbd', {}, 'Enter'), ' approve the edit · ', h('kbd', {}, 'r'), ' reject with a reason · ', h('kbd', {}, 'Esc'), ' cancel'),
    items.length === 0 ? h('p', { class: 'empty' }, 'Nothing waits for you. New approvals appear here live.') : h('div', { class: 'inbox' }, list, detail(items[selected])),
  );
}

function select(i) {
  if (i < 0 || i >= items.length) return;
  selected = i;
  mode = 'view';
  draw();
  root.querySelector('.item.selected')?.focus();
}

function detail(it) {
  const t = it.ticket;
  const triage = t?.triage ?? {};
  const reply = h('textarea', { id: 'reply', name: 'reply', rows: 10, readonly: mode !== 'edit', 'aria-describedby': 'inbox-keys' });
  reply.value = it.text ?? it.reply ?? '';
  const reason = h('input', { id: 'reason', name: 'reason', type: 'text', required: true, placeholder: 'Why not send this?' });
  const actions =
    mode === 'edit'
      ? [h('button', { type: 'button', class: 'primary', onclick: () => decide('approved', reply.value) }, 'Approve edited reply'), h('button', { type: 'button', onclick: cancel }, 'Cancel')]
      : mode === 'reject'
        ? [h('label', { for: 'reason' }, 'Reason'), reason, h('button', { type: 'button', class: 'danger', onclick: () => decide('rejected', undefined, reason.value) }, 'Reject'), h('button', { type: 'button', onclick: cancel }, 'Cancel')]
        : [
            h('button', { type: 'button', class: 'primary', 'aria-keyshortcuts': 'a', onclick: () => decide('approved') }, 'Approve ', h('kbd', {}, 'a')),
            h('button', { type: 'button', 'aria-keyshortcuts': 'e', onclick: () => setMode('edit') }, 'Edit ', h('kbd', {}, 'e')),
            h('button', { type: 'button', class: 'danger', 'aria-keyshortcuts': 'r', onclick: () => setMode('reject') }, 'Reject ', h('kbd', {}, 'r')),
          ];
  return h(
    'section',
    { class: 'card detail', 'aria-labelledby': 'detail-title' },
    h('h2', { id: 'detail-title' }, it.subject ?? t?.subject ?? it.action),
    h('p', { class: 'muted' }, `${it.customer ?? ''}${it.channel ? ` · ${it.channel}` : ''} · waiting ${ago(it.createdAt)}`, it.runId ? [' · ', h('a', { href: `#/runs/${encodeURIComponent(it.runId)}` }, 'run')] : null, t ? [' · ', h('a', { href: `#/cost?ticket=${encodeURIComponent(t.id)}&since=all` }, 'cost')] : null),
    t
      ? h(
          'dl',
          { class: 'facts' },
          h('dt', {}, 'Triage'),
          h('dd', {}, triage.intent ? [badge(String(triage.intent), 'intent'), ' ', badge(String(triage.urgency ?? ''), String(triage.urgency ?? '')), ' ', triage.sentiment ? badge(String(triage.sentiment), 'neutral') : null, typeof triage.confidence === 'number' ? ` confidence ${triage.confidence.toFixed(2)}` : '', triage.tier !== undefined ? ` · tier ${triage.tier}` : ''] : 'not triaged'),
          h('dt', {}, 'Summary'),
          h('dd', {}, t.summary ?? '—'),
        )
      : null,
    t?.messages?.length ? h('details', { open: true }, h('summary', {}, `Messages (${t.messages.length})`), t.messages.map((m) => h('blockquote', { class: m.direction === 'in' ? 'msg-in' : 'msg-out' }, h('span', { class: 'muted' }, `${m.from} · ${ago(m.at)}`), h('p', {}, m.text)))) : null,
    h('label', { for: 'reply' }, mode === 'edit' ? 'Reply (editing)' : 'Suggested reply'),
    reply,
    h('div', { class: 'actions' }, actions),
  );
}

function setMode(m) {
  mode = m;
  draw();
  if (m === 'edit') {
    const ta = root.querySelector('#reply');
    ta.focus();
    ta.setSelectionRange(ta.value.length, ta.value.length);
  }
  if (m === 'reject') root.querySelector('#reason').focus();
}

function cancel() {
  mode = 'view';
  draw();
  window.dispatchEvent(new Event('keel:idle'));
}

async function decide(decision, text, reason) {
  const it = items[selected];
  if (!it) return;
  if (decision === 'rejected' && !reason?.trim()) {
    toast('A rejection needs a reason.', 'error');
    root.querySelector('#reason')?.focus();
    return;
  }
  const body = { decision, ...(text !== undefined && text !== (it.reply ?? '') ? { text } : {}), ...(reason ? { reason: reason.trim() } : {}) };
  try {
    await api(`/v1/approvals/${encodeURIComponent(it.id)}`, { method: 'POST', body });
    toast(`${decision === 'approved' ? (body.text ? 'Approved the edited reply' : 'Approved') : 'Rejected'}: ${it.subject ?? it.id}`);
    items.splice(selected, 1);
    selected = Math.min(selected, Math.max(0, items.length - 1));
    mode = 'view';
    draw();
    window.dispatchEvent(new Event('keel:idle'));
  } catch (err) {
    toast(`Could not decide: ${err.message}`, 'error');
  }
}

function onKey(e) {
  if (e.defaultPrevented || e.altKey || e.metaKey) return;
  const inField = /^(INPUT|TEXTAREA|SELECT)$/.test(e.target.tagName) && !e.target.readOnly;
  if (e.key === 'Escape' && mode !== 'view') return cancel();
  if (mode === 'edit' && e.key === 'Enter' && e.ctrlKey) {
    e.preventDefault();
    return decide('approved', root.querySelector('#reply').value);
  }
  if (mode === 'reject' && e.key === 'Enter' && e.target.id === 'reason') {
    e.preventDefault();
    return decide('rejected', undefined, e.target.value);
  }
  if (inField || e.ctrlKey || mode !== 'view') return;
  const k = e.key.toLowerCase();
  if (k === 'j') select(selected + 1);
  else if (k === 'k') select(selected - 1);
  else if (k === 'a') decide('approved');
  else if (k === 'e') setMode('edit');
  else if (k === 'r') setMode('reject');
  else return;
  e.preventDefault();
}
