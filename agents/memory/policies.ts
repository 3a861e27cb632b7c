/**
 * Reading and changing the fidelity policy (memory/policy.ts) as it is kept in shared state: one
 * `memory_policy` entity per governed entity type. A change is an event on that entity (who and
 * when, the previous value in its history) and a record in the audit log; it applies forward.
 */
import { KeelError } from '../../config/index.ts';
import type { Entity, StateStore, Actor } from '../../shared-state/index.ts';
import type { Feature } from '../../runtime/index.ts';
import { effectivePolicy, policyProblems, type EffectivePolicy, type StoredPolicy } from '../../memory/index.ts';
import { MEMORY_POLICY } from './entities.ts';

type Get = (entityType: string, entityId: string) => Promise<Entity | null>;

/** The entity types that features remember (those with memory rules), sorted. */
export function memoryRuleTypes(features: readonly Feature[]): string[] {
  return [...new Set(features.flatMap((f) => (f.memory ?? []).map((r) => r.event.split('.')[0]!)))].sort();
}

/** The policy in force for each type: what is stored, else the defaults. */
export async function policiesOf(get: Get, types: readonly string[]): Promise<Record<string, EffectivePolicy>> {
  const out: Record<string, EffectivePolicy> = {};
  for (const t of types) {
    const e = await get(MEMORY_POLICY, t);
    out[t] = effectivePolicy(t, e && !e.deleted ? (e.state as StoredPolicy) : null);
  }
  return out;
}

export interface PolicyChange {
  entityType: string;
  rawDays?: number;
  retainDays?: number;
  optOut?: boolean;
}

/** A policy change that makes no sense (negative days, retention shorter than the raw window). */
export class MemoryPolicyError extends KeelError {
  readonly problems: string[];
  /** printed by `keel … --json` */
  readonly details: Record<string, unknown>;
  constructor(problems: string[]) {
    super('MEMORY_BAD_POLICY', `the memory policy change is refused: ${problems.join('; ')}`);
    this.name = 'MemoryPolicyError';
    this.problems = problems;
    this.details = { problems };
  }
}

/** Stores a policy change (an event on `memory_policy/<type>`) and audits it; returns the policy before and after. */
export async function setPolicy(store: StateStore, change: PolicyChange, actor: Actor): Promise<{ before: EffectivePolicy; after: EffectivePolicy; changed: boolean }> {
  const current = await store.get(MEMORY_POLICY, change.entityType);
  const prev = (current && !current.deleted ? current.state : {}) as StoredPolicy & { entityType?: string };
  const before = effectivePolicy(change.entityType, current && !current.deleted ? prev : null);
  const patch: Record<string, unknown> = {};
  for (const k of ['rawDays', 'retainDays', 'optOut'] as const) if (change[k] !== undefined && change[k] !== prev[k]) patch[k] = change[k];
  const next = { ...before, ...patch };
  const problems = policyProblems(next);
  if (problems.length) throw new MemoryPolicyError(problems);
  if (Object.keys(patch).length === 0) return { before, after: before, changed: false };
  const at = new Date().toISOString();
  const by = `${actor.kind}:${actor.id}`;
  const meta = { actor };
  if (!current) await store.append(MEMORY_POLICY, change.entityType, 0, [{ type: 'created', data: { entityType: change.entityType, ...patch, updatedBy: by, updatedAt: at } }], meta);
  else await store.append(MEMORY_POLICY, change.entityType, current.version, [{ type: 'updated', data: { ...patch, updatedBy: by, updatedAt: at } }], meta);
  const after = effectivePolicy(change.entityType, { ...prev, ...patch, updatedBy: by, updatedAt: at });
  await store.appendAudit({
    actor,
    action: 'memory.policy.changed',
    subject: `${MEMORY_POLICY}/${change.entityType}`,
    details: { before: { rawDays: before.rawDays, retainDays: before.retainDays, optOut: before.optOut }, after: { rawDays: after.rawDays, retainDays: after.retainDays, optOut: after.optOut }, appliesFrom: at },
  });
  return { before, after, changed: true };
}
