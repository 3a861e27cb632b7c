import { loadConfig } from '../../config/index.ts';
import { PermanentError } from '../../bus/index.ts';
import { defineCapability, type Capability, type TaskContext } from '../index.ts';
import { createCheckpointer } from './checkpointer.ts';
import { runGraph, type CheckpointedGraph } from './run-graph.ts';
import type { KeelCheckpointSaver } from './saver.ts';

/** A capability's declaration (as for `defineCapability`), with a graph in place of the handler. */
export interface GraphCapabilityOptions<I, O> extends Omit<Capability<I, O>, 'handler'> {
  /** builds the compiled graph, once per process, with the checkpointer on the shared state */
  graph: (checkpointer: KeelCheckpointSaver) => CheckpointedGraph | Promise<CheckpointedGraph>;
  /** the graph's input from the task (default: the task input) */
  toInput?: (input: I, ctx: TaskContext<I>) => unknown;
  /** the capability's output from the graph's final values (default: the values) */
  toOutput?: (values: Record<string, unknown>, ctx: TaskContext<I>) => O;
  /** where checkpoints live (default KEEL_STATE) */
  stateUrl?: string;
}

/**
 * A capability whose handler is a compiled LangGraph graph. Its thread is the task's
 * idempotency key and its checkpoints live in the shared state, so a task redelivered after
 * its process died resumes at the last finished node instead of starting over.
 */
export function defineGraphCapability<I, O>(o: GraphCapabilityOptions<I, O>): Capability<I, O> {
  let graph: Promise<CheckpointedGraph> | undefined;
  const getGraph = () =>
    (graph ??= (async () => {
      const saver = await createCheckpointer(o.stateUrl ?? loadConfig().state);
      return o.graph(saver);
    })().catch((err: unknown) => {
      graph = undefined; // a failed build is tried again on the next task
      throw err;
    }));
  const { graph: _graph, toInput: _toInput, toOutput: _toOutput, stateUrl: _stateUrl, ...declaration } = o;
  return defineCapability<I, O>({
    ...declaration,
    async handler(ctx) {
      const g = await getGraph();
      const r = await runGraph(g, o.toInput ? o.toInput(ctx.input, ctx) : ctx.input, { threadId: ctx.envelope.idempotencyKey, signal: ctx.signal });
      if (r.status === 'interrupted') {
        throw new PermanentError(`graph of ${o.name} stopped at interrupt() (${JSON.stringify(r.interrupts).slice(0, 200)}); answer it with runGraph(..., { resume }) from a handler that owns the approval`, { code: 'GRAPH_INTERRUPTED' });
      }
      return o.toOutput ? o.toOutput(r.values as Record<string, unknown>, ctx) : (r.values as O);
    },
  });
}
