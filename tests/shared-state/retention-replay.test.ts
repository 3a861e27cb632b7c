/**
 * What a replay says about a run whose task records retention deleted: the step is not replayed,
 * and the reason names retention (instead of "the step now does something it did not do").
 * In-process on SQLite: a finished run written as the workflow engine writes it, its task and
 * effect records as the runtime writes them.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { z } from 'zod';
import { loadConfig } from '../../config/index.ts';
import { defineAgent, defineCapability, replayRun } from '../../runtime/index.ts';
import { openStore, runRetention, type StateStore } from '../../shared-state/index.ts';
import { tempDir } from '../helpers/index.ts';
import { ALL_ENTITY_TYPES } from '../helpers/types.ts';

const dir = tempDir('keel-retention-replay-');
afterAll(() => dir.remove());

let sent = 0;
const notify = defineCapability({
  name: 'rr.notify',
  version: '1',
  input: z.object({ to: z.string() }),
  output: z.object({ id: z.string() }),
  async handler(ctx) {
    return { id: await ctx.effect('send', async () => `mail-${++sent}`) };
  },
});
const agent = defineAgent({ name: 'rr-agent', version: '1.0.0', capabilities: [notify] });

async function finishedRun(store: StateStore, runId: string, completedAt: string): Promise<void> {
  const taskId = `${runId}.notify.1`;
  for (const [key, result] of [[`effect:rr.notify:${taskId}:send`, 'mail-0'], [`task:rr.notify:${taskId}`, { id: 'mail-0' }]] as const) {
    const c = await store.claim(key);
    if (c.status !== 'claimed') throw new Error('expected a claim');
    await store.complete(key, c.token, result);
  }
  await store.append('workflow_run', runId, 0, [{ type: 'created', data: {
    workflow: 'rr', version: 1, definition: { name: 'rr', version: 1, steps: { notify: { capability: 'rr.notify', input: { to: '$.input.to' } } } },
    status: 'completed', input: { to: 'a@example.com' }, spentUsd: 0, completedOrder: ['notify'], compensations: [], nextWakeAt: null, startedAt: completedAt, finishedAt: completedAt,
    steps: { notify: { status: 'completed', attempt: 1, taskId, input: { to: 'a@example.com' }, scheduledAt: completedAt, completedAt, output: { id: 'mail-0' } } },
  } }], { actor: { kind: 'system', id: 'test' } });
  for (let p = await store.pendingEvents(); p.length; p = await store.pendingEvents()) await store.markPublished(p.map((e) => e.eventId));
}

describe('replay after retention', () => {
  it('replays a run whose records are kept; names retention for a step whose records were deleted', async () => {
    const store = await openStore(`sqlite:${join(dir.path, 'replay.db')}`, { types: ALL_ENTITY_TYPES });
    try {
      const hourAgo = new Date(Date.now() - 3_600_000).toISOString();
      await finishedRun(store, 'run-kept', hourAgo);
      const config = { ...loadConfig({}), retention: { runsMs: 60_000, intervalMs: 3_600_000 } };
      const kept = await replayRun(store, 'run-kept', [agent], config);
      expect(kept.steps).toEqual([expect.objectContaining({ step: 'notify', result: 'same', effectsReadBack: 1 })]);
      expect(sent).toBe(0);
      // the engine's pass, a minute's retention: the run compacted, its records deleted
      const r = await runRetention(store, { histories: [{ entityType: 'workflow_run', filter: { status: 'completed' }, olderThanMs: 60_000 }], idempotencyOlderThanMs: 60_000 }, { now: new Date(Date.now() + 120_000) });
      expect(r.histories[0]!.compacted).toBe(1);
      expect(r.idempotency).toEqual({ completed: 2, abandoned: 0 });
      const gone = await replayRun(store, 'run-kept', [agent], config);
      expect(gone.steps).toEqual([expect.objectContaining({ step: 'notify', result: 'not_replayed', reason: expect.stringContaining('deleted by retention') })]);
      expect(gone.divergences).toBe(0);
      expect(sent).toBe(0);
    } finally {
      await store.close();
    }
  });
});
