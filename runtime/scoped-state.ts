import type { StateStore, EventInput, Entity, AppendResult, AuditRecord, CommittedEvent, EntityQuery, QueryPage, EventMeta } from '../shared-state/index.ts';
import { PermissionDeniedError } from './errors.ts';

/**
 * The state store as one task sees it: only the entity types its capability declared, and
 * every append stamped with the agent as actor, the task as cause, its correlation and trace ids.
 */
export interface ScopedState {
  get<S = Record<string, unknown>>(entityType: string, entityId: string): Promise<Entity<S> | null>;
  getAt<S = Record<string, unknown>>(entityType: string, entityId: string, version: number): Promise<Entity<S> | null>;
  history(entityType: string, entityId: string): Promise<CommittedEvent[]>;
  query<S = Record<string, unknown>>(entityType: string, q?: EntityQuery): Promise<QueryPage<S>>;
  append<S = Record<string, unknown>>(entityType: string, entityId: string, expectedVersion: number, events: EventInput[]): Promise<AppendResult<S>>;
  /** Appends an audit record with the agent as actor and the task's trace id in `details.traceId` (absent where a task has no audit log, e.g. replays). */
  audit?(action: string, subject: string, details?: Record<string, unknown>): Promise<AuditRecord>;
}

export function scopeState(store: StateStore, agent: string, allowed: readonly string[], meta: Omit<EventMeta, 'actor'>): ScopedState {
  const allow = new Set(allowed);
  const check = (t: string) => {
    if (!allow.has(t)) throw new PermissionDeniedError(agent, `entity type '${t}'`);
  };
  return {
    get: async (t, id) => (check(t), store.get(t, id)),
    getAt: async (t, id, v) => (check(t), store.getAt(t, id, v)),
    history: async (t, id) => (check(t), store.history(t, id)),
    query: async (t, q) => (check(t), store.query(t, q)),
    append: async (t, id, expected, events) => (check(t), store.append(t, id, expected, events, { ...meta, actor: { kind: 'agent', id: agent } })),
    audit: async (action, subject, details = {}) => store.appendAudit({ actor: { kind: 'agent', id: agent }, action, subject, details: { ...details, ...(meta.traceId ? { traceId: meta.traceId } : {}) } }),
  };
}
