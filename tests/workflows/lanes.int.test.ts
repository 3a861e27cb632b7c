/**
 * Issue #20 in the workflow engine, on a real nats-server and SQLite store with an in-process
 * agent: per-key serialization with supersession (one live approval per key; a superseded one is
 * refused naming the current one; two runs cannot both reach the send), a task dead-lettered for
 * a schema mismatch failing its run within seconds (the letter has no envelope: the run is found
 * from its headers), the DLQ read and re-driven through bus/, and decisions checked against the
 * schema of the step that consumes them.
 */
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { z } from 'zod';
import { connectBus, createBus, listDeadLetters, getDeadLetter, redriveDeadLetter, type Bus } from '../../bus/index.ts';
import { openStore, type StateStore } from '../../shared-state/index.ts';
import { WorkflowEngine, defineWorkflow, localTaskSchemas, type RunState, type WorkflowError } from '../../workflows/index.ts';
import { defineAgent, defineCapability, PermanentError, runAgent } from '../../runtime/index.ts';
import { natsSuite, uniqueName, waitFor } from '../helpers/index.ts';
import { ALL_ENTITY_TYPES } from '../helpers/types.ts';

const suite = natsSuite('lanes');

const sent: Array<{ key: string; text: string; run?: string }> = [];
const escalated: Array<{ runId: string; reason: string }> = [];
let healed = false;

const intake = defineCapability({
  name: 'desk.intake',
  version: '1',
  input: z.object({ key: z.string().min(1), n: z.number() }),
  output: z.object({ key: z.string(), n: z.number() }),
  async handler(ctx) {
    if (ctx.input.n === 13 && !healed) throw new PermanentError('13 is refused until healed (test)');
    return { key: ctx.input.key, n: ctx.input.n };
  },
});
const draft = defineCapability({
  name: 'desk.draft',
  version: '1',
  input: z.object({ key: z.string(), n: z.number() }),
  output: z.object({ text: z.string() }),
  handler: async (ctx) => ({ text: `reply to ${ctx.input.key} #${ctx.input.n}` }),
});
const send = defineCapability({
  name: 'desk.send',
  version: '1',
  input: z.object({ key: z.string(), text: z.string().min(1).max(200), slowMs: z.number().optional() }),
  output: z.object({ sent: z.boolean() }),
  async handler(ctx) {
    if (ctx.input.slowMs) await new Promise((r) => setTimeout(r, ctx.input.slowMs));
    sent.push({ key: ctx.input.key, text: ctx.input.text, run: ctx.envelope.correlationId });
    return { sent: true };
  },
});
const escalate = defineCapability({
  name: 'desk.escalate',
  version: '1',
  input: z.object({ runId: z.string(), reason: z.string() }),
  output: z.object({ ok: z.boolean() }),
  async handler(ctx) {
    escalated.push(ctx.input);
    return { ok: true };
  },
});
const desk = defineAgent({ name: 'desk', version: '1.0.0', capabilities: [intake, draft, send, escalate] });

const deskFlow = defineWorkflow({
  name: 'desk',
  version: 1,
  inputSchema: z.object({ key: z.string().min(1) }).loose(),
  concurrencyKey: '$.steps.intake.output.key',
  supersede: { before: 'send', reason: { $concat: ['newer message #', '$.steps.intake.output.n'] } },
  onFailure: { escalate: 'desk.escalate', input: { runId: '$.run.id', reason: '$.run.error' } },
  steps: {
    intake: { capability: 'desk.intake', input: { key: '$.input.key', n: '$.input.n' }, retry: { maxAttempts: 3, backoffMs: 500, factor: 2 } },
    draft: { capability: 'desk.draft', after: ['intake'], input: { key: '$.steps.intake.output.key', n: '$.steps.intake.output.n' } },
    ok: { after: ['draft'], approval: { action: 'desk.reply', deadlineMs: 600_000, payload: { text: '$.steps.draft.output.text' } } },
    send: {
      capability: 'desk.send',
      after: ['ok'],
      when: { path: '$.steps.ok.output.decision', equals: 'approved' },
      input: { key: '$.steps.intake.output.key', text: { $coalesce: ['$.steps.ok.output.text', '$.steps.draft.output.text'] }, slowMs: '$.input.slowMs' },
    },
  },
});

interface World { bus: Bus; store: StateStore; engine: WorkflowEngine; checked: WorkflowEngine }

