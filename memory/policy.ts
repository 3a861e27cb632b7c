/**
 * The fidelity policy of long-term memory, per entity type: how long raw memories (one per
 * message) are kept before they are summarized, how long anything about an entity of that type
 * is kept at all, and whether that type is remembered at all (opt-out). The policy itself is data
 * the caller stores (the memory feature keeps it in shared state, so a change is an event and is
 * audited); this module resolves it and runs the sweep that applies it.
 *
 * ```ts
 * import { effectivePolicy, sweepMemory } from './memory/index.ts';
 * const p = effectivePolicy('ticket', stored);          // { rawDays: 30, retainDays: 365, optOut: false, source: 'default' }
 * const r = await sweepMemory(memory, { ticket: p }, { now: new Date(), summarize: extractiveSummary });
 * r.summarized; r.superseded; r.expired;
 * ```
 *
 * The sweep, per entity type:
 * 1. retention: every memory (active or superseded) created before now − retainDays is forgotten
 *    (removed with its vector);
 * 2. fidelity: the active raw memories (kind `message`) created before now − rawDays are grouped
 *    by entity; each group becomes one `summary` memory that supersedes them (they stay, marked
 *    superseded, until retention removes them).
 * A policy change applies forward: the next sweep uses it; summaries already made stay.
 */
import { createHash } from 'node:crypto';
import type { Memory, MemoryStore } from './types.ts';

export interface FidelityPolicy {
  /** days a raw memory stays as written before it is summarized (0 = summarize at the next sweep) */
  rawDays: number;
  /** days anything is kept (raw or summary); after that it is forgotten */
  retainDays: number;
  /** true: nothing new is remembered for this entity type (what exists stays until retention) */
  optOut: boolean;
}

/** Applies when nothing was set: raw for 30 days, everything for a year, remembered. */
export const DEFAULT_POLICY: Readonly<FidelityPolicy> = Object.freeze({ rawDays: 30, retainDays: 365, optOut: false });

/** What an operator set for one entity type (every field optional: unset falls back to the default). */
export interface StoredPolicy {
  rawDays?: number;
  retainDays?: number;
  optOut?: boolean;
  /** who set it and when (shown by `keel memory policy`) */
  updatedBy?: string;
  updatedAt?: string;
}

export interface EffectivePolicy extends FidelityPolicy {
  entityType: string;
  /** `default`: nothing set; `set`: at least one field set by an operator */
  source: 'default' | 'set';
  updatedBy?: string;
  updatedAt?: string;
  /** why each value is what it is, in words (for `keel memory policy`) */
  why: { rawDays: string; retainDays: string; optOut: string };
}

/** The policy in force for `entityType`: what was stored, else the defaults. */
export function effectivePolicy(entityType: string, stored: StoredPolicy | null | undefined, defaults: FidelityPolicy = DEFAULT_POLICY): EffectivePolicy {
  const s = stored ?? {};
  const by = s.updatedBy ? `set by ${s.updatedBy}${s.updatedAt ? ` at ${s.updatedAt}` : ''}` : 'set';
  const pick = <K extends keyof FidelityPolicy>(k: K): [FidelityPolicy[K], string] => (s[k] !== undefined ? [s[k] as FidelityPolicy[K], by] : [defaults[k], 'default']);
  const [rawDays, rawWhy] = pick('rawDays');
  const [retainDays, retainWhy] = pick('retainDays');
  const [optOut, optWhy] = pick('optOut');
  return {
    entityType,
    rawDays,
    retainDays,
    optOut,
    source: s.rawDays !== undefined || s.retainDays !== undefined || s.optOut !== undefined ? 'set' : 'default',
    ...(s.updatedBy ? { updatedBy: s.updatedBy } : {}),
    ...(s.updatedAt ? { updatedAt: s.updatedAt } : {}),
    why: { rawDays: rawWhy, retainDays: retainWhy, optOut: optWhy },
  };
}

/** Checks a policy change; returns the problems (empty = fine). Retention shorter than the raw window makes no sense. */
export function policyProblems(p: FidelityPolicy): string[] {
  const out: string[] = [];
  if (!Number.isInteger(p.rawDays) || p.rawDays < 0) out.push(`rawDays must be an integer >= 0 (got ${p.rawDays})`);
  if (!Number.isInteger(p.retainDays) || p.retainDays < 1) out.push(`retainDays must be an integer >= 1 (got ${p.retainDays})`);
  if (out.length === 0 && p.retainDays < p.rawDays) out.push(`retainDays (${p.retainDays}) must be >= rawDays (${p.rawDays}): raw memories would be forgotten before they are summarized`);
  return out;
}

const DAY_MS = 86_400_000;
const daysBefore = (now: Date, days: number) => new Date(now.getTime() - days * DAY_MS).toISOString();

/** The first sentence of a text (or its first 200 characters). */
function firstSentence(text: string): string {
  const t = text.replace(/\s+/g, ' ').trim();
  const m = /^(.{20,240}?[.!?])(\s|$)/.exec(t);
  return m ? m[1]! : t.length > 200 ? `${t.slice(0, 199)}…` : t;
}

/**
 * Tier-0 summary of raw memories, without a model: extractive, the first sentence of each memory
 * (oldest first, duplicates dropped), dated, at most `maxChars`.
 */
