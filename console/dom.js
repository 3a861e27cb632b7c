// Tiny DOM and HTTP helpers for the console (no framework, no build step).

/** h('button', { class: 'x', onclick: fn }, 'text', child) → an element; strings become text nodes (never HTML). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'value') el.value = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces the children of `el`. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const usd = (n) => (typeof n === 'number' ? `$${n < 0.01 && n > 0 ? n.toFixed(6) : n.toFixed(4)}` : '');
export const ms = (n) => (typeof n !== 'number' ? '' : n >= 10_000 ? `${(n / 1000).toFixed(1)} s` : `${Math.round(n)} ms`);
export const when = (iso) => (iso ? iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '');
export function ago(iso) {
  if (!iso) return '';
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 60 ? `${s}s ago` : s < 3600 ? `${Math.floor(s / 60)}m ago` : s < 86_400 ? `${Math.floor(s / 3600)}h ago` : `${Math.floor(s / 86_400)}d ago`;
}

/** A table: head is a list of column names, rows a list of lists of cells (strings or nodes). */
export function table(caption, head, rows, attrs = {}) {
  return h('div', { class: 'table-wrap' }, h('table', attrs, caption ? h('caption', {}, caption) : null, h('thead', {}, h('tr', {}, head.map((c) => h('th', { scope: 'col' }, c)))), h('tbody', {}, rows.map((r) => h('tr', {}, r.map((c) => h('td', {}, c)))))));
}

export const badge = (text, kind = text) => h('span', { class: `badge b-${String(kind).replace(/[^a-z_]/gi, '')}` }, text);

/** The CSRF token of the session (POST /v1/session returns it; useless without the HttpOnly cookie). */
export const csrf = {
  get: () => localStorage.getItem('keel.csrf') ?? '',
  set: (t) => localStorage.setItem('keel.csrf', t),
  clear: () => localStorage.removeItem('keel.csrf'),
};

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message ?? `HTTP ${status}`);
    this.status = status;
    this.code = body?.error ?? 'HTTP';
    this.body = body;
  }
}

/** JSON over fetch with the session cookie; unsafe methods carry the CSRF header. */
export async function api(path, { method = 'GET', body } = {}) {
  const headers = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET') headers['X-CSRF-Token'] = csrf.get();
  const r = await fetch(path, { method, headers, credentials: 'same-origin', body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  const json = text ? JSON.parse(text) : null;
  if (!r.ok) {
    const err = new ApiError(r.status, json);
    if (r.status === 401 || (r.status === 403 && err.code === 'AUTH_CSRF')) window.dispatchEvent(new CustomEvent('keel:logged-out', { detail: err.message }));
    throw err;
  }
  return json;
}

let toastTimer;
export function toast(text, kind = 'ok') {
  const el = document.getElementById('toast');
  el.textContent = text;
  el.className = `toast show t-${kind}`;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (el.className = 'toast'), 5000);
}