async function world(): Promise<World> {
  const prefix = uniqueName('ln');
  const nc = await connectBus({ servers: suite.nats!.url });
  suite.defer(() => nc.close());
  const bus = createBus(nc, { prefix });
  await bus.provision();
  const store = await openStore(`sqlite:${join(suite.dir, `${prefix}.db`)}`, { types: ALL_ENTITY_TYPES });
  suite.defer(() => store.close());
  const a = await runAgent(desk, { natsUrl: suite.nats!.url, state: store, prefix, sweepMs: 200, logger: undefined, config: undefined });
  suite.defer(() => a.stop(1_000));
  // one engine that checks nothing beyond the definition, one that knows the capabilities' schemas
  const engine = new WorkflowEngine({ store, bus, actor: { kind: 'system', id: 'test' }, catalog: { desk: deskFlow } });
  const checked = new WorkflowEngine({ store, bus, actor: { kind: 'human', id: 'op' }, catalog: { desk: deskFlow }, taskSchemas: localTaskSchemas(desk.capabilities) });
  return { bus, store, engine, checked };
}

const run = async (w: World, id: string) => (await w.store.get<RunState>('workflow_run', id))?.state;
const pendingOf = async (w: World, key: string) => (await w.store.listApprovals({ state: 'pending' })).filter((a) => (a.payload as { text?: string }).text?.startsWith(`reply to ${key} `));
const thrown = async (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e as WorkflowError);

