import type { StateStore } from '../shared-state/index.ts';
import { WorkflowError } from './errors.ts';
import { LANE, laneIdOf, type LaneState } from './lane.ts';
import type { RunState } from './run-entity.ts';

const RUN = 'workflow_run';
const MAX_CANDIDATES = 10;

function ambiguous(kind: string, prefix: string, ids: string[]): WorkflowError {
  const shown = ids.slice(0, MAX_CANDIDATES);
  return new WorkflowError('WORKFLOW_AMBIGUOUS_ID', `${kind} id prefix '${prefix}' is ambiguous: it matches ${ids.length > MAX_CANDIDATES ? `${MAX_CANDIDATES}+` : ids.length} ${kind}s:\n  ${shown.join('\n  ')}${ids.length > MAX_CANDIDATES ? '\n  ...' : ''}\ngive more characters`, { candidates: shown });
}

/**
 * A run id from a unique prefix of it (like git): the id itself when such a run exists, else
 * the one run whose id starts with it. None: WORKFLOW_RUN_NOT_FOUND; several: WORKFLOW_AMBIGUOUS_ID
 * listing them.
 */
export async function resolveRunId(store: StateStore, idOrPrefix: string): Promise<string> {
  if (await store.get(RUN, idOrPrefix)) return idOrPrefix;
  if (idOrPrefix.length > 0) {
    const page = await store.query(RUN, { filter: { id: { $gte: idOrPrefix, $lt: `${idOrPrefix}\uffff` } }, sort: { id: 'asc' }, limit: MAX_CANDIDATES + 1 });
    const ids = page.items.map((e) => e.entityId).filter((id) => id.startsWith(idOrPrefix));
    if (ids.length === 1) return ids[0]!;
    if (ids.length > 1) throw ambiguous('run', idOrPrefix, ids);
  }
  throw new WorkflowError('WORKFLOW_RUN_NOT_FOUND', `no workflow run '${idOrPrefix}' (see \`keel runs\`)`);
}

/** An approval id from a unique prefix of it, like {@link resolveRunId}. */
export async function resolveApprovalId(store: StateStore, idOrPrefix: string): Promise<string> {
  if (await store.getApproval(idOrPrefix)) return idOrPrefix;
  if (idOrPrefix.length > 0) {
    const ids = (await store.listApprovals({ limit: 10_000 })).map((a) => a.id).filter((id) => id.startsWith(idOrPrefix)).sort();
    if (ids.length === 1) return ids[0]!;
    if (ids.length > 1) throw ambiguous('approval', idOrPrefix, ids);
  }
  throw new WorkflowError('WORKFLOW_APPROVAL_NOT_FOUND', `no approval '${idOrPrefix}' (see \`keel approvals\`)`);
}

/**
 * What replaced a superseded run's approval: the run now holding its concurrency key's lane (or
 * the newest waiting for it), and that run's pending approval when it has one yet.
 */
export async function currentApprovalOf(store: StateStore, runId: string, st?: RunState): Promise<{ approvalId?: string; runId?: string }> {
  const state = st ?? (await store.get<RunState>(RUN, runId))?.state;
  const key = state?.lane?.key;
  if (!state || !key) return {};
  const lane = await store.get<LaneState>(LANE, laneIdOf(state.workflow, key));
  const holder = lane?.state.holder ?? lane?.state.waiting.at(-1) ?? state.supersededBy;
  if (!holder || holder === runId) return {};
  const h = await store.get<RunState>(RUN, holder);
  const pending = Object.values(h?.state.steps ?? {}).find((s) => s.status === 'waiting_approval' && s.approvalId);
  return { runId: holder, ...(pending?.approvalId ? { approvalId: pending.approvalId } : {}) };
}
