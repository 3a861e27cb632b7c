/**
 * Budgets admitted BEFORE the money is spent.
 *
 * A budget caps model spend for one scope — a customer, an agent, a workflow (by name), a run, or
 * the whole engine — per UTC `day` or `month`, and is `hard` (refuse) or `soft` (warn and record).
 * Every model call is admitted first: its worst-case cost (see {@link estimateCallUsd}) is
 * reserved on each applicable budget's current window, then settled to the actual cost once the
 * provider answered, or released when the call failed.
 *
 * Storage (two entity types, {@link MODEL_ENTITY_TYPES}):
 * - `model_budget`: one entity per scope+key holding its `day` and/or `month` limit and mode;
 * - `model_budget_window`: one entity per scope+key+period+window (`2025-06-14`, `2025-06`, or
 *   `run` for run budgets, which count over the run's whole life) holding reserved and spent USD,
 *   the open reservations, refusals and soft warnings. Every change is an event appended with
 *   the version it read (optimistic concurrency, atomic across processes on both adapters); a
 *   version conflict re-reads and decides again.
 *
 * All or none: windows are reserved one by one in a fixed order; when one refuses, those already
 * taken are released. Meanwhile another call may see the short-lived reservation and be refused
 * too — the guard errs towards refusing, never towards overspending.
 *
 * A reservation whose call never settles (its process died) is counted as spent at its reserved
 * amount after {@link RESERVATION_TTL_MS}: the worst case, so a crash cannot free money that may
 * have been spent.
 */
import { createHash, randomBytes } from 'node:crypto';
import { z } from 'zod';
import { defineEntityType, isStateError, type Actor, type EntityTypeDef, type QueryPage, type StateStore, type State } from '../shared-state/index.ts';
import { BudgetRefusedError, type BudgetRefusal } from './errors.ts';
import type { ModelPrice } from './prices.ts';
import { intentCacheType } from './intent-cache.ts';

export type BudgetScope = 'customer' | 'agent' | 'workflow' | 'run' | 'engine';
export type BudgetPeriod = 'day' | 'month';
export type BudgetMode = 'hard' | 'soft';

/** The scopes a call is admitted against; the engine scope always applies. */
export interface BudgetScopes {
  customerId?: string;
  agent?: string;
  workflow?: string;
  runId?: string;
}

export interface Admission {
  id: string;
  reservedUsd: number;
  /** the budgets that hold part of it, as `scope:key/period` */
  scopes: string[];
  /** soft budgets this call went over, and unpriced calls admitted without a bound */
  warnings: string[];
  /** @internal the window entities holding the reservation */
  windows: string[];
}

export interface BudgetStatus {
  scope: BudgetScope;
  key: string;
  /** the email or handle a customer budget was set by, when it was set before the customer existed or by name */
  alias?: string;
  period: BudgetPeriod;
  mode: BudgetMode;
  limitUsd: number;
  reservedUsd: number;
  spentUsd: number;
  remainingUsd: number;
  refusals: number;
  /** soft budget overruns admitted in this window */
  warnings: number;
  window: string;
}

export interface BudgetSpec {
  scope: BudgetScope;
  /** the customer id, agent name, workflow name or run id; none for `engine` */
  key?: string;
  usd: number;
  period: BudgetPeriod;
  mode: BudgetMode;
  /** shown beside the key (e.g. the email a customer budget was set by) */
  alias?: string;
}

export interface AdmitRequest {
  callId: string;
  scopes: BudgetScopes;
  /** the call's worst-case cost; undefined: its model cannot be priced */
  estimateUsd: number | undefined;
  /** written on the ledger record of a refusal (capability, model, entity, tier ...) */
  record?: { capability?: string; model?: string; entityType?: string; entityId?: string; details?: Record<string, unknown> };
}

