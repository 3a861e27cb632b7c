/**
 * Reading and changing the launch feature's entities from a task: every change is an append with
 * the expected version, retried on a conflict, and idempotent (a redelivered task changes nothing
 * twice).
 */
import { createHash } from 'node:crypto';
import type { TaskContext } from '../../runtime/index.ts';
import { PermanentError } from '../../runtime/index.ts';
import type { Entity, EventInput } from '../../shared-state/index.ts';
import { CALENDAR_ITEM, CONTENT_ASSET, LIFECYCLE, PRODUCT, TASK, type AssetKind, type AssetVersion, type Lifecycle, type ProductException, type Research, type ChannelPlan } from './entities.ts';

export interface ProductState {
  name: string;
  pitch: string;
  audience: string;
  description?: string;
  price?: { amount: number; currency: string };
  notes?: string;
  documents: { name: string; text: string }[];
  subscribers: string[];
  lifecycle: Lifecycle;
  resumeTo?: Lifecycle;
  blocked?: ProductException;
  exceptions: ProductException[];
  launch?: { runId: string; at: string; budgetUsd?: number; startedAt: string };
  research?: Research;
  plan?: ChannelPlan;
  publications: { what: 'page' | 'emails' | 'posts'; assetId?: string; path?: string; count?: number; at: string }[];
  followUps: { ticketId: string; from: string; messageId?: string; subject?: string; at: string }[];
  owner?: string;
  tags: string[];
}

export interface AssetState {
  productId: string;
  kind: AssetKind;
  slot: string;
  title: string;
  status: 'draft' | 'review' | 'approved' | 'rejected' | 'scheduled' | 'published' | 'recalled';
  versions: AssetVersion[];
  current: number;
  approvedVersion?: number;
  approvedBy?: string;
  rejectedReason?: string;
  scheduledAt?: string;
  publishedAt?: string;
}

export interface TaskState {
  title: string;
  status: 'todo' | 'in_progress' | 'blocked' | 'done' | 'cancelled';
  owner: string;
  dueAt?: string;
  productId?: string;
  runId?: string;
  step?: string;
  overdueAt?: string;
  doneAt?: string;
}

export interface CalendarState {
  title: string;
  startsAt: string;
  productId?: string;
  assetId?: string;
  channel: 'site' | 'email' | 'social' | 'other';
  status: 'planned' | 'scheduled' | 'published' | 'cancelled';
  publishedAt?: string;
}

type Ctx = Pick<TaskContext<unknown>, 'state'>;

/** The launch's slots: which asset each review and publication is about. */
export const SLOTS = { page: 'page', email1: 'email-1', email2: 'email-2', posts: 'posts' } as const;
export const assetIdOf = (productId: string, slot: string) => `${productId}-${slot}`;
export const calendarIdOf = (productId: string, slot: string) => `${productId}-cal-${slot}`;
export const taskIdOf = (runId: string, step: string) => `${runId}-${step}`.replace(/[^A-Za-z0-9_-]/g, '-');
export const sha = (s: string) => createHash('sha256').update(s).digest('hex');

export async function getProduct(ctx: Ctx, productId: string): Promise<Entity<ProductState>> {
  const p = await ctx.state.get<ProductState>(PRODUCT, productId);
  if (!p || p.deleted) throw new PermanentError(`product '${productId}' does not exist`, { code: 'LAUNCH_NO_PRODUCT' });
  return p;
}

/**
 * Appends what `change` returns for the entity's current state (nothing: no change), retrying on a
 * version conflict with a fresh read.
 */
export async function change<S>(ctx: Ctx, type: string, id: string, fn: (e: Entity<S> | null) => EventInput[] | undefined): Promise<Entity<S> | null> {
  for (let attempt = 0; ; attempt++) {
    const cur = await ctx.state.get<S>(type, id);
    const events = fn(cur);
    if (!events || events.length === 0) return cur;
    try {
      const r = await ctx.state.append<S>(type, id, cur?.version ?? 0, events);
      return r.entity;
    } catch (err) {
      if ((err as { code?: string }).code !== 'STATE_VERSION_CONFLICT' || attempt >= 20) throw err;
    }
  }
}

const order = (l: Lifecycle) => LIFECYCLE.indexOf(l);

/**
 * Moves the product's lifecycle forward to `to` (never back). A blocked product is unblocked when
 * its launch moves on to where it was, or further.
 */
export async function advanceLifecycle(ctx: Ctx, productId: string, to: Exclude<Lifecycle, 'blocked'>, reason: string): Promise<void> {
  await change<ProductState>(ctx, PRODUCT, productId, (p) => {
    if (!p) throw new PermanentError(`product '${productId}' does not exist`, { code: 'LAUNCH_NO_PRODUCT' });
    const cur = p.state.lifecycle;
    if (cur === 'blocked') {
      const was = p.state.resumeTo ?? 'idea';
      return order(to) >= order(was) ? [{ type: 'lifecycle_changed', data: { to, reason: `${reason} (unblocked: ${p.state.blocked?.reason ?? 'blocked'})`.slice(0, 4_000) } }] : undefined;
    }
    return order(to) > order(cur) ? [{ type: 'lifecycle_changed', data: { to, reason } }] : undefined;
  });
}

