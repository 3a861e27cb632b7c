/**
 * Policy changes in the audit log. Policies are environment variables (`KEEL_POLICY_*`), so a
 * change happens between two engine starts: at start the engine compares its effective policies
 * with the last `policy.changed` record and appends a new one (actor `system:engine`, before
 * and after) when they differ. The first start records the policies it starts with.
 */
import { trace } from '@opentelemetry/api';
import type { Logger } from 'pino';
import type { AuditRecord, StateStore } from '../shared-state/index.ts';

export const POLICY_CHANGED = 'policy.changed';

type Policies = Readonly<Record<string, string>>;

const sorted = (p: Policies): Record<string, string> => Object.fromEntries(Object.entries(p).sort(([a], [b]) => a.localeCompare(b)));

/** The policies the last `policy.changed` record left in effect (null: never recorded). */
export async function lastRecordedPolicies(store: Pick<StateStore, 'exportAudit'>): Promise<Record<string, string> | null> {
  let last: Record<string, string> | null = null;
  for (let since = 0; ; ) {
    const page = await store.exportAudit({ sinceSeq: since, limit: 5_000 });
    for (const r of page) if (r.action === POLICY_CHANGED && r.details.after && typeof r.details.after === 'object') last = r.details.after as Record<string, string>;
    if (page.length < 5_000) return last;
    since = page.at(-1)!.seq;
  }
}

/** Appends `policy.changed` when the effective policies differ from the last recorded ones; returns the record, or null. */
export async function auditPolicies(store: Pick<StateStore, 'exportAudit' | 'appendAudit'>, policies: Policies, log?: Pick<Logger, 'info' | 'error'>): Promise<AuditRecord | null> {
  try {
    const before = await lastRecordedPolicies(store);
    const after = sorted(policies);
    if (before && JSON.stringify(sorted(before)) === JSON.stringify(after)) return null;
    const traceId = trace.getActiveSpan()?.spanContext().traceId;
    const added = Object.keys(after).filter((k) => !before || !(k in before));
    const removed = before ? Object.keys(before).filter((k) => !(k in after)) : [];
    const changed = before ? Object.keys(after).filter((k) => k in before && before[k] !== after[k]) : [];
    const rec = await store.appendAudit({
      actor: { kind: 'system', id: 'engine' },
      action: POLICY_CHANGED,
      subject: 'policy/workflows',
      details: { before, after, added, removed, changed, source: 'KEEL_POLICY_*', ...(traceId ? { traceId } : {}) },
    });
    log?.info({ before, after }, 'workflow policies changed since the last recorded start: audited');
    return rec;
  } catch (err) {
    // the engine starts anyway; the next start compares again
    log?.error({ err }, 'policy change could not be audited');
    return null;
  }
}
