/**
 * The operator's commands of the launch feature (agents/launch/): products, their launches,
 * content assets (kept as versions) and the calendar.
 *
 * ```sh
 * keel product create --name "Focus Timer" --pitch "..." --audience "..." --price 29 --doc notes.md
 * keel launch start focus-timer --at +2h --budget 5
 * keel launches
 * keel product show focus-timer
 * keel content diff focus-timer-page 1 2
 * ```
 *
 * Every write is the operator's (`{ kind: 'human', id: KEEL_OPERATOR }`), appended with the
 * expected version and retried on a conflict with a fresh read.
 */
import { readFileSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import type { Command } from 'commander';
import { createTwoFilesPatch, diffLines } from 'diff';
import { z } from 'zod';
import { KeelError } from '../../config/index.ts';
import type { Actor, Entity, StateStore } from '../../shared-state/index.ts';
import type { RunState } from '../../workflows/index.ts';
import {
  CALENDAR_ITEM, CONTENT_ASSET, LAUNCH_WORKFLOW, PRODUCT, TASK,
  type AssetState, type CalendarState, type ProductException, type ProductState, type TaskState,
} from '../../agents/index.ts';
import { openCli, print, table } from '../context.ts';
import { CliError } from '../errors.ts';
import { intArg } from '../args.ts';

// ---- errors --------------------------------------------------------------------------------------

export type LaunchCliErrorCode =
  /** no product with that id (`keel products` lists them) */
  | 'PRODUCT_NOT_FOUND'
  /** `keel product create --id ID`: a product with that id exists */
  | 'PRODUCT_EXISTS'
  /** `keel launch start`: the product's launch run is still running (or compensating) */
  | 'LAUNCH_IN_PROGRESS'
  /** no content asset with that id */
  | 'CONTENT_NOT_FOUND'
  /** the asset has no such version (the message names those it has) */
  | 'CONTENT_VERSION_NOT_FOUND';

/** An error of the launch commands: printed by `keel` in the one error format, `details` with `--json`. */
export class LaunchCliError extends KeelError {
  declare readonly code: LaunchCliErrorCode;
  readonly details: Record<string, unknown> | undefined;
  constructor(code: LaunchCliErrorCode, message: string, opts: { cause?: unknown; details?: Record<string, unknown> } = {}) {
    super(code, message, { cause: opts.cause, retryable: false });
    this.name = 'LaunchCliError';
    this.details = opts.details;
  }
}

const bad = (option: string, message: string, value?: unknown) => new CliError('CLI_BAD_ARGUMENT', message, { details: { option, ...(value !== undefined ? { value } : {}) } });
const codeOf = (err: unknown) => (err as { code?: string }).code;

// ---- option values ---------------------------------------------------------------------------------

/** Documents are at most this many bytes (the product schema keeps 200 000 characters per document). */
export const MAX_DOC_BYTES = 200_000;
const MAX_ID = 48;

/** A file an option names, refused with the option's name when it is missing or too large. */
function readOptionFile(option: string, path: string, maxBytes: number): string {
  let size: number;
  try {
    const st = statSync(path);
    if (!st.isFile()) throw bad(option, `${option}: '${path}' is not a file`, path);
    size = st.size;
  } catch (err) {
    if (err instanceof CliError) throw err;
    throw new CliError('CLI_BAD_ARGUMENT', `${option}: cannot read '${path}' (${codeOf(err) === 'ENOENT' ? 'no such file' : (err as Error).message})`, { cause: err, details: { option, value: path } });
  }
  if (size > maxBytes) throw new CliError('CLI_BAD_ARGUMENT', `${option}: '${path}' is ${(size / 1000).toFixed(1)} kB; at most ${maxBytes / 1000} kB are taken (split it, or keep the part the researcher needs)`, { details: { option, value: path, bytes: size, maxBytes } });
  return readFileSync(path, 'utf8');
}

/** `TEXT` or `@FILE`. */
function textOrFile(option: string, v: string, maxBytes = 100_000): string {
  return v.startsWith('@') ? readOptionFile(option, v.slice(1), maxBytes) : v;
}

const email = z.email();

/** Email addresses, lowercased and deduplicated, refused by the option's name when one is not an address. */
export function parseEmails(option: string, values: string[]): string[] {
  const list = values.map((v) => v.trim()).filter((v) => v !== '' && !v.startsWith('#'));
  const invalid = list.filter((v) => !email.safeParse(v).success);
  if (invalid.length) throw new CliError('CLI_BAD_ARGUMENT', `${option}: not an email address: ${invalid.map((v) => `'${v}'`).join(', ')}`, { details: { option, invalid } });
  return [...new Set(list.map((v) => v.toLowerCase()))];
}

/** `--subscribers a@x.com,b@y.com` or `@FILE` (one address a line). */
function subscribersOption(v: string): string[] {
  const text = textOrFile('--subscribers', v, 2_000_000);
  return parseEmails('--subscribers', v.startsWith('@') ? text.split(/\r?\n/) : text.split(/[,;\s]+/));
}

function parsePrice(amount: string, currency: string): { amount: number; currency: string } {
  const n = Number(amount);
  if (amount.trim() === '' || !Number.isFinite(n) || n < 0) throw bad('--price', `--price takes an amount >= 0 (29, 19.99); got '${amount}'`, amount);
  if (!/^[A-Za-z]{3}$/.test(currency)) throw bad('--currency', `--currency takes a three-letter ISO 4217 code (USD, EUR); got '${currency}'`, currency);
  return { amount: n, currency: currency.toUpperCase() };
}

/** `Focus Timer Pro!` → `focus-timer-pro` (`[a-z0-9-]`, at most 48 characters). */
export function slugOf(name: string, maxLength = MAX_ID): string {
  const s = name
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, maxLength)
    .replace(/-+$/, '');
  return s || 'product';
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/** `30s`, `+10m`, `2h`, `1.5d`, `500ms` (or a bare number of milliseconds) → milliseconds. */
export function parseDuration(option: string, text: string): number {
  const t = text.trim();
  if (/^\d+$/.test(t)) return Number(t);
  const m = /^\+?(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)$/i.exec(t);
  if (m) return Math.round(Number(m[1]) * UNIT_MS[m[2]!.toLowerCase()]!);
  throw bad(option, `${option} takes a duration: 30s, 10m, 2h, 3d (units ms s m h d w); got '${text}'`, text);
}

/** `--at`: `now`, `+30s` / `+10m` / `+2h` / `+1d` from now, or ISO 8601 with a zone → epoch ms. */
export function parseAt(text: string, now = Date.now()): number {
  const t = text.trim();
  if (t.toLowerCase() === 'now') return now;
  if (t.startsWith('+')) return now + parseDuration('--at', t);
  if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/i.test(t)) {
    const ms = Date.parse(t);
    if (Number.isFinite(ms)) return ms;
  }
  throw bad('--at', `--at takes now, a time from now (+30s, +10m, +2h, +1d) or ISO 8601 with a zone (2026-12-01T09:00:00+01:00); got '${text}'`, text);
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

// ---- reading ---------------------------------------------------------------------------------------

const actorOf = (operator: string): Actor => ({ kind: 'human', id: operator });
const ACTIVE_RUN = new Set<RunState['status']>(['running', 'compensating']);
const round = (n: number) => Math.round(n * 1e9) / 1e9;

async function getProduct(store: StateStore, id: string): Promise<Entity<ProductState>> {
  const p = await store.get<ProductState>(PRODUCT, id).catch((err: unknown) => (codeOf(err) === 'STATE_INVALID_ID' ? null : Promise.reject(err)));
  if (!p || p.deleted) throw new LaunchCliError('PRODUCT_NOT_FOUND', `no product '${id}' (see \`keel products\`)`, { details: { productId: id } });
  return p;
}

async function getAsset(store: StateStore, id: string): Promise<Entity<AssetState>> {
  const a = await store.get<AssetState>(CONTENT_ASSET, id).catch((err: unknown) => (codeOf(err) === 'STATE_INVALID_ID' ? null : Promise.reject(err)));
  if (!a || a.deleted) throw new LaunchCliError('CONTENT_NOT_FOUND', `no content asset '${id}' (\`keel product show PRODUCT\` lists a product's assets)`, { details: { assetId: id } });
  return a;
}

async function all<S>(store: StateStore, type: string, filter: Record<string, string> = {}, sort: Record<string, 'asc' | 'desc'> = { createdAt: 'asc' }): Promise<Entity<S>[]> {
  const out: Entity<S>[] = [];
  for (let offset: number | null = 0; offset !== null; ) {
    const page: Awaited<ReturnType<StateStore['query']>> = await store.query<S>(type, { filter, sort, limit: 1000, offset });
    out.push(...(page.items as Entity<S>[]));
    offset = page.nextOffset;
  }
  return out;
}

const isOpen = (t: TaskState) => t.status !== 'done' && t.status !== 'cancelled';
const isOverdue = (t: TaskState, now: number) => isOpen(t) && t.dueAt !== undefined && Date.parse(t.dueAt) < now;
const blockedOf = (b: ProductException | undefined) => (b ? { kind: b.kind, reason: b.reason, at: b.at } : undefined);

async function runOf(store: StateStore, runId: string): Promise<RunState | null> {
  return (await store.get<RunState>('workflow_run', runId).catch(() => null))?.state ?? null;
}

async function costOf(store: StateStore, runId: string | undefined) {
  // records: every ledger record of the run (a task's compute and its model calls); modelCalls: those of a model
  const out = { usd: 0, records: 0, modelCalls: 0, tokensIn: 0, tokensOut: 0, byAgent: {} as Record<string, number> };
  if (!runId) return out;
  for (const r of (await store.costs({ runId, records: 1000 })).records) {
    out.usd += r.costUsd;
    out.records++;
    if (r.model) out.modelCalls++;
    out.tokensIn += r.tokensIn;
    out.tokensOut += r.tokensOut;
    const agent = r.agent ?? '(none)';
    out.byAgent[agent] = round((out.byAgent[agent] ?? 0) + r.costUsd);
  }
  out.usd = round(out.usd);
  return out;
}

/** The product events `keel product show` lists as its history. */
const HISTORY_TYPES = new Set(['created', 'lifecycle_changed', 'blocked', 'launch_started', 'published', 'unpublished', 'follow_up_received']);

/** Everything `keel product show` prints (`page` is its JSON). */
export async function productPage(store: StateStore, id: string, now = Date.now()) {
  const p = await getProduct(store, id);
  const s = p.state;
  const history = (await store.history(PRODUCT, id))
    .filter((h) => HISTORY_TYPES.has(h.type))
    .map((h) => {
      const d = (h.data ?? {}) as { to?: string; reason?: string };
      return {
        version: h.version, time: h.time, type: h.type,
        ...(h.type === 'lifecycle_changed' && d.to ? { to: d.to } : {}),
        ...(typeof d.reason === 'string' ? { reason: d.reason } : {}),
        actor: `${h.meta.actor.kind}:${h.meta.actor.id}`,
      };
    });
  const run = s.launch ? await runOf(store, s.launch.runId) : null;
  const tasks = (await all<TaskState>(store, TASK, { productId: id })).map((e) => ({
    id: e.entityId, title: e.state.title, owner: e.state.owner, status: e.state.status,
    ...(e.state.dueAt ? { dueAt: e.state.dueAt } : {}), overdue: isOverdue(e.state, now), ...(e.state.step ? { step: e.state.step } : {}),
  }));
  tasks.sort((a, b) => (a.dueAt ?? '\uffff').localeCompare(b.dueAt ?? '\uffff') || a.id.localeCompare(b.id));
  const assets = (await all<AssetState>(store, CONTENT_ASSET, { productId: id })).map((e) => ({
    id: e.entityId, slot: e.state.slot, kind: e.state.kind, title: e.state.title, status: e.state.status, current: e.state.current,
    ...(e.state.approvedVersion !== undefined ? { approvedVersion: e.state.approvedVersion } : {}),
    versions: e.state.versions.map((v) => ({ version: v.version, by: v.by, at: v.at, ...(v.tier !== undefined ? { tier: v.tier } : {}), ...(v.note !== undefined ? { note: v.note } : {}) })),
  }));
  const calendar = (await all<CalendarState>(store, CALENDAR_ITEM, { productId: id }, { startsAt: 'asc' })).map((e) => ({
    id: e.entityId, title: e.state.title, channel: e.state.channel, startsAt: e.state.startsAt, status: e.state.status, ...(e.state.assetId ? { assetId: e.state.assetId } : {}),
  }));
  calendar.sort((a, b) => Date.parse(a.startsAt) - Date.parse(b.startsAt) || a.id.localeCompare(b.id));
  const page = {
    id, name: s.name, pitch: s.pitch, audience: s.audience,
    ...(s.description !== undefined ? { description: s.description } : {}),
    ...(s.price ? { price: s.price } : {}),
    lifecycle: s.lifecycle,
    ...(s.blocked ? { blocked: s.blocked } : {}),
    exceptions: s.exceptions ?? [],
    history,
    ...(s.launch
      ? { launch: { runId: s.launch.runId, at: s.launch.at, ...(s.launch.budgetUsd !== undefined ? { budgetUsd: s.launch.budgetUsd } : {}), startedAt: s.launch.startedAt, runStatus: run?.status ?? 'unknown', ...(run?.error ? { runError: run.error } : {}) } }
      : {}),
    ...(s.research ? { research: { summary: s.research.summary, points: s.research.points, sources: s.research.sources, tier: s.research.tier, ...(s.research.note ? { note: s.research.note } : {}) } } : {}),
    ...(s.plan ? { plan: s.plan } : {}),
    tasks, assets, calendar,
    publications: s.publications ?? [],
    followUps: { count: (s.followUps ?? []).length, tickets: (s.followUps ?? []).map((f) => ({ ticketId: f.ticketId, from: f.from, ...(f.subject !== undefined ? { subject: f.subject } : {}), at: f.at })) },
    cost: await costOf(store, s.launch?.runId),
  };
  return { page, product: s };
}

/** A launch-in-progress refusal when the product has a run of `product-launch` still going. */
async function activeLaunchOf(store: StateStore, productId: string, p: ProductState): Promise<string | undefined> {
  if (p.launch) {
    const run = await runOf(store, p.launch.runId);
    if (run && ACTIVE_RUN.has(run.status)) return p.launch.runId;
  }
  // a run started a moment ago whose kick-off has not marked the product yet
  const runs = await store.query<RunState>('workflow_run', { filter: { workflow: LAUNCH_WORKFLOW, 'input.productId': productId }, limit: 1000 });
  return runs.items.find((r) => ACTIVE_RUN.has(r.state.status))?.entityId;
}

/** One row of `keel launches` (null: the product was never launched). */
async function launchRow(store: StateStore, e: Entity<ProductState>, now: number) {
  const s = e.state;
  if (!s.launch) return null;
  const id = e.entityId;
  const run = await runOf(store, s.launch.runId);
  const tasks = await all<TaskState>(store, TASK, { productId: id });
  const assets = await all<AssetState>(store, CONTENT_ASSET, { productId: id });
  const next = (await all<CalendarState>(store, CALENDAR_ITEM, { productId: id }, { startsAt: 'asc' }))
    .map((x) => x.state)
    .filter((x) => x.status === 'planned' || x.status === 'scheduled')
    .sort((a, b) => Date.parse(a.startsAt) - Date.parse(b.startsAt))[0];
  const count = (st: AssetState['status']) => assets.filter((a) => a.state.status === st).length;
  return {
    productId: id, name: s.name, lifecycle: s.lifecycle, ...(s.blocked ? { blocked: blockedOf(s.blocked) } : {}),
    runId: s.launch.runId, runStatus: run?.status ?? 'unknown', at: s.launch.at,
    ...(next ? { next: { title: next.title, startsAt: next.startsAt, channel: next.channel } } : {}),
    tasks: { open: tasks.filter((t) => isOpen(t.state)).length, overdue: tasks.filter((t) => isOverdue(t.state, now)).length },
    assets: { review: count('review'), approved: count('approved'), published: count('published') },
    followUps: (s.followUps ?? []).length,
    costUsd: (await costOf(store, s.launch.runId)).usd,
  };
}

// ---- writing ---------------------------------------------------------------------------------------

const FIELD_OPTION: Record<string, string> = { name: '--name', pitch: '--pitch', audience: '--audience', description: '--description', price: '--price', notes: '--notes', documents: '--doc', subscribers: '--subscribers' };

/** A state-store refusal of the product → which option to fix. */
function productError(err: unknown, id: string): unknown {
  const e = err as { code?: string; message?: string; issues?: { path: string; message: string }[] };
  if (e.code === 'STATE_INVALID_ID') return new CliError('CLI_BAD_ARGUMENT', `--id: '${id}' is not a valid id: use 1-128 letters, digits, '_' or '-'`, { cause: err, details: { option: '--id', value: id } });
  if (e.code && /^STATE_(INVALID|SCHEMA_INVALID)/.test(e.code)) {
    const issues = (e.issues ?? []).map((i) => ({ option: i.path.startsWith('price.currency') ? '--currency' : (FIELD_OPTION[i.path.split('.')[0] ?? ''] ?? i.path), path: i.path, message: i.message }));
    const text = issues.length ? issues.map((i) => `${i.option}: ${i.message}${i.option.startsWith('--') && i.path.includes('.') ? ` (${i.path})` : ''}`).join('; ') : (e.message ?? 'invalid');
    return new CliError('CLI_BAD_ARGUMENT', `the product was refused: ${text}`, { cause: err, details: { options: [...new Set(issues.map((i) => i.option))], issues } });
  }
  return err;
}

/** Appends `fn(current)` to the product with the expected version, retrying on a conflict. */
async function changeProduct(store: StateStore, id: string, operator: string, fn: (p: Entity<ProductState>) => Record<string, unknown> | undefined): Promise<Entity<ProductState>> {
  for (let attempt = 0; ; attempt++) {
    const p = await getProduct(store, id);
    const patch = fn(p);
    if (!patch) return p;
    try {
      return (await store.append<ProductState>(PRODUCT, id, p.version, [{ type: 'updated', data: patch }], { actor: actorOf(operator) })).entity;
    } catch (err) {
      if (codeOf(err) !== 'STATE_VERSION_CONFLICT' || attempt >= 20) throw productError(err, id);
    }
  }
}

// ---- human output ----------------------------------------------------------------------------------

const usd = (n: number) => `$${n.toFixed(6)}`;
const short = (s: string, n = 60) => (s.length > n ? `${s.slice(0, n - 1)}…` : s);
const lifecycleLine = (lifecycle: string, b: { kind: string; reason: string; at: string } | undefined) => (b ? `${lifecycle} (${b.kind} since ${b.at}): ${b.reason}` : lifecycle);

type ProductPage = Awaited<ReturnType<typeof productPage>>['page'];

function printProductPage(d: ProductPage, s: ProductState): void {
  console.log(`${d.id}  ${d.name}${d.price ? `  ${d.price.amount} ${d.price.currency}` : ''}`);
  console.log(`lifecycle: ${lifecycleLine(d.lifecycle, d.blocked)}`);
  console.log(`pitch: ${d.pitch}\naudience: ${d.audience}${d.description ? `\n${d.description}` : ''}`);
  console.log(`subscribers: ${(s.subscribers ?? []).length}  documents: ${(s.documents ?? []).map((x) => x.name).join(', ') || 'none'}`);
  if (d.launch) console.log(`launch: run ${d.launch.runId} ${d.launch.runStatus}${d.launch.runError ? ` (${d.launch.runError})` : ''}  at ${d.launch.at}  started ${d.launch.startedAt}${d.launch.budgetUsd !== undefined ? `  budget ${usd(d.launch.budgetUsd)}` : ''}`);
  else console.log('launch: not started (keel launch start ' + d.id + ')');
  if (d.research) console.log(`\nresearch (tier ${d.research.tier}): ${short(d.research.summary.replace(/\s+/g, ' '), 300)}${d.research.note ? `\n  note: ${d.research.note}` : ''}`);
  if (d.plan) console.log(`plan: ${d.plan.channels.map((c) => c.channel).join(', ')}`);
  console.log('\nhistory:');
  table(['V', 'TIME', 'EVENT', 'TO', 'BY', 'REASON'], d.history.map((h) => [String(h.version), h.time, h.type, h.to ?? '', h.actor, short(h.reason ?? '', 80)]));
  console.log(`\ntasks:${d.tasks.length ? '' : ' none'}`);
  if (d.tasks.length) table(['TASK', 'OWNER', 'STATUS', 'DUE', '', 'TITLE'], d.tasks.map((t) => [t.step ?? t.id, t.owner, t.status, t.dueAt ?? '', t.overdue ? 'OVERDUE' : '', short(t.title)]));
  console.log(`\nassets:${d.assets.length ? '' : ' none'}`);
  if (d.assets.length) table(['ASSET', 'KIND', 'STATUS', 'VERSION', 'APPROVED', 'TITLE'], d.assets.map((a) => [a.id, a.kind, a.status, `${a.current} of ${a.versions.length}`, a.approvedVersion !== undefined ? `v${a.approvedVersion}` : '', short(a.title)]));
  console.log(`\ncalendar:${d.calendar.length ? '' : ' none'}`);
  if (d.calendar.length) table(['STARTS', 'CHANNEL', 'STATUS', 'TITLE', 'ASSET'], d.calendar.map((c) => [c.startsAt, c.channel, c.status, short(c.title), c.assetId ?? '']));
  if (d.publications.length) console.log(`\npublished: ${d.publications.map((p) => `${p.what}${p.count !== undefined ? ` (${p.count})` : ''} at ${p.at}`).join('; ')}`);
  console.log(`\nfollow-ups: ${d.followUps.count}`);
  for (const f of d.followUps.tickets) console.log(`  ${f.at} ${f.ticketId} from ${f.from}${f.subject ? ` "${f.subject}"` : ''}`);
  console.log(`cost: ${usd(d.cost.usd)} over ${d.cost.records} record(s), ${d.cost.tokensIn}/${d.cost.tokensOut} tokens${Object.keys(d.cost.byAgent).length ? ` (${Object.entries(d.cost.byAgent).map(([a, v]) => `${a} ${usd(v)}`).join(', ')})` : ''}`);
}

// ---- commands --------------------------------------------------------------------------------------

interface CreateOptions {
  name: string; pitch: string; audience: string; price?: string; currency: string; description?: string;
  notes?: string; doc?: string[]; subscribers?: string; id?: string; json?: boolean;
}

export function registerLaunch(program: Command): void {
  const product = program.command('product').description('Products to launch: create one, add subscribers, show its launch page.');

  product
    .command('create')
    .description('Create a product (lifecycle idea); its id is --id, else a slug of the name (-2, -3 … when taken).')
    .requiredOption('--name <name>', 'the product\'s name')
    .requiredOption('--pitch <text>', 'one or two sentences: what it does for whom')
    .requiredOption('--audience <text>', 'who it is for')
    .option('--price <amount>', 'price, a number >= 0')
    .option('--currency <code>', 'currency of the price (ISO 4217)', 'USD')
    .option('--description <text>', 'a longer description')
    .option('--notes <text|@file>', 'the operator\'s notes the researcher reads (text, or @FILE)')
    .option('--doc <file>', `a document the researcher reads (repeatable; at most ${MAX_DOC_BYTES / 1000} kB each)`, collect)
    .option('--subscribers <list|@file>', 'who receives the launch emails: a,b,c or @FILE (one address a line)')
    .option('--id <id>', 'the product id (letters, digits, _ and -); refused when taken')
    .option('--json', 'print JSON: { id, product }')
    .action(async (o: CreateOptions) => {
      // every option is checked before the store is opened
      const data: Record<string, unknown> = { name: o.name, pitch: o.pitch, audience: o.audience };
      if (o.description !== undefined) data.description = o.description;
      if (o.price !== undefined) data.price = parsePrice(o.price, o.currency);
      else if (o.currency !== 'USD') parsePrice('0', o.currency);
      if (o.notes !== undefined) data.notes = textOrFile('--notes', o.notes);
      if (o.doc?.length) data.documents = o.doc.map((f) => ({ name: basename(f), text: readOptionFile('--doc', f, MAX_DOC_BYTES) }));
      if (o.subscribers !== undefined) data.subscribers = subscribersOption(o.subscribers);
      const c = await openCli();
      try {
        const meta = { actor: actorOf(c.cfg.operator) };
        const create = async (id: string) => {
          try {
            return (await c.store.append<ProductState>(PRODUCT, id, 0, [{ type: 'created', data }], meta)).entity;
          } catch (err) {
            if (codeOf(err) === 'STATE_VERSION_CONFLICT') return null;
            throw productError(err, id);
          }
        };
        const taken = async (id: string) => (await c.store.get(PRODUCT, id).catch((err: unknown) => Promise.reject(productError(err, id)))) !== null;
        let made: Entity<ProductState> | null = null;
        if (o.id !== undefined) {
          if (!(await taken(o.id))) made = await create(o.id);
          if (!made) throw new LaunchCliError('PRODUCT_EXISTS', `a product '${o.id}' exists already (keel product show ${o.id}); choose another --id, or leave it out for a slug of the name`, { details: { productId: o.id } });
        } else {
          const base = slugOf(o.name);
          for (let n = 1; !made; n++) {
            const id = n === 1 ? base : `${base.slice(0, MAX_ID - String(n).length - 1).replace(/-+$/, '')}-${n}`;
            if (!(await taken(id))) made = await create(id);
          }
        }
        const { entityId: id, state } = made;
        print(o.json, { id, product: state }, () => {
          console.log(`created product ${id} (${state.name}), lifecycle ${state.lifecycle}`);
          console.log(`${state.subscribers.length} subscriber(s), ${state.documents.length} document(s)${state.price ? `, price ${state.price.amount} ${state.price.currency}` : ''}`);
          console.log(`next: keel launch start ${id} --at +1d`);
        });
      } finally {
        await c.close();
      }
    });

  product
    .command('subscribe')
    .description('Add subscribers (who receive the launch emails) to a product; duplicates are ignored.')
    .argument('<id>', 'the product id')
    .argument('<email...>', 'email addresses')
    .option('--json', 'print JSON: { id, subscribers, added }')
    .action(async (id: string, emails: string[], o: { json?: boolean }) => {
      const list = parseEmails('EMAIL', emails.flatMap((e) => e.split(',')));
      const c = await openCli();
      try {
        let added = 0;
        const p = await changeProduct(c.store, id, c.cfg.operator, (cur) => {
          const have = new Set(cur.state.subscribers ?? []);
          const fresh = list.filter((e) => !have.has(e));
          added = fresh.length;
          return fresh.length ? { subscribers: [...(cur.state.subscribers ?? []), ...fresh] } : undefined;
        });
        print(o.json, { id, subscribers: p.state.subscribers, added }, () => console.log(`${id}: ${added} added, ${p.state.subscribers.length} subscriber(s)`));
      } finally {
        await c.close();
      }
    });

  product
    .command('show')
    .description('A product\'s page: lifecycle (and why blocked), history, launch run, tasks (overdue marked), assets, calendar, follow-ups, cost.')
    .argument('<id>', 'the product id')
    .option('--json', 'print JSON: { id, name, lifecycle, blocked?, history, launch?, tasks, assets, calendar, followUps, cost, … }')
    .action(async (id: string, o: { json?: boolean }) => {
      const c = await openCli();
      try {
        const { page, product: state } = await productPage(c.store, id);
        print(o.json, page, () => printProductPage(page, state));
      } finally {
        await c.close();
      }
    });

  program
    .command('products')
    .description('List products with their lifecycle (blocked ones with the reason).')
    .option('--json', 'print JSON: { products: [{ id, name, lifecycle, blocked?, subscribers, followUps, launchRunId? }] }')
    .action(async (o: { json?: boolean }) => {
      const c = await openCli();
      try {
        const products = (await all<ProductState>(c.store, PRODUCT)).map((e) => ({
          id: e.entityId, name: e.state.name, lifecycle: e.state.lifecycle,
          ...(e.state.blocked ? { blocked: blockedOf(e.state.blocked) } : {}),
          subscribers: (e.state.subscribers ?? []).length, followUps: (e.state.followUps ?? []).length,
          ...(e.state.launch ? { launchRunId: e.state.launch.runId } : {}),
        }));
        print(o.json, { products }, () =>
          products.length === 0
            ? console.log('no products (keel product create --name … --pitch … --audience …)')
            : table(['PRODUCT', 'NAME', 'LIFECYCLE', 'SUBSCRIBERS', 'FOLLOW-UPS', 'LAUNCH RUN'], products.map((p) => [p.id, short(p.name, 40), short(lifecycleLine(p.lifecycle, p.blocked), 80), String(p.subscribers), String(p.followUps), p.launchRunId ?? ''])),
        );
      } finally {
        await c.close();
      }
    });

  const launch = program.command('launch').description('Launch a product: the product-launch workflow (research → drafts → review → schedule → publish → follow-up).');

  launch
    .command('start')
    .description('Start a product\'s launch run; refused while its previous launch run is still running.')
    .argument('<product>', 'the product id')
    .option('--at <time>', 'when the launch goes out: now, +30s / +10m / +2h / +1d, or ISO 8601 with a zone', 'now')
    .option('--budget <usd>', 'USD the launch run may spend on models')
    .option('--follow-up-after <duration>', 'how long after the launch the follow-up email goes out (30s, 10m, 2h, 3d; default KEEL_LAUNCH_FOLLOW_UP_MS)')
    .option('--json', 'print JSON: { runId, productId, at, followUpAt, created, traceId }')
    .action(async (productId: string, o: { at: string; budget?: string; followUpAfter?: string; json?: boolean }) => {
      const at = parseAt(o.at);
      const budgetUsd = o.budget === undefined ? undefined : Number(o.budget);
      if (budgetUsd !== undefined && (o.budget!.trim() === '' || !Number.isFinite(budgetUsd) || budgetUsd <= 0)) throw bad('--budget', `--budget takes a number of dollars > 0; got '${o.budget}'`, o.budget);
      const followUpMs = o.followUpAfter === undefined ? undefined : parseDuration('--follow-up-after', o.followUpAfter);
      // the refusals need only the store: they come before connecting to the bus
      const s = await openCli();
      let follow: number;
      try {
        const p = await getProduct(s.store, productId);
        const active = await activeLaunchOf(s.store, productId, p.state);
        if (active) throw new LaunchCliError('LAUNCH_IN_PROGRESS', `product '${productId}' is being launched by run ${active} (lifecycle ${p.state.lifecycle}); see keel product show ${productId}, or keel run cancel ${active}`, { details: { productId, runId: active } });
        follow = followUpMs ?? s.cfg.launch.followUpMs;
      } finally {
        await s.close();
      }
      const c = await openCli({ bus: true });
      try {
        const input = { productId, at: new Date(at).toISOString(), followUpMs: follow, ...(budgetUsd !== undefined ? { budgetUsd } : {}) };
        const r = await c.workflows!.start(LAUNCH_WORKFLOW, input, { budgetUsd });
        const out = { runId: r.runId, productId, at: input.at, followUpAt: new Date(at + follow).toISOString(), created: r.created, traceId: r.traceId };
        print(o.json, out, () => console.log(`launch of ${productId} started: run ${r.runId} (trace ${r.traceId})\ngoes out ${out.at}, follow-up ${out.followUpAt}\nwatch it: keel product show ${productId}`));
      } finally {
        await c.close();
      }
    });

  program
    .command('launches')
    .description('Products with a launch: run status, next calendar item, open and overdue tasks, assets, follow-ups, cost.')
    .option('--json', 'print JSON: { launches: [{ productId, name, lifecycle, blocked?, runId, runStatus, at, next?, tasks, assets, followUps, costUsd }] }')
    .action(async (o: { json?: boolean }) => {
      const c = await openCli();
      try {
        const now = Date.now();
        const launches: NonNullable<Awaited<ReturnType<typeof launchRow>>>[] = [];
        for (const e of await all<ProductState>(c.store, PRODUCT)) {
          const row = await launchRow(c.store, e, now);
          if (row) launches.push(row);
        }
        print(o.json, { launches }, () => {
          if (launches.length === 0) return console.log('no launches (keel launch start PRODUCT)');
          table(
            ['PRODUCT', 'LIFECYCLE', 'RUN', 'STATUS', 'AT', 'NEXT', 'TASKS OPEN/OVERDUE', 'ASSETS REV/APPR/PUB', 'FOLLOW-UPS', 'COST', 'BLOCKED'],
            launches.map((l) => [
              l.productId, l.lifecycle, l.runId, l.runStatus, l.at, l.next ? `${l.next.startsAt} ${l.next.channel}` : '',
              `${l.tasks.open}/${l.tasks.overdue}`, `${l.assets.review}/${l.assets.approved}/${l.assets.published}`, String(l.followUps), usd(l.costUsd),
              l.blocked ? short(`${l.blocked.kind}: ${l.blocked.reason}`, 80) : '',
            ]),
          );
        });
      } finally {
        await c.close();
      }
    });

  const content = program.command('content').description('Content assets of a launch (landing page, emails, posts), kept as versions.');

  content
    .command('show')
    .description('An asset with one version\'s text (default the current one).')
    .argument('<id>', 'the asset id (keel product show PRODUCT lists them)')
    .option('--version <n>', 'which version', intArg('--version', 1))
    .option('--json', 'print JSON: { id, productId, slot, kind, title, status, current, approvedVersion?, version: { version, title, body, by, at, … }, versions }')
    .action(async (id: string, o: { version?: number; json?: boolean }) => {
      const c = await openCli();
      try {
        const a = (await getAsset(c.store, id)).state;
        const v = versionOf(id, a, o.version ?? a.current);
        const out = {
          id, productId: a.productId, slot: a.slot, kind: a.kind, title: a.title, status: a.status, current: a.current,
          ...(a.approvedVersion !== undefined ? { approvedVersion: a.approvedVersion } : {}),
          version: { version: v.version, title: v.title, body: v.body, by: v.by, at: v.at, ...(v.tier !== undefined ? { tier: v.tier } : {}), ...(v.note !== undefined ? { note: v.note } : {}), ...(v.review ? { review: v.review } : {}) },
          versions: a.versions.map((x) => ({ version: x.version, by: x.by, at: x.at })),
        };
        print(o.json, out, () => {
          console.log(`${id}  ${a.kind} (${a.slot}) of ${a.productId}  ${a.status}`);
          console.log(`version ${v.version} of ${a.versions.length}${v.version === a.current ? ' (current)' : ''}${a.approvedVersion === v.version ? ' (approved)' : ''}  by ${v.by} at ${v.at}${v.tier !== undefined ? `  tier ${v.tier}` : ''}${v.note ? `  — ${v.note}` : ''}`);
          if (v.review?.length) console.log(`self-review: ${v.review.join('; ')}`);
          console.log(`\n${v.title}\n\n${v.body}`);
        });
      } finally {
        await c.close();
      }
    });

  content
    .command('diff')
    .description('A unified diff between two versions of an asset\'s text.')
    .argument('<id>', 'the asset id')
    .argument('<a>', 'the older version', intArg('A', 1))
    .argument('<b>', 'the newer version', intArg('B', 1))
    .option('--json', 'print JSON: { id, from, to, patch, added, removed }')
    .action(async (id: string, from: number, to: number, o: { json?: boolean }) => {
      const c = await openCli();
      try {
        const a = (await getAsset(c.store, id)).state;
        const va = versionOf(id, a, from);
        const vb = versionOf(id, a, to);
        const patch = createTwoFilesPatch(`${id}@v${from}`, `${id}@v${to}`, withNewline(va.body), withNewline(vb.body), va.title, vb.title);
        let added = 0;
        let removed = 0;
        for (const part of diffLines(withNewline(va.body), withNewline(vb.body))) {
          if (part.added) added += part.count ?? 0;
          else if (part.removed) removed += part.count ?? 0;
        }
        print(o.json, { id, from, to, patch, added, removed }, () => process.stdout.write(`${patch}${patch.endsWith('\n') ? '' : '\n'}${added} line(s) added, ${removed} removed\n`));
      } finally {
        await c.close();
      }
    });

  program
    .command('calendar')
    .description('What goes out when: calendar items, soonest first.')
    .option('--product <id>', 'only this product\'s items')
    .option('--json', 'print JSON: { items: [{ id, title, startsAt, channel, status, productId?, assetId? }] }')
    .action(async (o: { product?: string; json?: boolean }) => {
      const c = await openCli();
      try {
        if (o.product !== undefined) await getProduct(c.store, o.product);
        const items = (await all<CalendarState>(c.store, CALENDAR_ITEM, o.product !== undefined ? { productId: o.product } : {}, { startsAt: 'asc' })).map((e) => ({
          id: e.entityId, title: e.state.title, startsAt: e.state.startsAt, channel: e.state.channel, status: e.state.status,
          ...(e.state.productId ? { productId: e.state.productId } : {}), ...(e.state.assetId ? { assetId: e.state.assetId } : {}),
        }));
        // ISO times with different zones do not sort as text
        items.sort((a, b) => Date.parse(a.startsAt) - Date.parse(b.startsAt) || a.id.localeCompare(b.id));
        print(o.json, { items }, () =>
          items.length === 0 ? console.log('nothing on the calendar') : table(['STARTS', 'CHANNEL', 'STATUS', 'PRODUCT', 'TITLE', 'ASSET'], items.map((i) => [i.startsAt, i.channel, i.status, i.productId ?? '', short(i.title), i.assetId ?? ''])),
        );
      } finally {
        await c.close();
      }
    });
}

/** Diffs compare whole lines: a body without a final newline gets one (no "\ No newline" noise). */
const withNewline = (s: string) => (s === '' || s.endsWith('\n') ? s : `${s}\n`);

function versionOf(id: string, a: AssetState, n: number) {
  const v = a.versions.find((x) => x.version === n);
  if (!v) {
    const have = a.versions.map((x) => x.version);
    throw new LaunchCliError('CONTENT_VERSION_NOT_FOUND', `${id} has no version ${n}; its versions: ${have.join(', ') || 'none yet'}`, { details: { assetId: id, version: n, versions: have } });
  }
  return v;
}