describe('per-key lanes, dead letters and checked decisions (engine + one agent)', () => {
  it('a newer run supersedes the pending approval; approving the old one is refused naming the current one; one send', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const w = await world();
    await w.engine.start('desk', { key: 'k1', n: 1 }, { runId: 'r-k1-1' });
    await waitFor(async () => (await run(w, 'r-k1-1'))?.steps.ok?.status === 'waiting_approval', { what: 'the first approval' });
    await w.engine.start('desk', { key: 'k1', n: 2 }, { runId: 'r-k1-2' });
    await waitFor(async () => (await run(w, 'r-k1-2'))?.steps.ok?.status === 'waiting_approval', { what: 'the second approval' });
    const first = await run(w, 'r-k1-1');
    expect(first).toMatchObject({ status: 'superseded', supersededBy: 'r-k1-2' });
    expect(first!.steps.ok).toMatchObject({ status: 'superseded', reason: 'newer message #2 (run r-k1-2)' });
    expect(await w.store.getApproval('r-k1-1_ok')).toMatchObject({ state: 'superseded', reason: 'newer message #2 (run r-k1-2)' });
    expect((await pendingOf(w, 'k1')).map((a) => a.id)).toEqual(['r-k1-2_ok']);

    const refused = await thrown(w.checked.decideApproval('r-k1-1_ok', 'approved', { kind: 'human', id: 'op' }));
    expect(refused).toMatchObject({ code: 'WORKFLOW_APPROVAL_SUPERSEDED', current: 'r-k1-2_ok' });
    expect(refused!.message).toContain('the current one is r-k1-2_ok');

    // an edited text the send step would refuse is refused here, naming the field; nothing is recorded
    const empty = await thrown(w.checked.decideApproval('r-k1-2_ok', 'approved', { kind: 'human', id: 'op' }, ''));
    expect(empty).toMatchObject({ code: 'WORKFLOW_INVALID_INPUT', issues: [{ path: 'text' }] });
    const long = await thrown(w.checked.decideApproval('r-k1-2_ok', 'approved', { kind: 'human', id: 'op' }, 'x'.repeat(300)));
    expect(long).toMatchObject({ code: 'WORKFLOW_INVALID_INPUT', issues: [{ path: 'text', capability: 'desk.send' }] });
    expect((await run(w, 'r-k1-2'))!.steps.ok!.status).toBe('waiting_approval');

    // approved by a unique prefix of its id, with an edit: recorded on the approval and the run
    const r = await w.checked.decideApproval('r-k1-2_o', 'approved', { kind: 'human', id: 'ada' }, 'Edited reply');
    expect(r).toMatchObject({ id: 'r-k1-2_ok', applied: true });
    await waitFor(async () => (await run(w, 'r-k1-2'))?.status === 'completed', { what: 'the run to complete' });
    expect(sent.filter((s) => s.key === 'k1')).toEqual([{ key: 'k1', text: 'Edited reply', run: 'r-k1-2' }]);
    expect(await w.store.getApproval('r-k1-2_ok')).toMatchObject({ state: 'approved', decidedBy: { kind: 'human', id: 'ada' }, text: 'Edited reply' });
    const decided = (await w.store.history('workflow_run', 'r-k1-2')).find((h) => h.type === 'approval_decided')!;
    expect(decided.meta.actor).toEqual({ kind: 'human', id: 'ada' });
  });

  it('three runs of one key at once: one live approval, the others superseded; a holder that is already sending makes the next run wait for it', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const w = await world();
    await Promise.all([1, 2, 3].map((n) => w.engine.start('desk', { key: 'k2', n, slowMs: 1_500 }, { runId: `r-k2-${n}` })));
    const states = async () => Promise.all([1, 2, 3].map(async (n) => (await run(w, `r-k2-${n}`))!));
    await waitFor(async () => {
      const s = await states();
      return s.filter((x) => x.status === 'superseded').length === 2 && s.filter((x) => x.steps.ok?.status === 'waiting_approval').length === 1;
    }, { timeoutMs: 20_000, what: 'one live approval for k2' });
    const [live] = await pendingOf(w, 'k2');
    expect(live).toBeTruthy();
    // the holder is approved and its (slow) send starts: a fourth message waits for it, then gets its own approval
    await w.engine.decideApproval(live!.id, 'approved', { kind: 'human', id: 'op' });
    await waitFor(async () => (await run(w, live!.correlationId!))?.lane?.status === 'committed', { what: 'the holder to commit' });
    await w.engine.start('desk', { key: 'k2', n: 4 }, { runId: 'r-k2-4' });
    await waitFor(async () => (await run(w, 'r-k2-4'))?.lane?.status === 'waiting', { what: 'the fourth run to wait' });
    expect((await run(w, live!.correlationId!))!.status).toBe('running');
    await waitFor(async () => (await run(w, 'r-k2-4'))?.steps.ok?.status === 'waiting_approval', { timeoutMs: 20_000, what: 'the fourth run to get the lane after the send' });
    expect((await run(w, live!.correlationId!))!.status).toBe('completed');
    expect(sent.filter((s) => s.key === 'k2')).toHaveLength(1);
  });

  it('a task dead-lettered for a schema mismatch fails its run within seconds with the reason, escalates, and is listed in the DLQ', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const w = await world();
    // the checked engine refuses this input before a run exists, naming the field
    expect(await thrown(w.checked.start('desk', { key: 'k3', n: 'seven' }))).toMatchObject({ code: 'WORKFLOW_INVALID_INPUT', issues: [{ path: 'n', step: 'intake', capability: 'desk.intake' }] });
    expect(await thrown(w.checked.start('desk', {}))).toMatchObject({ code: 'WORKFLOW_INVALID_INPUT', issues: [{ path: 'key' }] });
    // the unchecked one lets it through: the agent dead-letters it (no envelope: the run is found by its headers)
    const t0 = Date.now();
    await w.engine.start('desk', { key: 'k3', n: 'seven' }, { runId: 'r-k3' });
    await waitFor(async () => (await run(w, 'r-k3'))?.status === 'failed', { timeoutMs: 10_000, intervalMs: 100, what: 'the run to fail' });
    expect(Date.now() - t0).toBeLessThan(5_000);
    const st = (await run(w, 'r-k3'))!;
    expect(st.steps.intake).toMatchObject({ status: 'failed', attempt: 1, deadLetter: { reason: 'schema_mismatch' } });
    expect(st.error).toMatch(/step 'intake' failed: schema_mismatch: .*n: /);
    await waitFor(() => escalated.some((e) => e.runId === 'r-k3'), { what: 'the failure escalation' });
    expect(escalated.find((e) => e.runId === 'r-k3')!.reason).toContain('schema_mismatch');
    const { letters, total } = await listDeadLetters(w.bus);
    expect(total).toBe(1);
    expect(letters[0]).toMatchObject({ capability: 'desk.intake', reason: 'schema_mismatch', seq: st.steps.intake!.deadLetter!.seq, headers: { 'Keel-Run-Id': 'r-k3', 'Keel-Step': 'intake' } });
    expect((await listDeadLetters(w.bus, { capability: 'desk.send' })).letters).toEqual([]);
    expect(await getDeadLetter(w.bus, 999)).toBeNull();
  });

  it('a permanent failure dead-letters; once the cause is fixed, re-driving the letter reopens the step and the run completes', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const w = await world();
    healed = false;
    await w.engine.start('desk', { key: 'k4', n: 13 }, { runId: 'r-k4' });
    await waitFor(async () => (await run(w, 'r-k4'))?.status === 'failed', { timeoutMs: 10_000, what: 'the run to fail' });
    const seq = (await run(w, 'r-k4'))!.steps.intake!.deadLetter!.seq!;
    expect((await getDeadLetter(w.bus, seq))!.reason).toBe('permanent_error');
    healed = true;
    expect(await w.engine.redrive('r-k4', 'intake', 1, { seq })).toBe(true);
    const r = await redriveDeadLetter(w.bus, seq);
    expect(r.messageId).toMatch(new RegExp(`^r-k4\\.intake\\.1\\.redrive-${seq}-`));
    await waitFor(async () => (await run(w, 'r-k4'))?.steps.ok?.status === 'waiting_approval', { timeoutMs: 10_000, what: 'the re-driven run to reach its approval' });
    expect((await w.store.history('workflow_run', 'r-k4')).map((h) => h.type)).toContain('step_redriven');
  });
});
