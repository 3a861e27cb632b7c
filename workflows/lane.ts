import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { EntityTypeDef, EventInput, State } from '../shared-state/index.ts';

/**
 * A concurrency key's lane (`concurrencyKey` in a workflow definition): which run of the key
 * holds it, whether the holder has committed (started its `supersede.before` step), and who
 * waits. A `workflow_lane` entity, so every change is an append with the expected version:
 * two runs joining at once are ordered by the store, with no coordinator. The decisions are
 * pure functions of the lane's state; the engine applies them (workflows/engine.ts).
 */
export interface LaneState extends State {
  workflow: string;
  key: string;
  holder: string | null;
  committed: boolean;
  /** runs waiting for the lane, oldest first */
  waiting: string[];
  /** the last runs superseded here, newest last, with the run that superseded each */
  superseded: Array<{ runId: string; by: string }>;
}

export const LANE = 'workflow_lane';
const MAX_SUPERSEDED = 50;

/** The lane's id: one per workflow and key. */
export const laneIdOf = (workflow: string, key: string) => `lane-${createHash('sha256').update(`${workflow}\n${key}`).digest('hex').slice(0, 32)}`;

const runEvent = z.object({ runId: z.string().min(1) }).loose();

export function reduceLane(state: State, e: { type: string; data: unknown }): State {
  const st = state as LaneState;
  const d = e.data as { runId: string; by?: string };
  const without = (xs: string[]) => xs.filter((x) => x !== d.runId);
  switch (e.type) {
    case 'acquired':
      return { ...st, holder: d.runId, committed: false, waiting: without(st.waiting) };
    case 'queued':
      return st.waiting.includes(d.runId) ? st : { ...st, waiting: [...st.waiting, d.runId] };
    case 'committed':
      return st.holder === d.runId ? { ...st, committed: true } : st;
    case 'superseded':
    case 'released': {
      const held = st.holder === d.runId;
      const next: LaneState = { ...st, holder: held ? null : st.holder, committed: held ? false : st.committed, waiting: without(st.waiting) };
      if (e.type === 'superseded') next.superseded = [...(st.superseded ?? []), { runId: d.runId, by: d.by ?? '' }].slice(-MAX_SUPERSEDED);
      return next;
    }
    default:
      return state;
  }
}

export const workflowLaneType: EntityTypeDef = {
  name: LANE,
  schemaVersion: 1,
  schema: z
    .object({
      workflow: z.string().min(1),
      key: z.string().min(1),
      holder: z.string().nullable(),
      committed: z.boolean(),
      waiting: z.array(z.string()),
      superseded: z.array(z.object({ runId: z.string(), by: z.string() })).default([]),
    })
    .loose() as unknown as z.ZodType<State>,
  searchFields: ['workflow', 'key', 'holder'],
  events: { acquired: runEvent, queued: runEvent, committed: runEvent, superseded: runEvent, released: runEvent },
  reduce: reduceLane,
};

export const emptyLane = (workflow: string, key: string): LaneState => ({ workflow, key, holder: null, committed: false, waiting: [], superseded: [] });

/** What a lane change decided, for the engine to carry out on the runs concerned. */
export interface LaneDecision {
  events: EventInput[];
  state: LaneState;
  /** runs that must end superseded (by `by`) */
  superseded: string[];
  /** runs (other than the one asking) that now hold the lane and may carry on */
  activated: string[];
}

class LanePlanner {
  readonly events: EventInput[] = [];
  readonly superseded: string[] = [];
  readonly activated: string[] = [];
  state: LaneState;
  constructor(state: LaneState) {
    this.state = { ...state, superseded: state.superseded ?? [] };
  }
  emit(type: string, data: { runId: string; by?: string }): void {
    this.events.push({ type, data });
    this.state = reduceLane(this.state, { type, data }) as LaneState;
    if (type === 'superseded') this.superseded.push(data.runId);
    if (type === 'acquired') this.activated.push(data.runId);
  }
  decision(asking?: string): LaneDecision {
    return { events: this.events, state: this.state, superseded: this.superseded, activated: this.activated.filter((r) => r !== asking) };
  }
}

/**
 * A run asks for the lane. `holderLive` is false when the recorded holder has already finished
 * (its release was lost): it is released first. With `supersede`, the newest run wins: the
 * holder is superseded unless it has committed, and older waiting runs are superseded;
 * without it, runs take the lane one after another in arrival order.
 */
export function planJoin(lane: LaneState, runId: string, o: { supersede: boolean; holderLive: boolean }): LaneDecision & { acquired: boolean; supersededBy?: string } {
  const p = new LanePlanner(lane);
  if (p.state.holder === runId) return { ...p.decision(runId), acquired: true };
  // a newer run superseded this one here, and the run has not heard yet
  const gone = p.state.superseded.find((x) => x.runId === runId);
  if (gone) return { ...p.decision(runId), acquired: false, supersededBy: gone.by };
  if (p.state.holder && !o.holderLive) p.emit('released', { runId: p.state.holder });
  const at = p.state.waiting.indexOf(runId);
  if (o.supersede) {
    for (const w of at >= 0 ? p.state.waiting.slice(0, at) : [...p.state.waiting]) p.emit('superseded', { runId: w, by: runId });
    if (p.state.holder && p.state.committed) p.emit('queued', { runId });
    else {
      if (p.state.holder) p.emit('superseded', { runId: p.state.holder, by: runId });
      p.emit('acquired', { runId });
    }
  } else if (!p.state.holder) {
    const first = p.state.waiting[0];
    if (first && first !== runId) {
      p.emit('acquired', { runId: first });
      p.emit('queued', { runId });
    } else p.emit('acquired', { runId });
  } else p.emit('queued', { runId });
  return { ...p.decision(runId), acquired: p.state.holder === runId };
}

/** A run leaves the lane (it finished); the next one takes it (with `supersede`: the newest, the others are superseded). */
export function planRelease(lane: LaneState, runId: string, o: { supersede: boolean }): LaneDecision {
  const p = new LanePlanner(lane);
  if (p.state.holder !== runId && !p.state.waiting.includes(runId)) return p.decision();
  const held = p.state.holder === runId;
  p.emit('released', { runId });
  if (held && p.state.waiting.length) {
    if (o.supersede) {
      const newest = p.state.waiting[p.state.waiting.length - 1]!;
      for (const w of p.state.waiting.slice(0, -1)) p.emit('superseded', { runId: w, by: newest });
      p.emit('acquired', { runId: newest });
    } else p.emit('acquired', { runId: p.state.waiting[0]! });
  }
  return p.decision();
}

/** The holder starts its point of no return: from now on newer runs wait for it. Refused when it no longer holds the lane. */
export function planCommit(lane: LaneState, runId: string): { events: EventInput[]; ok: boolean } {
  if (lane.holder !== runId) return { events: [], ok: false };
  return { events: lane.committed ? [] : [{ type: 'committed', data: { runId } }], ok: true };
}