export function extractiveSummary(memories: readonly Pick<Memory, 'text' | 'createdAt' | 'meta'>[], maxChars = 1_500): string {
  const sorted = [...memories].sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  const seen = new Set<string>();
  const lines: string[] = [];
  const subject = sorted.map((m) => m.meta?.subject).find((s): s is string => typeof s === 'string' && s.length > 0);
  if (subject) lines.push(`About "${subject}".`);
  for (const m of sorted) {
    const s = firstSentence(m.text);
    const key = s.toLowerCase();
    if (!s || seen.has(key)) continue;
    seen.add(key);
    lines.push(`${m.createdAt.slice(0, 10)}: ${s}`);
  }
  const text = lines.join(' ');
  return text.length > maxChars ? `${text.slice(0, maxChars - 1)}…` : text;
}

export interface SweepOptions {
  now?: Date;
  /** turns a group of raw memories (one entity) into a summary; default {@link extractiveSummary} */
  summarize?: (memories: Memory[]) => Promise<string> | string;
  /** who writes the summaries (provenance), default `memorizer` */
  writtenBy?: string;
  /** at most this many memories looked at per entity type and step (default 10 000) */
  limit?: number;
  signal?: AbortSignal;
}

export interface SweepTypeReport {
  entityType: string;
  policy: FidelityPolicy;
  /** summary memories written */
  summarized: number;
  /** raw memories those summaries superseded */
  superseded: number;
  /** memories forgotten because their retention ended */
  expired: number;
  /** the summaries' ids */
  summaryIds: string[];
}

export interface SweepReport {
  at: string;
  types: SweepTypeReport[];
  summarized: number;
  superseded: number;
  expired: number;
}

async function listAll(store: MemoryStore, q: Parameters<MemoryStore['list']>[0], limit: number): Promise<Memory[]> {
  const out: Memory[] = [];
  let afterId: string | undefined;
  while (out.length < limit) {
    const want = Math.min(500, limit - out.length);
    const page = await store.list({ ...q, afterId, limit: want });
    out.push(...page);
    if (page.length < want) break;
    afterId = page.at(-1)!.id;
  }
  return out;
}

/** A summary's id: derived from what it replaces, so a sweep run twice writes it once. */
export const summaryIdFor = (entityType: string, entityId: string, replaced: readonly string[]) =>
  `mem-sum-${createHash('sha256').update(`${entityType}\n${entityId}\n${[...replaced].sort().join('\n')}`).digest('hex').slice(0, 24)}`;

/** Applies each type's policy once: retention first, then raw → summary. */
export async function sweepMemory(store: MemoryStore, policies: Readonly<Record<string, FidelityPolicy>>, o: SweepOptions = {}): Promise<SweepReport> {
  const now = o.now ?? new Date();
  const limit = o.limit ?? 10_000;
  const summarize = o.summarize ?? ((m: Memory[]) => extractiveSummary(m));
  const types: SweepTypeReport[] = [];
  for (const [entityType, policy] of Object.entries(policies)) {
    if (o.signal?.aborted) break;
    const r: SweepTypeReport = { entityType, policy: { rawDays: policy.rawDays, retainDays: policy.retainDays, optOut: policy.optOut }, summarized: 0, superseded: 0, expired: 0, summaryIds: [] };
    // 1. retention: whatever is older than retainDays goes, raw or summary, active or superseded
    const expired = await listAll(store, { entityType, createdBefore: daysBefore(now, policy.retainDays) }, limit);
    if (expired.length) r.expired = (await store.forget({ ids: expired.map((m) => m.id) })).removed;
    // 2. fidelity: raw memories past the raw window become one summary per entity
    const raw = await listAll(store, { entityType, kind: 'message', status: 'active', createdBefore: daysBefore(now, policy.rawDays) }, limit);
    const byEntity = new Map<string, Memory[]>();
    for (const m of raw) {
      const id = m.entityId ?? m.source.entityId;
      if (!id) continue;
      byEntity.set(id, [...(byEntity.get(id) ?? []), m]);
    }
    // every summary is asked for at once, so low-urgency model calls can share a batch (KEEL_BATCH_*)
    const entries = [...byEntity];
    const texts = await Promise.all(entries.map(async ([, group]) => (o.signal?.aborted ? '' : (await summarize(group)).trim())));
    for (const [i, [entityId, group]] of entries.entries()) {
      if (o.signal?.aborted) break;
      const text = texts[i]!;
      if (!text) continue;
      const ids = group.map((m) => m.id);
      const newest = group.reduce((a, b) => (a.createdAt > b.createdAt ? a : b));
      const customerId = group.find((m) => m.customerId)?.customerId;
      const [s] = await store.put([
        {
          id: summaryIdFor(entityType, entityId, ids),
          text,
          kind: 'summary',
          ...(customerId ? { customerId } : {}),
          entityType,
          entityId,
          source: { entityType, entityId, eventIds: [...new Set(group.flatMap((m) => m.source.eventIds))] },
          writtenBy: o.writtenBy ?? 'memorizer',
          importance: Math.max(...group.map((m) => m.importance)),
          createdAt: newest.createdAt,
          supersedes: ids,
          meta: { fidelity: 'summary', replaces: ids.length, ...(typeof newest.meta?.subject === 'string' ? { subject: newest.meta.subject } : {}) },
        },
      ]);
      r.summarized++;
      r.superseded += ids.length;
      if (s) r.summaryIds.push(s.id);
    }
    types.push(r);
  }
  return {
    at: now.toISOString(),
    types,
    summarized: types.reduce((s, t) => s + t.summarized, 0),
    superseded: types.reduce((s, t) => s + t.superseded, 0),
    expired: types.reduce((s, t) => s + t.expired, 0),
  };
}
