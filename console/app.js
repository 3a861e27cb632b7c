// The console's shell: login, the router (#/view/...?params), the live stream (SSE).
import { h, mount, api, csrf, toast } from './dom.js';
import * as inbox from './inbox.js';
import * as cost from './cost.js';
import * as runs from './runs.js';
import * as agents from './agents.js';
import * as more from './more.js';

const VIEWS = { inbox, cost, runs, agents, audit: more.audit, memory: more.memory, products: more.products };
const main = document.getElementById('main');
const nav = document.getElementById('nav');
let info = null;
let current = null;
let stream = null;
let rendering = false;
let stale = false;

function route() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, query = ''] = raw.split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  return { view: parts[0] && VIEWS[parts[0]] ? parts[0] : 'inbox', parts: parts.slice(1), params: new URLSearchParams(query) };
}

/** A hash for a view with params (empty ones dropped). */
export function href(view, parts = [], params = {}) {
  const q = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== ''));
  const s = q.toString();
  return `#/${[view, ...parts].map(encodeURIComponent).join('/')}${s ? `?${s}` : ''}`;
}

// one render at a time: a navigation or live update during a render is drawn right after it,
// so a slow view finishing late cannot overwrite the view the operator moved to
let queued = null;

async function render(opts = {}) {
  if (rendering) {
    queued = { focus: (queued?.focus ?? false) || (opts.focus ?? true), quiet: (queued?.quiet ?? true) && (opts.quiet ?? false) };
    return;
  }
  await draw(opts);
  while (queued) {
    const next = queued;
    queued = null;
    await draw(next);
  }
}

async function draw({ focus = true, quiet = false } = {}) {
  if (!info) return;
  const r = route();
  for (const a of nav.querySelectorAll('a')) {
    if (a.dataset.view === r.view) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const view = VIEWS[r.view];
  if (current && current !== view) current.leave?.();
  current = view;
  rendering = true;
  try {
    if (!quiet) main.setAttribute('aria-busy', 'true');
    await view.render(main, { ...r, info, href, refresh: () => render({ focus: false, quiet: true }) });
    document.title = `Keel · ${r.view}`;
    if (focus) main.focus({ preventScroll: true });
  } catch (err) {
    if (err.status !== 401) mount(main, h('p', { class: 'error', role: 'alert' }, `Could not load this view: ${err.message}`));
  } finally {
    rendering = false;
    main.removeAttribute('aria-busy');
  }
}

function showLogin(message) {
  info = null;
  stream?.close();
  stream = null;
  nav.hidden = true;
  document.getElementById('who').replaceChildren();
  document.getElementById('live').textContent = '';
  const input = h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'current-password', required: true, 'aria-describedby': 'token-help' });
  const err = h('p', { class: 'error', role: 'alert', id: 'login-error' }, message ?? '');
  const form = h(
    'form',
    { class: 'login card', 'aria-labelledby': 'login-title' },
    h('h1', { id: 'login-title' }, 'Log in to Keel'),
    h('label', { for: 'token' }, 'Operator token'),
    input,
    h('p', { id: 'token-help', class: 'help' }, 'Paste a token from ', h('code', {}, 'keel operator token create'), ' (or the one ', h('code', {}, 'keel start'), ' printed). It is sent once; the browser keeps an HttpOnly session cookie.'),
    h('button', { type: 'submit', class: 'primary' }, 'Log in'),
    err,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      const r = await fetch('/v1/session', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token: input.value.trim() }), credentials: 'same-origin' });
      const body = await r.json();
      if (!r.ok) throw new Error(body.message ?? `HTTP ${r.status}`);
      csrf.set(body.csrfToken);
      input.value = '';
      await start();
    } catch (x) {
      err.textContent = `Login failed: ${x.message}`;
      input.focus();
    }
  });
  mount(main, form);
  input.focus();
}

function connect() {
  stream?.close();
  const live = document.getElementById('live');
  stream = new EventSource('/v1/stream');
  stream.addEventListener('open', () => (live.textContent = '● live'));
  stream.addEventListener('error', () => (live.textContent = '○ reconnecting'));
  stream.addEventListener('change', (e) => {
    const d = JSON.parse(e.data);
    document.getElementById('inbox-count').textContent = d.pendingApprovals ? String(d.pendingApprovals) : '';
    live.textContent = '● live';
    if (current?.busy?.()) stale = true; // the operator is typing: refresh when they are done
    else render({ focus: false, quiet: true });
  });
}

async function start() {
  try {
    info = await api('/v1/console');
  } catch (err) {
    return showLogin(err.status === 401 ? undefined : err.message);
  }
  if (!csrf.get()) return showLogin('This browser has no CSRF token for the session: log in once more.');
  nav.hidden = false;
  mount(
    document.getElementById('who'),
    h('span', {}, info.operator),
    ' ',
    h('button', {
      type: 'button',
      class: 'link',
      onclick: async () => {
        await api('/v1/session', { method: 'DELETE' }).catch(() => undefined);
        csrf.clear();
        showLogin('Logged out.');
      },
    }, 'Log out'),
  );
  connect();
  await render();
}

window.addEventListener('hashchange', () => render());
window.addEventListener('keel:logged-out', (e) => {
  csrf.clear();
  showLogin(`Please log in again (${e.detail}).`);
});
// a view that skipped a refresh while the operator typed asks for it here
window.addEventListener('keel:idle', () => {
  if (stale) {
    stale = false;
    render({ focus: false, quiet: true });
  }
});
window.addEventListener('keel:toast', (e) => toast(e.detail.text, e.detail.kind));
start();