export interface BudgetGuard {
  /** Reserves the estimate on every applicable budget, or throws {@link BudgetRefusedError} (and reserves nothing). */
  admit(req: AdmitRequest): Promise<Admission>;
  /** Replaces the reservation with what the call actually cost. Idempotent per admission. */
  settle(a: Admission, actualUsd: number): Promise<void>;
  /** Gives the reservation back (the call failed and was not billed). Idempotent per admission. */
  release(a: Admission): Promise<void>;
  set(b: BudgetSpec, actor: Actor): Promise<void>;
  /** Sets a budget only when the scope has none for that period yet (a run's own budget). */
  ensure(b: BudgetSpec, actor: Actor): Promise<void>;
  clear(b: { scope: BudgetScope; key?: string; period: BudgetPeriod }, actor: Actor): Promise<boolean>;
  /** Every budget with its current window. */
  list(): Promise<BudgetStatus[]>;
}

/** Output tokens reserved for a call that names no bound of its own (and passed to the model as its max). */
export const DEFAULT_MAX_OUTPUT_TOKENS = 1024;
/** After this long an unsettled reservation counts as spent (its process is presumed dead). */
export const RESERVATION_TTL_MS = 15 * 60_000;
const ENGINE_KEY = 'engine';
const SCOPE_ORDER: BudgetScope[] = ['run', 'workflow', 'agent', 'customer', 'engine'];

/**
 * The worst-case USD of one call, or undefined when there is no price: input tokens estimated
 * as characters / 4 of the serialized messages (JSON for message lists: the role and field
 * names make it a slight over-count, which errs towards refusing), all billed at the uncached
 * input price, plus `maxOutputTokens` at the output price.
 */
export function estimateCallUsd(o: { price: ModelPrice | undefined; messages: unknown; maxOutputTokens: number }): number | undefined {
  if (!o.price) return undefined;
  const text = typeof o.messages === 'string' ? o.messages : (JSON.stringify(o.messages) ?? '');
  const inputTokens = Math.ceil(text.length / 4);
  return Math.round(((inputTokens * o.price.input + Math.max(0, o.maxOutputTokens) * o.price.output) / 1e6) * 1e9) / 1e9;
}

// ---- entities --------------------------------------------------------------------------------

const scopeEnum = z.enum(['customer', 'agent', 'workflow', 'run', 'engine']);
const limit = z.object({ usd: z.number().nonnegative(), mode: z.enum(['hard', 'soft']), setBy: z.string().optional(), setAt: z.string().optional() });

interface Limit {
  usd: number;
  mode: BudgetMode;
  setBy?: string;
  setAt?: string;
}
interface BudgetState extends State {
  scope: BudgetScope;
  key: string;
  alias?: string;
  day?: Limit;
  month?: Limit;
}

interface WindowState extends State {
  scope: BudgetScope;
  key: string;
  period: BudgetPeriod;
  window: string;
  reservedUsd: number;
  spentUsd: number;
  calls: number;
  refusals: number;
  warnings: number;
  expired: number;
  /** raises granted by approved `budget.raise` approvals, added to the limit in this window */
  raisedUsd: number;
  raisedBy: string[];
  open: Record<string, { usd: number; at: string }>;
}

export const modelBudgetType: EntityTypeDef = defineEntityType({
  name: 'model_budget',
  schemaVersion: 1,
  schema: z.object({ scope: scopeEnum, key: z.string(), alias: z.string().optional(), day: limit.optional(), month: limit.optional() }).loose() as unknown as z.ZodType<State>,
  searchFields: ['scope', 'key', 'alias'],
});

const usdAt = z.object({ id: z.string(), at: z.string() }).loose();
const round = (n: number) => Math.round(n * 1e9) / 1e9;

