import type { RunnableConfig } from '@langchain/core/runnables';
import { Command, type Interrupt, type StateSnapshot } from '@langchain/langgraph';
import { CheckpointError } from './errors.ts';

/** What `runGraph` needs of a compiled graph (any `StateGraph(...).compile({ checkpointer })`). */
export interface CheckpointedGraph {
  invoke(input: unknown, config?: RunnableConfig): Promise<unknown>;
  getState(config: RunnableConfig): Promise<StateSnapshot>;
}

export interface RunGraphOptions {
  /**
   * The thread whose checkpoints this run reads and writes. For a task handler use the task's
   * idempotency key: a redelivered task then resumes its own graph instead of starting over.
   */
  threadId: string;
  /** aborts the run between (and, where nodes honour it, inside) steps */
  signal?: AbortSignal;
  /** answer to a pending `interrupt()` (an approval): resumes the graph with `new Command({ resume })` */
  resume?: unknown;
  /**
   * What to do when the thread already ran to its end: `'return'` (default) gives back the stored
   * final values without running anything (a redelivered, already-finished task); `'run'` starts a
   * new run on the thread with `input` (a conversation thread that keeps its history).
   */
  ifCompleted?: 'return' | 'run';
  /** more `configurable` keys for the graph's nodes */
  configurable?: Record<string, unknown>;
  /** LangGraph's step limit (default LangGraph's, 25) */
  recursionLimit?: number;
  /**
   * When checkpoints are written (default `'sync'`): `'sync'` persists each step's checkpoint
   * before the next step starts, so a process killed in a node resumes at that node; LangGraph's
   * own default `'async'` overlaps the write with the next step (a kill may then redo one step);
   * `'exit'` writes only when the run ends or is interrupted.
   */
  durability?: 'sync' | 'async' | 'exit';
}

export interface GraphRunResult<S = Record<string, unknown>> {
  /** `done`: the graph reached its end; `interrupted`: it waits for `resume` (see `interrupts`) */
  status: 'done' | 'interrupted';
  /**
   * `started`: a first run on the thread (or `ifCompleted: 'run'`); `resumed`: continued from the
   * last checkpoint of a run that died or was interrupted; `completed-before`: nothing ran, the
   * thread had finished already.
   */
  mode: 'started' | 'resumed' | 'completed-before';
  /** the graph state after the run */
  values: S;
  /** pending `interrupt()` payloads when `status` is `interrupted` */
  interrupts: Interrupt[];
  /** id of the thread's latest checkpoint */
  checkpointId: string | undefined;
}

/**
 * Runs a checkpointed graph on one thread so that running it again is safe:
 * - no checkpoint yet: invokes it with `input`;
 * - a run died between nodes (crash, SIGKILL, redelivery): resumes from the last checkpoint
 *   (`invoke(null)`), so finished nodes do not run again;
 * - an `interrupt()` is pending: resumes it with `opts.resume`, or returns `interrupted` unchanged
 *   when no answer is given;
 * - the thread already finished: returns its final values (or runs again, `ifCompleted: 'run'`).
 */
export async function runGraph<S = Record<string, unknown>>(graph: CheckpointedGraph, input: unknown, opts: RunGraphOptions): Promise<GraphRunResult<S>> {
  if (!opts.threadId) throw new CheckpointError('CHECKPOINT_INVALID_CONFIG', 'runGraph needs a threadId (for a task: its idempotency key)');
  const config: RunnableConfig & { durability: 'sync' | 'async' | 'exit' } = {
    configurable: { ...opts.configurable, thread_id: opts.threadId },
    durability: opts.durability ?? 'sync',
  };
  if (opts.signal) config.signal = opts.signal;
  if (opts.recursionLimit !== undefined) config.recursionLimit = opts.recursionLimit;

  const before = await graph.getState(config);
  const hasCheckpoint = before.config.configurable?.checkpoint_id !== undefined;
  const pending = pendingInterrupts(before);
  let mode: GraphRunResult['mode'];
  if (opts.resume !== undefined) {
    mode = 'resumed';
    await graph.invoke(new Command({ resume: opts.resume }), config);
  } else if (!hasCheckpoint) {
    mode = 'started';
    await graph.invoke(input, config);
  } else if (pending.length > 0) {
    return { status: 'interrupted', mode: 'resumed', values: before.values as S, interrupts: pending, checkpointId: checkpointIdOf(before) };
  } else if (before.next.length > 0) {
    mode = 'resumed';
    await graph.invoke(null, config);
  } else if ((opts.ifCompleted ?? 'return') === 'return') {
    return { status: 'done', mode: 'completed-before', values: before.values as S, interrupts: [], checkpointId: checkpointIdOf(before) };
  } else {
    mode = 'started';
    await graph.invoke(input, config);
  }
  const after = await graph.getState(config);
  const interrupts = pendingInterrupts(after);
  return { status: interrupts.length > 0 ? 'interrupted' : 'done', mode, values: after.values as S, interrupts, checkpointId: checkpointIdOf(after) };
}

function pendingInterrupts(s: StateSnapshot): Interrupt[] {
  return s.tasks.flatMap((t) => t.interrupts);
}

function checkpointIdOf(s: StateSnapshot): string | undefined {
  const id: unknown = s.config.configurable?.checkpoint_id;
  return typeof id === 'string' ? id : undefined;
}
