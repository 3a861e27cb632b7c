/**
 * Retention: what keeps a long-running store from growing with old bookkeeping. Two things, both
 * by age and both safe to repeat:
 *
 * - **Histories**: an entity that matches a rule (e.g. a finished workflow run) and has not
 *   changed for the rule's age gets its events replaced by one `compacted` event holding its
 *   state (`StateStore.compactHistory`). Its current state, `get`, queries, search, erasure and
 *   `rebuildProjections` work as before; its step-by-step history and `getAt` of older versions
 *   are gone. Nothing is copied elsewhere: an archive file would be one more place an erasure
 *   (`keel customer erase`) would have to reach.
 * - **Idempotency records** completed before the age (and claims abandoned before it) are
 *   deleted: a task redelivered after that would run again, so the age must exceed every way a
 *   task can come back (the task stream's max age, a dead letter's re-drive window).
 *
 * The audit log, the cost ledger, approvals and the entities themselves (tickets, customers, the
 * final state of every run) are kept. The policy is the caller's (the engine builds it from
 * KEEL_RUN_RETENTION, see engine/retention.ts); this module is mechanism only.
 *
 * ```ts
 * const report = await runRetention(store, {
 *   histories: [{ entityType: 'workflow_run', filter: { status: { $in: ['completed', 'failed'] } }, olderThanMs: 90 * 86_400_000 }],
 *   idempotencyOlderThanMs: 90 * 86_400_000,
 * });
 * const timer = startRetention(store, { policy, intervalMs: 3_600_000, stateFile: '/data/retention.json' });
 * ```
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { isStateError } from './errors.ts';
import type { Actor, FieldCondition, StateStore } from './types.ts';

export interface HistoryRule {
  entityType: string;
  /** which entities of the type qualify besides their age (a query filter on their state) */
  filter?: Record<string, FieldCondition>;
  /** compact entities whose last change is older than this */
  olderThanMs: number;
}

export interface RetentionPolicy {
  histories: HistoryRule[];
  /** delete idempotency records completed (or abandoned) longer ago than this; null/absent: keep them */
  idempotencyOlderThanMs?: number | null;
}

export interface RetentionReport {
  startedAt: string;
  ms: number;
  histories: Array<{ entityType: string; candidates: number; compacted: number; events: number; skipped: { unpublished: number; conflict: number; compacted: number } }>;
  idempotency: { completed: number; abandoned: number } | null;
  /** per entity type: the `updatedAt` up to which every candidate has been looked at (the next pass starts there) */
  watermarks: Record<string, string>;
}

const ACTOR: Actor = { kind: 'system', id: 'retention' };

/**
 * One retention pass. `watermarks` (by entity type, an ISO time) lets a pass skip the candidates
 * an earlier pass has already looked at: compaction keeps `updatedAt`, so without it every pass
 * would walk every old entity again.
 */
