/**
 * Replay of model calls (runtime/replay.ts): a workflow whose steps call tier 1 and tier 2
 * through a real agent runtime on a real nats-server, against a local OpenAI-compatible HTTP
 * server that counts what it received. The replay makes zero provider calls (the server's count
 * does not move), reads the recorded answers back, reports a changed prompt as a divergence with
 * the diff, and counts a call that bypasses `ctx.llm` in `modelCalls`.
 */
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { connectBus, createBus } from '../../bus/index.ts';
import { createModelRegistry, MODEL_ENTITY_TYPES, type ModelRegistry } from '../../models/index.ts';
import { defineAgent, defineCapability, replayRun, runAgent } from '../../runtime/index.ts';
import { openStore, type EntityTypeDef } from '../../shared-state/index.ts';
import { defineWorkflow, loadWorkflowCatalog, WorkflowEngine, type RunState } from '../../workflows/index.ts';
import { loadConfig } from '../../config/index.ts';
import { natsSuite, startOpenAiServer, uniqueName, waitFor } from '../helpers/index.ts';
import { ALL_ENTITY_TYPES } from '../helpers/types.ts';
import { join } from 'node:path';

const suite = natsSuite('replay-models');

// what the handlers ask; the test changes it between the run and a replay
const prompt = { classify: 'Classify this support message. Answer with one word.', bypass: false };

const classify = defineCapability({
  name: 'rm.classify',
  version: '1',
  input: z.object({ text: z.string() }),
  output: z.object({ label: z.string(), model: z.string() }),
  async handler(ctx) {
    if (prompt.bypass) {
      // not through ctx.llm: a replay cannot answer this from the log
      const models = ctx.models as ModelRegistry | undefined;
      await models?.get('small').chat.invoke([{ role: 'user', content: 'bypassing ctx.llm' }]);
    }
    const r = await ctx.llm('small', [
      { role: 'system', content: prompt.classify },
      { role: 'user', content: ctx.input.text },
    ]);
    return { label: r.text.trim(), model: r.model };
  },
});

const draft = defineCapability({
  name: 'rm.draft',
  version: '1',
  input: z.object({ text: z.string(), label: z.string() }),
  output: z.object({ draft: z.string(), costUsd: z.number() }),
  async handler(ctx) {
    const r = await ctx.llm('large', [
      { role: 'system', content: `Draft a reply to a ${ctx.input.label} message.` },
      { role: 'user', content: ctx.input.text },
    ]);
    return { draft: r.text, costUsd: r.costUsd };
  },
});

const agent = defineAgent({ name: 'rm-agent', version: '1.0.0', capabilities: [classify, draft] });

describe('replay of model calls', () => {
  it('replays tier-1 and tier-2 answers from the log with zero provider calls; a changed prompt diverges with the diff', { timeout: 120_000 }, async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const ai = await startOpenAiServer({
      usage: { prompt_tokens: 500, completion_tokens: 40 },
      reply: (body) => (body.model === 'gpt-4o-mini' ? 'refund' : `Dear customer, about your ${String((body.messages as { content: string }[])[0]!.content.match(/a (\w+) message/)?.[1])}: done.`),
    });
    suite.defer(() => ai.stop());
    const prefix = uniqueName('rm');
    const nc = await connectBus({ servers: suite.nats.url });
    suite.defer(() => nc.close());
    const bus = createBus(nc, { prefix });
    await bus.provision();
    const types = new Map<string, EntityTypeDef>([...ALL_ENTITY_TYPES, ...MODEL_ENTITY_TYPES].map((t) => [t.name, t]));
    const store = await openStore(`sqlite:${join(suite.dir, `${prefix}.db`)}`, { types: [...types.values()] });
    suite.defer(() => store.close());
    const models = createModelRegistry({ KEEL_MODEL_SMALL: 'openai:gpt-4o-mini', KEEL_MODEL_LARGE: 'openai:gpt-4o', KEEL_OPENAI_BASE_URL: ai.url, OPENAI_API_KEY: 'sk-test', KEEL_MODEL_MAX_RETRIES: '0' });
    const running = await runAgent(agent, { natsUrl: suite.nats.url, state: store, prefix, models });
    suite.defer(() => running.stop(1_000));

    const wf = defineWorkflow({
      name: 'replay-models',
      version: 1,
      steps: {
        classify: { capability: 'rm.classify', input: '$.input' },
        draft: { capability: 'rm.draft', after: ['classify'], input: { text: '$.input.text', label: '$.steps.classify.output.label' } },
      },
    });
    const engine = new WorkflowEngine({ store, bus, actor: { kind: 'human', id: 'tester' }, catalog: await loadWorkflowCatalog([wf], []) });
    const { runId } = await engine.start('replay-models', { text: 'I want my money back for order 4417.' });
    await waitFor(async () => (await store.get<RunState>('workflow_run', runId))?.state.status === 'completed', { timeoutMs: 60_000, what: `run ${runId} completed` });
    const run = (await store.get<RunState>('workflow_run', runId))!.state;
    expect(ai.requests.map((r) => r.body.model)).toEqual(['gpt-4o-mini', 'gpt-4o']);
    expect(run.steps.classify!.output).toEqual({ label: 'refund', model: 'gpt-4o-mini' });
    expect(run.steps.draft!.output).toMatchObject({ draft: 'Dear customer, about your refund: done.' });
    const served = ai.requests.length;
    const config = loadConfig({});

    // 1. faithful replay: both answers read back, nothing reaches the provider
    const same = await replayRun(store, runId, [agent], config);
    expect(ai.requests.length).toBe(served);
    expect(same).toMatchObject({ divergences: 0, modelCalls: 0, sideEffects: 0 });
    expect(same.steps.map((s) => [s.step, s.result, s.modelAnswersReadBack])).toEqual([['classify', 'same', 1], ['draft', 'same', 1]]);
    expect(same.steps.map((s) => s.replayed)).toEqual([run.steps.classify!.output, run.steps.draft!.output]);

    // 2. the classify prompt changed since the run: a divergence, with the diff, still no call
    prompt.classify = 'Classify this support message. Answer with one word, in capitals.';
    const changed = await replayRun(store, runId, [agent], config);
    expect(ai.requests.length).toBe(served);
    expect(changed.modelCalls).toBe(0);
    expect(changed.divergences).toBe(1);
    const step = changed.steps.find((s) => s.step === 'classify')!;
    expect(step).toMatchObject({ result: 'diverged', reason: expect.stringMatching(/model call 1: the prompt changed/) });
    expect(step.promptChanges).toHaveLength(1);
    expect(step.promptChanges![0]).toMatchObject({ call: 1, tier: 'small', message: 0, role: 'system' });
    // 40 characters of common context before the change, the common ending ('.') elided
    expect(step.promptChanges![0]!.diff.split('\n')).toEqual(['@@ model call 1 (small), message 0 (system) @@', '- …is support message. Answer with one word…', '+ …is support message. Answer with one word, in capitals…']);
    expect(changed.steps.find((s) => s.step === 'draft')!.result).toBe('same');

    // 3. a handler that bypasses ctx.llm, given a registry: that call reaches the provider and is counted
    prompt.classify = 'Classify this support message. Answer with one word.';
    prompt.bypass = true;
    const bypassed = await replayRun(store, runId, [agent], config, { models });
    expect(ai.requests.length).toBe(served + 1);
    expect(bypassed.modelCalls).toBe(1);
    prompt.bypass = false;
  });
});
