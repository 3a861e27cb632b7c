/**
 * The writer's graph after a failure between its nodes: the task delivered again resumes at the
 * node that failed (the draft is not written, nor paid for, twice), and that node's model call is
 * its own (keyed by the node), not the answer the draft node recorded. Real SQLite checkpoints,
 * the scripted model behind the model registry.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { createCapabilityTestKit, type CapabilityTestKit } from '../../../runtime/index.ts';
import { createModelRegistry } from '../../../models/index.ts';
import { LAUNCH_ENTITY_TYPES } from '../../../agents/launch/index.ts';
import { write } from '../../../agents/launch/writer.ts';
import { tempDir } from '../../../testkit/common.ts';

const PAGE = '# Kite Kit\n\n## Fly it today\n\nA kite you build in ten minutes.\n\n### Why parents like it\n\n- No glue\n\nPrice: €24.\n\n**Get Kite Kit today.**';

describe('a LangGraph capability resumed after a failure between nodes', () => {
  let kit: CapabilityTestKit;
  const dir = tempDir('keel-graph-resume-');
  beforeAll(async () => {
    const models = createModelRegistry(
      { KEEL_MODEL_LARGE: 'scripted:w', KEEL_MODEL_MAX_RETRIES: '0' },
      { scripts: { w: [{ content: PAGE }, { content: '', error: { status: 500, message: 'provider down' } }, { content: 'OK' }] } },
    );
    kit = await createCapabilityTestKit({ entities: LAUNCH_ENTITY_TYPES, agent: 'writer', models, config: { state: `sqlite:${join(dir.path, 'keel.db')}` } });
    await kit.store.append('product', 'kit', 0, [{ type: 'created', data: { name: 'Kite Kit', pitch: 'A kite you build in ten minutes.', audience: 'parents', price: { amount: 24, currency: 'EUR' } } }], { actor: { kind: 'human', id: 'op' } });
  });
  afterAll(async () => {
    await kit.close();
    dir.remove();
  });

  it('resumes at the self-review node, whose call is its own; the draft is written and paid for once', async () => {
    await expect(kit.run(write, { productId: 'kit', kind: 'page' }, { idempotencyKey: 'task-1' })).rejects.toThrow(/provider down/);
    const again = await kit.run(write, { productId: 'kit', kind: 'page' }, { idempotencyKey: 'task-1' });
    // only the review ran again: one call, keyed by its node
    expect(again.modelCalls.filter((c) => !c.replayed).map((c) => c.key)).toEqual([expect.stringMatching(/model-review$/)]);
    expect(again.output).toMatchObject({ tier: 2, review: [], revised: false });
    expect(again.output.assets[0]!.body).toBe(PAGE);
    const asset = await kit.store.get<{ versions: unknown[]; current: number }>('content_asset', 'kit-page');
    expect(asset!.state.versions).toHaveLength(1);
    // the ledger: the draft and the review that answered (the failed call cost nothing)
    const costs = await kit.store.costs({ records: 100 });
    expect(costs.records.filter((r) => r.model).length).toBe(2);
  });
});