export async function runRetention(
  store: StateStore,
  policy: RetentionPolicy,
  opts: { now?: Date; actor?: Actor; watermarks?: Record<string, string>; pageSize?: number; stopped?: () => boolean } = {},
): Promise<RetentionReport> {
  const t0 = performance.now();
  const now = opts.now ?? new Date();
  const actor = opts.actor ?? ACTOR;
  const pageSize = opts.pageSize ?? 200;
  const watermarks: Record<string, string> = { ...opts.watermarks };
  const report: RetentionReport = { startedAt: now.toISOString(), ms: 0, histories: [], idempotency: null, watermarks };
  for (const rule of policy.histories) {
    const cutoff = new Date(now.getTime() - rule.olderThanMs).toISOString();
    const r = { entityType: rule.entityType, candidates: 0, compacted: 0, events: 0, skipped: { unpublished: 0, conflict: 0, compacted: 0 } };
    report.histories.push(r);
    // keyset paging on (updatedAt, id): compaction keeps both, so the candidates stay in place
    let last = watermarks[rule.entityType] ?? '';
    let seenAtLast = 0;
    let firstSkipped: string | undefined;
    for (;;) {
      if (opts.stopped?.()) break;
      const page = await store.query(rule.entityType, {
        filter: { ...rule.filter, updatedAt: last ? { $gte: last, $lt: cutoff } : { $lt: cutoff } },
        sort: { updatedAt: 'asc' },
        limit: pageSize,
        offset: last ? seenAtLast : 0,
        includeDeleted: true,
      });
      for (const e of page.items) {
        if (e.updatedAt === last) seenAtLast++;
        else {
          last = e.updatedAt;
          seenAtLast = 1;
        }
        r.candidates++;
        try {
          const c = await store.compactHistory(rule.entityType, e.entityId, { expectedVersion: e.version, reason: `retention: unchanged for ${Math.round(rule.olderThanMs / 1000)} s`, actor });
          if (c.skipped === 'compacted') r.skipped.compacted++;
          else if (c.skipped === 'unpublished') {
            r.skipped.unpublished++;
            firstSkipped ??= e.updatedAt;
          } else if (!c.skipped) {
            r.compacted++;
            r.events += c.events;
          }
        } catch (err) {
          // it changed meanwhile: it is no longer a candidate of this pass (its updatedAt moved on)
          if (isStateError(err) && err.code === 'STATE_VERSION_CONFLICT') r.skipped.conflict++;
          else throw err;
        }
      }
      if (page.items.length < pageSize) {
        // everything before the cut-off was seen, except what waits for the outbox
        if (!opts.stopped?.()) last = firstSkipped ?? cutoff;
        break;
      }
    }
    if (firstSkipped && firstSkipped < last) last = firstSkipped;
    if (last) watermarks[rule.entityType] = last;
  }
  if (policy.idempotencyOlderThanMs && !opts.stopped?.()) {
    const before = new Date(now.getTime() - policy.idempotencyOlderThanMs);
    const total = { completed: 0, abandoned: 0 };
    for (;;) {
      const p = await store.pruneIdempotency(before, { limit: 2000 });
      total.completed += p.completed;
      total.abandoned += p.abandoned;
      if (p.completed + p.abandoned < 2000 || opts.stopped?.()) break;
    }
    report.idempotency = total;
  }
  report.ms = Math.round(performance.now() - t0);
  return report;
}

export interface RetentionTimer {
  /** runs a pass now (or waits for the running one) */
  runNow(): Promise<RetentionReport | undefined>;
  /** the last pass's report */
  last(): RetentionReport | undefined;
  stop(): Promise<void>;
}

/**
 * Runs {@link runRetention} shortly after start (`firstDelayMs`, default 10 s) and then every
 * `intervalMs`. The watermarks survive restarts in `stateFile` when given.
 */
export function startRetention(
  store: StateStore,
  o: { policy: RetentionPolicy; intervalMs: number; firstDelayMs?: number; stateFile?: string; onReport?: (r: RetentionReport) => void; onError?: (err: unknown) => void },
): RetentionTimer {
  let watermarks: Record<string, string> = {};
  if (o.stateFile && existsSync(o.stateFile)) {
    try {
      watermarks = (JSON.parse(readFileSync(o.stateFile, 'utf8')) as { watermarks?: Record<string, string> }).watermarks ?? {};
    } catch {
      watermarks = {}; // unreadable: the next pass looks at every candidate once
    }
  }
  let stopped = false;
  let running: Promise<RetentionReport | undefined> | undefined;
  let lastReport: RetentionReport | undefined;
  const pass = (): Promise<RetentionReport | undefined> => {
    if (running) return running;
    running = (async () => {
      try {
        const r = await runRetention(store, o.policy, { watermarks, stopped: () => stopped });
        watermarks = r.watermarks;
        lastReport = r;
        if (o.stateFile) {
          mkdirSync(dirname(o.stateFile), { recursive: true });
          writeFileSync(`${o.stateFile}.tmp`, JSON.stringify({ watermarks, last: { ...r, watermarks: undefined } }, null, 2));
          renameSync(`${o.stateFile}.tmp`, o.stateFile);
        }
        o.onReport?.(r);
        return r;
      } catch (err) {
        if (!stopped) o.onError?.(err);
        return undefined;
      } finally {
        running = undefined;
      }
    })();
    return running;
  };
  const first = setTimeout(() => void pass(), o.firstDelayMs ?? 10_000);
  first.unref();
  const timer = setInterval(() => void pass(), o.intervalMs);
  timer.unref();
  return {
    runNow: pass,
    last: () => lastReport,
    async stop() {
      stopped = true;
      clearTimeout(first);
      clearInterval(timer);
      await running;
    },
  };
}
