import { AsyncLocalStorage } from 'node:async_hooks';
import type { BaseCheckpointSaver } from '@langchain/langgraph';
import { loadConfig } from '../../config/index.ts';
import { PermanentError } from '../../bus/index.ts';
import { defineCapability, type Capability, type TaskContext } from '../define.ts';
import type { CheckpointedGraph } from './run-graph.ts';
import { AgentError } from '../errors.ts';

/** A capability's declaration (as for `defineCapability`), with a graph in place of the handler. */
export interface GraphCapabilityOptions<I, O> extends Omit<Capability<I, O>, 'handler'> {
  /**
   * builds the compiled graph with the given checkpointer: once per process with the one on the
   * shared state; during `keel replay`, once per replayed task with an in-memory one (the replay
   * runs every node again, with model answers and side effects read back from the log)
   */
  graph: (checkpointer: BaseCheckpointSaver) => CheckpointedGraph | Promise<CheckpointedGraph>;
  /** the graph's input from the task (default: the task input) */
  toInput?: (input: I, ctx: TaskContext<I>) => unknown;
  /** the capability's output from the graph's final values (default: the values) */
  toOutput?: (values: Record<string, unknown>, ctx: TaskContext<I>) => O;
  /** where checkpoints live (default KEEL_STATE) */
  stateUrl?: string;
}

const running = new AsyncLocalStorage<TaskContext<unknown>>();

/**
 * The task a graph node runs for (its `ctx.llm`, `ctx.state`, `ctx.effect` …): call it inside a
 * node of a graph run by {@link defineGraphCapability}. Throws outside one.
 */
export function graphTask<I = unknown>(): TaskContext<I> {
  const ctx = running.getStore();
  if (!ctx) throw new AgentError('AGENT_UNKNOWN', 'graphTask() is only available inside a node of a graph run by defineGraphCapability');
  return ctx as TaskContext<I>;
}

/**
 * A capability whose handler is a compiled LangGraph graph. Its thread is the task's
 * idempotency key and its checkpoints live in the shared state, so a task redelivered after
 * its process died resumes at the last finished node instead of starting over.
 */
export function defineGraphCapability<I, O>(o: GraphCapabilityOptions<I, O>): Capability<I, O> {
  let graph: Promise<CheckpointedGraph> | undefined;
  const getGraph = (stateUrl: string) =>
    (graph ??= (async () => {
      // the checkpointer (and LangGraph) load with the first task, not in every idle agent process
      const { createCheckpointer } = await import('./checkpointer.ts');
      const saver = await createCheckpointer(o.stateUrl ?? stateUrl);
      return o.graph(saver);
    })().catch((err: unknown) => {
      graph = undefined; // a failed build is tried again on the next task
      throw err;
    }));
  const { graph: _graph, toInput: _toInput, toOutput: _toOutput, stateUrl: _stateUrl, ...declaration } = o;
  return defineCapability<I, O>({
    ...declaration,
    async handler(ctx) {
      // a replay runs the nodes again on a fresh in-memory thread (the stored one has finished)
      const g = ctx.replay ? await o.graph(new (await import('@langchain/langgraph')).MemorySaver()) : await getGraph(ctx.config.state ?? loadConfig().state);
      const input = o.toInput ? o.toInput(ctx.input, ctx) : ctx.input;
      const { runGraph } = await import('./run-graph.ts');
      const r = await running.run(ctx as TaskContext<unknown>, () => runGraph(g, input, { threadId: ctx.envelope.idempotencyKey, signal: ctx.signal }));
      if (r.status === 'interrupted') {
        throw new PermanentError(`graph of ${o.name} stopped at interrupt() (${JSON.stringify(r.interrupts).slice(0, 200)}); answer it with runGraph(..., { resume }) from a handler that owns the approval`, { code: 'GRAPH_INTERRUPTED' });
      }
      return o.toOutput ? o.toOutput(r.values as Record<string, unknown>, ctx) : (r.values as O);
    },
  });
}