/** Blocks the product with the exception (once per identical reason while it stays blocked). */
export async function blockProduct(ctx: Ctx, productId: string, x: ProductException): Promise<boolean> {
  let added = false;
  await change<ProductState>(ctx, PRODUCT, productId, (p) => {
    if (!p) throw new PermanentError(`product '${productId}' does not exist`, { code: 'LAUNCH_NO_PRODUCT' });
    added = false;
    if (p.state.lifecycle === 'blocked' && p.state.blocked?.reason === x.reason) return undefined;
    if (p.state.lifecycle === 'done') return undefined;
    added = true;
    return [{ type: 'blocked', data: x }];
  });
  return added;
}

/** Marks a launch task done (idempotent). */
export async function finishTask(ctx: Ctx, taskId: string, at = new Date().toISOString()): Promise<void> {
  await change<TaskState>(ctx, TASK, taskId, (t) => (!t || t.state.status === 'done' ? undefined : [{ type: 'updated', data: { status: 'done', doneAt: at } }]));
}

/** Marks a launch task in progress (when it is still to do). */
export async function startTask(ctx: Ctx, taskId: string): Promise<void> {
  await change<TaskState>(ctx, TASK, taskId, (t) => (!t || t.state.status !== 'todo' ? undefined : [{ type: 'updated', data: { status: 'in_progress' } }]));
}

/** Adds a version to an asset (creating the asset on its first version); a version number already there is kept. */
export async function addVersion(ctx: Ctx, a: { productId: string; kind: AssetKind; slot: string }, v: Omit<AssetVersion, 'version'>, status: AssetState['status'] = 'review'): Promise<{ assetId: string; version: number }> {
  const assetId = assetIdOf(a.productId, a.slot);
  let version = 0;
  await change<AssetState>(ctx, CONTENT_ASSET, assetId, (cur) => {
    version = (cur?.state.current ?? 0) + 1;
    const events: EventInput[] = [];
    if (!cur) events.push({ type: 'created', data: { productId: a.productId, kind: a.kind, slot: a.slot, title: v.title } });
    events.push({ type: 'version_added', data: { ...v, version } });
    events.push({ type: 'status_changed', data: { to: status, by: v.by, version } });
    return events;
  });
  return { assetId, version };
}

/** The version the operator approved, else the current one. */
export function approvedVersion(a: AssetState): AssetVersion {
  const n = a.approvedVersion ?? a.current;
  const v = a.versions.find((x) => x.version === n) ?? a.versions.at(-1);
  if (!v) throw new PermanentError(`asset of slot '${a.slot}' has no version`, { code: 'LAUNCH_NO_VERSION' });
  return v;
}

export async function getAsset(ctx: Ctx, assetId: string): Promise<Entity<AssetState>> {
  const a = await ctx.state.get<AssetState>(CONTENT_ASSET, assetId);
  if (!a) throw new PermanentError(`content asset '${assetId}' does not exist`, { code: 'LAUNCH_NO_ASSET' });
  return a;
}

export async function setCalendar(ctx: Ctx, id: string, patch: Partial<CalendarState>, create?: CalendarState): Promise<void> {
  await change<CalendarState>(ctx, CALENDAR_ITEM, id, (c) => {
    if (!c) return create ? [{ type: 'created', data: { ...create, ...patch } }] : undefined;
    const diff = Object.fromEntries(Object.entries(patch).filter(([k, v]) => (c.state as unknown as Record<string, unknown>)[k] !== v));
    return Object.keys(diff).length ? [{ type: 'updated', data: diff }] : undefined;
  });
}

/** Words of a text, lowercased, without short and common ones. */
export function terms(text: string): string[] {
  return (text.toLowerCase().match(/[a-z0-9][a-z0-9'-]{2,}/g) ?? []).filter((w) => !STOP.has(w));
}
const STOP = new Set('the and for with that this from your you are our was were will have has had not but all can its into than then them they their there what when who why how about more most very just also only over such each any some other out get got one two use using used make made like'.split(' '));

/** A model call's text, or the budget refusal as the product's reason to block (a permanent failure of the step). */
export async function callModel(ctx: TaskContext<unknown>, tier: 'small' | 'large', messages: { role: 'system' | 'user'; content: string }[], key: string): Promise<string> {
  try {
    // keyed by the graph node: a graph resumed after a crash reads back that node's answer
    return (await ctx.llm(tier, messages, { key })).text.trim();
  } catch (err) {
    if ((err as { code?: string }).code === 'MODEL_BUDGET_REFUSED') throw new PermanentError(`budget refused: ${(err as Error).message}`, { code: 'LAUNCH_BUDGET_REFUSED', cause: err });
    throw err;
  }
}

/**
 * The best tier this process has a model for (2 large, 1 small, 0 none), recorded as a side
 * effect: a redelivered task and a replay take the same road as the first run did.
 */
export async function bestTier(ctx: TaskContext<unknown>, prefer: 'small' | 'large'): Promise<0 | 1 | 2> {
  return ctx.effect('tier', async () => {
    if (prefer === 'large' && ctx.hasModel('large')) return 2 as const;
    if (ctx.hasModel('small')) return 1 as const;
    if (ctx.hasModel('large')) return 2 as const;
    return 0 as const;
  });
}
export const TIER_NAME = { 1: 'small', 2: 'large' } as const;
