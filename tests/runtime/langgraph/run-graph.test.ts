import { join } from 'node:path';
import { Annotation, END, START, StateGraph, interrupt } from '@langchain/langgraph';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CheckpointError, createCheckpointer, isCheckpointError, runGraph, type KeelCheckpointSaver } from '../../../runtime/langgraph/index.ts';
import { tempDir } from '../../../testkit/common.ts';

// runGraph and the saver in-process, on a real SQLite file: approvals through interrupt(), the
// saver's typed errors, and channel values stored once per version.

const State = Annotation.Root({
  draft: Annotation<string>(),
  approved: Annotation<boolean>(),
  log: Annotation<string[]>({ reducer: (a, b) => a.concat(b), default: () => [] }),
});

let dir: ReturnType<typeof tempDir>;
let saver: KeelCheckpointSaver;
beforeEach(async () => {
  dir = tempDir('keel-lg-run-');
  saver = await createCheckpointer(`sqlite:${join(dir.path, 'keel.db')}`);
});
afterEach(async () => {
  await saver.close();
  dir.remove();
});

function approvalGraph(calls: string[]) {
  return new StateGraph(State)
    .addNode('compose', () => {
      calls.push('compose');
      return { draft: 'Refund approved', log: ['drafted'] };
    })
    .addNode('review', (s) => {
      calls.push('review');
      const ok = interrupt({ question: 'send this reply?', draft: s.draft }) as boolean;
      return { approved: ok, log: [ok ? 'approved' : 'rejected'] };
    })
    .addEdge(START, 'compose')
    .addEdge('compose', 'review')
    .addEdge('review', END)
    .compile({ checkpointer: saver });
}

describe('runGraph', () => {
  it('stops at interrupt() and resumes with the approval, without redoing earlier nodes', async () => {
    const calls: string[] = [];
    const graph = approvalGraph(calls);

    const first = await runGraph(graph, {}, { threadId: 'task-1' });
    expect(first.status).toBe('interrupted');
    expect(first.mode).toBe('started');
    expect(first.interrupts.map((i) => i.value)).toEqual([{ question: 'send this reply?', draft: 'Refund approved' }]);

    // A redelivery while the approval is pending changes nothing.
    const waiting = await runGraph(graph, {}, { threadId: 'task-1' });
    expect(waiting.status).toBe('interrupted');
    expect(calls).toEqual(['compose', 'review']);

    // A fresh graph object (another process, after a restart) on the same saver resumes it.
    const done = await runGraph(approvalGraph(calls), {}, { threadId: 'task-1', resume: true });
    expect(done).toMatchObject({ status: 'done', mode: 'resumed', values: { approved: true, log: ['drafted', 'approved'] } });
    expect(calls).toEqual(['compose', 'review', 'review']); // the interrupted node re-runs; draft does not
  });

  it('returns a finished thread without running it, or runs again with ifCompleted: run', async () => {
    const calls: string[] = [];
    const graph = approvalGraph(calls);
    await runGraph(graph, {}, { threadId: 't' });
    await runGraph(graph, {}, { threadId: 't', resume: false });
    const again = await runGraph(graph, {}, { threadId: 't' });
    expect(again).toMatchObject({ status: 'done', mode: 'completed-before', values: { approved: false } });
    expect(calls).toEqual(['compose', 'review', 'review']);
    const rerun = await runGraph(graph, {}, { threadId: 't', ifCompleted: 'run' });
    expect(rerun.mode).toBe('started');
    expect(rerun.status).toBe('interrupted');
    expect(calls).toEqual(['compose', 'review', 'review', 'compose', 'review']);
  });

  it('needs a thread id', async () => {
    const err = await runGraph(approvalGraph([]), {}, { threadId: '' }).catch((e: unknown) => e);
    expect(isCheckpointError(err, 'CHECKPOINT_INVALID_CONFIG')).toBe(true);
  });
});

describe('KeelCheckpointSaver', () => {
  it('rejects a graph run without thread_id, and writes without checkpoint_id (CHECKPOINT_INVALID_CONFIG)', async () => {
    const err = await approvalGraph([])
      .invoke({}, {})
      .catch((e: unknown) => e);
    expect(String(err)).toMatch(/thread_id/); // LangGraph checks this before the saver sees the call
    const direct = await saver.putWrites({ configurable: { thread_id: 't' } }, [['x', 1]], 'task').catch((e: unknown) => e);
    expect(direct).toBeInstanceOf(CheckpointError);
    expect((direct as CheckpointError).code).toBe('CHECKPOINT_INVALID_CONFIG');
  });

  it('rejects a bad state URL and a closed saver with typed errors', async () => {
    await expect(createCheckpointer('postgres://x')).rejects.toMatchObject({ code: 'CHECKPOINT_BAD_URL' });
    await saver.close();
    await expect(saver.getTuple({ configurable: { thread_id: 't' } })).rejects.toMatchObject({ code: 'CHECKPOINT_CLOSED' });
  });

  it('stores a channel value once per version, not once per checkpoint', async () => {
    const Big = Annotation.Root({
      doc: Annotation<string>(),
      steps: Annotation<number[]>({ reducer: (a, b) => a.concat(b), default: () => [] }),
    });
    const g = new StateGraph(Big)
      .addNode('one', () => ({ doc: 'x'.repeat(100_000), steps: [1] }))
      .addNode('two', () => ({ steps: [2] }))
      .addNode('three', () => ({ steps: [3] }))
      .addEdge(START, 'one')
      .addEdge('one', 'two')
      .addEdge('two', 'three')
      .addEdge('three', END)
      .compile({ checkpointer: saver });
    const r = await runGraph<typeof Big.State>(g, {}, { threadId: 'big' });
    expect(r.values.steps).toEqual([1, 2, 3]);
    const history = [];
    for await (const t of saver.list({ configurable: { thread_id: 'big' } })) history.push(t);
    expect(history.length).toBeGreaterThanOrEqual(4);
    expect(history[0]!.checkpoint.channel_values.doc).toHaveLength(100_000);
    const { DatabaseSync } = await import('node:sqlite');
    const db = new DatabaseSync(join(dir.path, 'keel.db'), { readOnly: true });
    try {
      const row = db.prepare("SELECT COUNT(*) AS n FROM lg_blobs WHERE thread_id = 'big' AND channel = 'doc'").get();
      expect(row?.n).toBe(1);
    } finally {
      db.close();
    }
  });
});