function reduceWindow(state: State, e: { type: string; data: unknown }): State {
  const st = state as WindowState;
  const d = e.data as { id: string; usd?: number; at: string; expire?: string[]; soft?: boolean };
  const open = { ...st.open };
  let { reservedUsd, spentUsd, expired } = st;
  // reservations presumed dead are spent at their reserved amount (the worst case)
  for (const id of d.expire ?? []) {
    const r = open[id];
    if (!r) continue;
    delete open[id];
    reservedUsd -= r.usd;
    spentUsd += r.usd;
    expired++;
  }
  switch (e.type) {
    case 'reserved':
      open[d.id] = { usd: d.usd ?? 0, at: d.at };
      return { ...st, open, reservedUsd: round(reservedUsd + (d.usd ?? 0)), spentUsd: round(spentUsd), expired, calls: st.calls + 1, warnings: st.warnings + (d.soft ? 1 : 0) };
    case 'settled':
    case 'released': {
      const r = open[d.id];
      if (!r) return { ...st, open, reservedUsd: round(reservedUsd), spentUsd: round(spentUsd), expired };
      delete open[d.id];
      return { ...st, open, reservedUsd: round(reservedUsd - r.usd), spentUsd: round(spentUsd + (e.type === 'settled' ? (d.usd ?? 0) : 0)), expired };
    }
    case 'refused':
      return { ...st, open, reservedUsd: round(reservedUsd), spentUsd: round(spentUsd), expired, refusals: st.refusals + 1 };
    case 'raised':
      return st.raisedBy.includes(d.id) ? st : { ...st, raisedUsd: round(st.raisedUsd + (d.usd ?? 0)), raisedBy: [...st.raisedBy, d.id] };
    default:
      return state;
  }
}

export const modelBudgetWindowType: EntityTypeDef = defineEntityType({
  name: 'model_budget_window',
  schemaVersion: 1,
  schema: z
    .object({
      scope: scopeEnum,
      key: z.string(),
      period: z.enum(['day', 'month']),
      window: z.string(),
      reservedUsd: z.number(),
      spentUsd: z.number(),
      calls: z.number().int().default(0),
      refusals: z.number().int().default(0),
      warnings: z.number().int().default(0),
      expired: z.number().int().default(0),
      raisedUsd: z.number().default(0),
      raisedBy: z.array(z.string()).default([]),
      open: z.record(z.string(), z.object({ usd: z.number(), at: z.string() })),
    })
    .loose() as unknown as z.ZodType<State>,
  searchFields: ['scope', 'key', 'window'],
  events: {
    reserved: usdAt.extend({ usd: z.number().nonnegative() }),
    settled: usdAt.extend({ usd: z.number().nonnegative() }),
    released: usdAt,
    refused: usdAt.extend({ askedUsd: z.number().nullable() }),
    raised: usdAt.extend({ usd: z.number().nonnegative() }),
  },
  reduce: reduceWindow,
});

/** The entity types budgets live in: register them wherever a store is opened. */
export const MODEL_ENTITY_TYPES: readonly EntityTypeDef[] = [modelBudgetType, modelBudgetWindowType, intentCacheType];

const hash = (s: string) => createHash('sha256').update(s).digest('hex').slice(0, 24);
export const budgetId = (scope: BudgetScope, key: string) => `${scope}_${hash(key)}`;
/** The window a time falls in: `2025-06-14`, `2025-06`; run budgets count over the run's life (`run`). */
export function windowOf(scope: BudgetScope, period: BudgetPeriod, now: Date): string {
  if (scope === 'run') return 'run';
  const iso = now.toISOString();
  return period === 'day' ? iso.slice(0, 10) : iso.slice(0, 7);
}
const windowId = (scope: BudgetScope, key: string, period: BudgetPeriod, window: string) => `${budgetId(scope, key)}_${period}_${window}`;
/** The approval id that asks the operator to raise one budget window (one per window). */
export const raiseApprovalId = (scope: BudgetScope, key: string, period: BudgetPeriod, window: string) => `budget-raise-${windowId(scope, key, period, window)}`.slice(0, 128);

const SYSTEM: Actor = { kind: 'system', id: 'budgets' };

function keysOf(s: BudgetScopes): [BudgetScope, string][] {
  const out: [BudgetScope, string][] = [];
  if (s.runId) out.push(['run', s.runId]);
  if (s.workflow) out.push(['workflow', s.workflow]);
  if (s.agent) out.push(['agent', s.agent]);
  if (s.customerId) out.push(['customer', s.customerId]);
  out.push(['engine', ENGINE_KEY]);
  return out.sort((a, b) => SCOPE_ORDER.indexOf(a[0]) - SCOPE_ORDER.indexOf(b[0]));
}

