/**
 * LangGraph agents on Keel's shared state: a checkpointer on SQLite or MongoDB (whatever
 * `KEEL_STATE` names) so an agent process killed mid-graph resumes at its last checkpoint, and
 * `runGraph`, which makes running a graph for a redelivered task safe.
 *
 * ```ts
 * import { Annotation, StateGraph, START, END, interrupt } from '@langchain/langgraph';
 * import { createCheckpointer, runGraph } from './runtime/langgraph/index.ts';
 *
 * const checkpointer = await createCheckpointer(cfg.state);       // sqlite:/path/keel.db or mongodb://...
 * const State = Annotation.Root({ draft: Annotation<string>(), approved: Annotation<boolean>() });
 * const graph = new StateGraph(State)
 *   .addNode('compose', async (s) => ({ draft: await writeReply(s) }))
 *   .addNode('review', (s) => ({ approved: interrupt({ draft: s.draft }) as boolean }))
 *   .addEdge(START, 'compose').addEdge('compose', 'review').addEdge('review', END)
 *   .compile({ checkpointer });
 *
 * // in a capability's handler(ctx): thread = the task's idempotency key, so a redelivery resumes this run
 * const r = await runGraph(graph, ctx.input, { threadId: ctx.envelope.idempotencyKey, signal: ctx.signal });
 * if (r.status === 'interrupted') await requestApproval(r.interrupts);      // later: runGraph(..., { resume: true })
 * ```
 *
 * See docs/langgraph.md.
 */
export { KeelCheckpointSaver } from './saver.ts';
export { createCheckpointer } from './checkpointer.ts';
export type { CheckpointerOptions } from './checkpointer.ts';
export type { SqliteCheckpointOptions } from './sqlite-backend.ts';
export type { MongoCheckpointOptions } from './mongo-backend.ts';

export { runGraph } from './run-graph.ts';
export type { CheckpointedGraph, RunGraphOptions, GraphRunResult } from './run-graph.ts';

export { CheckpointError, isCheckpointError } from './errors.ts';
export type { CheckpointErrorCode } from './errors.ts';

export { defineGraphCapability, graphTask } from './graph-capability.ts';
export type { GraphCapabilityOptions } from './graph-capability.ts';