/** Retries `fn` on a version conflict (someone else wrote the entity first), re-reading each time. */
async function optimistic<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (!isStateError(err, 'STATE_VERSION_CONFLICT') || attempt >= 200) throw err;
      // jittered backoff, growing a little: many writers on one window take turns
      await new Promise((r) => setTimeout(r, Math.random() * Math.min(20, attempt)));
    }
  }
}

interface Target {
  scope: BudgetScope;
  key: string;
  period: BudgetPeriod;
  window: string;
  id: string;
  limit: Limit;
}

/**
 * The budget guard over a store that knows {@link MODEL_ENTITY_TYPES}. `now` decides the windows
 * (inject it to test day and month roll-over).
 *
 * ```ts
 * const guard = createBudgetGuard(store);
 * await guard.set({ scope: 'customer', key: 'cus-7', usd: 5, period: 'month', mode: 'hard' }, { kind: 'human', id: 'me' });
 * const a = await guard.admit({ callId, scopes: { customerId: 'cus-7', agent: 'triage' }, estimateUsd: 0.002 });
 * try { const r = await call(); await guard.settle(a, r.costUsd); } catch (e) { await guard.release(a); throw e; }
 * ```
 */
export function createBudgetGuard(store: StateStore, o: { now?: () => Date } = {}): BudgetGuard {
  const now = o.now ?? (() => new Date());

  const targetsOf = async (scopes: BudgetScopes, at: Date): Promise<Target[]> => {
    const keys = keysOf(scopes);
    const budgets = await Promise.all(keys.map(([scope, key]) => store.get<BudgetState>(modelBudgetType.name, budgetId(scope, key))));
    const out: Target[] = [];
    keys.forEach(([scope, key], i) => {
      const b = budgets[i];
      if (!b || b.deleted) return;
      for (const period of ['day', 'month'] as const) {
        const l = b.state[period];
        if (!l) continue;
        const window = windowOf(scope, period, at);
        out.push({ scope, key, period, window, id: windowId(scope, key, period, window), limit: l });
      }
    });
    return out;
  };

  const emptyWindow = (t: Target): WindowState => ({
    scope: t.scope, key: t.key, period: t.period, window: t.window,
    reservedUsd: 0, spentUsd: 0, calls: 0, refusals: 0, warnings: 0, expired: 0, raisedUsd: 0, raisedBy: [], open: {},
  });

  /** Appends one event to a window (creating it first when needed), deciding from a fresh read each try. */
  const onWindow = <T>(t: Target, decide: (st: WindowState, at: string) => { events: { type: string; data?: unknown }[]; result: T }) =>
    optimistic(async () => {
      const cur = await store.get<WindowState>(modelBudgetWindowType.name, t.id);
      const st = cur?.state ?? emptyWindow(t);
      const at = now().toISOString();
      const { events, result } = decide(st, at);
      if (events.length) {
        const all = cur ? events : [{ type: 'created', data: emptyWindow(t) }, ...events];
        await store.append(modelBudgetWindowType.name, t.id, cur?.version ?? 0, all, { actor: SYSTEM });
      }
      return result;
    });

  const staleOf = (st: WindowState, at: string) => {
    const cutoff = Date.parse(at) - RESERVATION_TTL_MS;
    return Object.entries(st.open).filter(([, r]) => Date.parse(r.at) < cutoff).map(([id]) => id);
  };

  /** An approved `budget.raise` for this window not applied yet: its amount, else 0. */
  const approvedRaise = async (t: Target, st: WindowState): Promise<{ id: string; usd: number } | undefined> => {
    const id = raiseApprovalId(t.scope, t.key, t.period, t.window);
    if (st.raisedBy.includes(id)) return undefined;
    const a = await store.getApproval(id).catch(() => null);
    if (a?.state !== 'approved') return undefined;
    const p = a.payload as { raiseUsd?: unknown } | null;
    const usd = typeof p?.raiseUsd === 'number' && p.raiseUsd > 0 ? p.raiseUsd : 0;
    return usd > 0 ? { id, usd } : undefined;
  };

  const undo = async (a: { id: string; windows: string[] }, type: 'settled' | 'released', usd: number) => {
    for (const wid of a.windows) {
      await optimistic(async () => {
        const cur = await store.get<WindowState>(modelBudgetWindowType.name, wid);
        if (!cur || !cur.state.open[a.id]) return; // settled or released before (or expired)
        await store.append(modelBudgetWindowType.name, wid, cur.version, [{ type, data: { id: a.id, at: now().toISOString(), ...(type === 'settled' ? { usd: Math.max(0, usd) } : {}) } }], { actor: SYSTEM });
      });
    }
  };

  const writeBudget = async (b: BudgetSpec, actor: Actor, onlyIfAbsent: boolean) => {
    if (!Number.isFinite(b.usd) || b.usd < 0) throw new TypeError(`budget usd must be a number >= 0 (got ${b.usd})`);
    const key = b.scope === 'engine' ? ENGINE_KEY : (b.key ?? '').trim();
    if (!key) throw new TypeError(`a ${b.scope} budget needs a key (the ${b.scope === 'customer' ? 'customer id' : b.scope === 'run' ? 'run id' : `${b.scope} name`})`);
    const id = budgetId(b.scope, key);
    const l: Limit = { usd: b.usd, mode: b.mode, setBy: `${actor.kind}:${actor.id}`, setAt: now().toISOString() };
    await optimistic(async () => {
      const cur = await store.get<BudgetState>(modelBudgetType.name, id);
      if (onlyIfAbsent && cur && !cur.deleted && cur.state[b.period]) return;
      const meta = { actor };
      if (!cur) {
        const state: BudgetState = { scope: b.scope, key, [b.period]: l, ...(b.alias ? { alias: b.alias } : {}) };
        await store.append(modelBudgetType.name, id, 0, [{ type: 'created', data: state }], meta);
        return;
      }
      const events: { type: string; data?: unknown }[] = [];
      if (cur.deleted) events.push({ type: 'restored' });
      events.push({ type: 'updated', data: { [b.period]: l, ...(b.alias ? { alias: b.alias } : {}) } });
      await store.append(modelBudgetType.name, id, cur.version, events, meta);
    });
  };

  return {
    async admit(req) {
      const at = now();
      const id = `${req.callId}.${randomBytes(4).toString('hex')}`.replace(/[^A-Za-z0-9_.:-]/g, '_');
      const targets = await targetsOf(req.scopes, at);
      const admission: Admission = { id, reservedUsd: req.estimateUsd ?? 0, scopes: [], warnings: [], windows: [] };
      const est = req.estimateUsd;
      if (est === undefined) admission.warnings.push('the model cannot be priced: admitted without a bound');
      for (const t of targets) {
        const label = `${t.scope === 'engine' ? 'engine' : `${t.scope}:${t.key}`}/${t.period}`;
        type Outcome = { refusal: BudgetRefusal | undefined; st: WindowState; soft?: boolean };
        // pass 0 decides without writing a refusal; a refusal looks for an approved raise of
        // this window first (pass 1 applies it once, then admits or records the refusal)
        let raise: { id: string; usd: number } | undefined;
        let outcome: Outcome | undefined;
        for (let pass = 0; pass < 2 && !(outcome && !outcome.refusal); pass++) {
          if (pass === 1) raise = await approvedRaise(t, outcome!.st);
          outcome = await onWindow<Outcome>(t, (st, nowIso) => {
            const expire = staleOf(st, nowIso);
            const expiredUsd = expire.reduce((n, x) => n + (st.open[x]?.usd ?? 0), 0);
            const reserved = round(st.reservedUsd - expiredUsd);
            const spent = round(st.spentUsd + expiredUsd);
            const raising = raise && !st.raisedBy.includes(raise.id) ? raise : undefined;
            const limitUsd = round(t.limit.usd + st.raisedUsd + (raising?.usd ?? 0));
            const over = est === undefined ? t.limit.mode === 'hard' : spent + reserved + est > limitUsd + 1e-12;
            const extra = raising ? [{ type: 'raised', data: { id: raising.id, at: nowIso, usd: raising.usd } }] : [];
            const exp = expire.length ? { expire } : {};
            if (over && t.limit.mode === 'hard') {
              const refusal: BudgetRefusal = { scope: t.scope, key: t.key, period: t.period, window: t.window, limitUsd, reservedUsd: reserved, spentUsd: spent, askedUsd: est, reason: est === undefined ? 'unpriced' : 'over_limit' };
              const events = pass === 0 ? [] : [...extra, { type: 'refused', data: { id, at: nowIso, askedUsd: est ?? null, ...exp } }];
              return { events, result: { refusal, st } };
            }
            const soft = over && t.limit.mode === 'soft';
            return { events: [...extra, { type: 'reserved', data: { id, at: nowIso, usd: est ?? 0, ...(soft ? { soft: true } : {}), ...exp } }], result: { refusal: undefined, st, soft } };
          });
        }
        if (!outcome) continue;
        if (outcome.refusal) {
          await undo(admission, 'released', 0).catch(() => undefined);
          const err = new BudgetRefusedError(outcome.refusal);
          const r = req.record ?? {};
          await store
            .recordCost({
              agent: req.scopes.agent, capability: r.capability, runId: req.scopes.runId, customerId: req.scopes.customerId,
              entityType: r.entityType, entityId: r.entityId, model: r.model, costUsd: 0,
              details: { ...r.details, ...(req.scopes.workflow ? { workflow: req.scopes.workflow } : {}), refused: { ...outcome.refusal, askedUsd: outcome.refusal.askedUsd ?? null, message: err.message } },
            })
            .catch(() => undefined);
          throw err;
        }
        admission.scopes.push(label);
        admission.windows.push(t.id);
        if (outcome.soft) admission.warnings.push(`soft budget ${label} exceeded: $${round(outcome.st.spentUsd + outcome.st.reservedUsd + (est ?? 0))} of $${t.limit.usd}`);
      }
      return admission;
    },
    settle: (a, actualUsd) => undo(a, 'settled', actualUsd),
    release: (a) => undo(a, 'released', 0),
    set: (b, actor) => writeBudget(b, actor, false),
    ensure: (b, actor) => writeBudget(b, actor, true),
    async clear(b, actor) {
      const key = b.scope === 'engine' ? ENGINE_KEY : (b.key ?? '').trim();
      const id = budgetId(b.scope, key);
      return optimistic(async () => {
        const cur = await store.get<BudgetState>(modelBudgetType.name, id);
        if (!cur || cur.deleted || !cur.state[b.period]) return false;
        const other = b.period === 'day' ? 'month' : 'day';
        const events = cur.state[other] ? [{ type: 'updated', data: { [b.period]: null } }] : [{ type: 'updated', data: { [b.period]: null } }, { type: 'deleted' }];
        await store.append(modelBudgetType.name, id, cur.version, events, { actor });
        return true;
      });
    },
    async list() {
      const at = now();
      const out: BudgetStatus[] = [];
      for (let offset: number | null = 0; offset !== null; ) {
        const page: QueryPage<BudgetState> = await store.query<BudgetState>(modelBudgetType.name, { limit: 1000, offset, sort: { id: 'asc' } });
        for (const b of page.items) {
          for (const period of ['day', 'month'] as const) {
            const l = b.state[period];
            if (!l) continue;
            const window = windowOf(b.state.scope, period, at);
            const w = (await store.get<WindowState>(modelBudgetWindowType.name, windowId(b.state.scope, b.state.key, period, window)))?.state;
            const limitUsd = round(l.usd + (w?.raisedUsd ?? 0));
            const reservedUsd = w?.reservedUsd ?? 0;
            const spentUsd = w?.spentUsd ?? 0;
            out.push({
              scope: b.state.scope, key: b.state.key, ...(b.state.alias ? { alias: b.state.alias } : {}), period, mode: l.mode, limitUsd, reservedUsd, spentUsd,
              remainingUsd: round(Math.max(0, limitUsd - reservedUsd - spentUsd)), refusals: w?.refusals ?? 0, warnings: w?.warnings ?? 0, window,
            });
          }
        }
        offset = page.nextOffset;
      }
      return out.sort((a, b) => SCOPE_ORDER.indexOf(a.scope) - SCOPE_ORDER.indexOf(b.scope) || a.key.localeCompare(b.key) || a.period.localeCompare(b.period));
    },
  };
}
