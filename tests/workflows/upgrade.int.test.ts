/**
 * Upgrading a workflow while runs are in flight (issue 15, "Upgrades"). Workflow `upgrade` v1 is
 * a → review (an approval) → b; v2 is a → c → d. Two replicas of one agent process run code
 * version 1; runs started under v1 wait at their approval; the replicas are restarted one at a
 * time with code version 2 (for a while one runs v1 and the other v2), and the starter switches to
 * the v2 definition. A run keeps the definition it started with: the v1 runs finish a → review →
 * b whichever code advances them, and the runs started after the switch go a → c → d. The steps
 * are read from each run's history and from the side effects the fake provider received.
 */
import { describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { REPO_ROOT } from '../../config/index.ts';
import { connectBus, createBus, listAgents } from '../../bus/index.ts';
import { openStore } from '../../shared-state/index.ts';
import { defineWorkflow, WorkflowEngine, type RunState } from '../../workflows/index.ts';
import { natsSuite, uniqueName, waitFor } from '../helpers/index.ts';
import { ALL_ENTITY_TYPES } from '../helpers/types.ts';
import { startCountingProvider } from './provider.ts';

const AGENT = join(REPO_ROOT, 'tests', 'workflows', 'fixtures', 'upgrade-agents.ts');
const suite = natsSuite('upgrade');

const v1 = defineWorkflow({
  name: 'upgrade',
  version: 1,
  steps: {
    a: { capability: 'upg.a', input: { n: '$.input.n' } },
    review: { after: ['a'], approval: { action: 'upgrade.review', deadlineMs: 3_600_000 } },
    b: { capability: 'upg.b', after: ['review'], when: { path: '$.steps.review.output.decision', equals: 'approved' }, input: { n: '$.steps.a.output.n' } },
  },
});
const v2 = defineWorkflow({
  name: 'upgrade',
  version: 2,
  steps: {
    a: { capability: 'upg.a', input: { n: '$.input.n' } },
    c: { capability: 'upg.c', after: ['a'], input: { n: '$.steps.a.output.n' } },
    d: { capability: 'upg.d', after: ['c'], input: { n: '$.steps.c.output.n' } },
  },
});

describe('workflow upgrade with runs in flight', () => {
  it('v1 runs finish under v1 through a rolling restart to v2 (mixed versions at once); runs started after it use v2', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const prefix = uniqueName('up');
    const nc = await connectBus({ servers: suite.nats.url });
    suite.defer(() => nc.close());
    const bus = createBus(nc, { prefix });
    await bus.provision();
    const state = `sqlite:${join(suite.dir, `${prefix}.db`)}`;
    const store = await openStore(state, { types: ALL_ENTITY_TYPES });
    suite.defer(() => store.close());
    const provider = await startCountingProvider();
    suite.defer(() => provider.close());
    // the starter before and after the upgrade (the engine, the CLI, a trigger: whoever starts runs)
    const actor = { kind: 'human', id: 'tester' } as const;
    const before = new WorkflowEngine({ store, bus, actor, catalog: { upgrade: v1 } });
    const after = new WorkflowEngine({ store, bus, actor, catalog: { upgrade: v2 } });

    const env = { KEEL_NATS_URL: suite.nats.url, KEEL_SUBJECT_PREFIX: prefix, KEEL_STATE: state, PROVIDER_URL: provider.url, KEEL_LOG_LEVEL: 'warn', KEEL_WORKFLOW_SWEEP_MS: '300' };
    const replicas: Record<string, ChildProcess> = {};
    const start = (name: string, code: '1' | '2') => {
      const child = spawn(process.execPath, [join(REPO_ROOT, 'cli', 'keel.ts'), 'agent', 'start', AGENT], { env: { ...process.env, ...env, UPG_CODE: code }, stdio: ['ignore', 'inherit', 'inherit'] });
      replicas[name] = child;
      suite.defer(async () => {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGKILL');
          await new Promise((r) => child.once('exit', r));
        }
      });
    };
    /** the code versions of the live instances, sorted */
    const versions = async () => (await listAgents(nc, bus.subjects.registryBucket)).map((m) => m.version).sort();
    /** a graceful restart of one replica with another code version (SIGTERM: it drains, then leaves the registry) */
    const restart = async (name: string, code: '1' | '2', expect: string[]) => {
      const old = replicas[name]!;
      const gone = new Promise((r) => old.once('exit', r));
      old.kill('SIGTERM');
      await gone;
      start(name, code);
      await waitFor(async () => JSON.stringify(await versions()) === JSON.stringify(expect), { timeoutMs: 30_000, what: `instances ${expect.join(', ')}` });
    };
    const finished = (runId: string) => waitFor(async () => (await store.get<RunState>('workflow_run', runId))?.state.status === 'completed', { timeoutMs: 30_000, what: `run ${runId} completed` });
    const waitingApproval = (runId: string) => waitFor(async () => (await store.get<RunState>('workflow_run', runId))?.state.steps.review?.status === 'waiting_approval', { timeoutMs: 30_000, what: `run ${runId} at its approval` });
    /** what a run did: its definition's version, the steps completed in history order, the code that ran each task, the side effects the provider got */
    const executed = async (runId: string) => {
      const run = (await after.get(runId))!;
      const steps = run.history.filter((h) => h.type === 'step_completed' || h.type === 'approval_decided').map((h) => (h.data as { step: string }).step);
      const code = Object.fromEntries(Object.entries(run.state.steps).flatMap(([s, st]) => ((st.output as { code?: string } | undefined)?.code ? [[s, (st.output as { code: string }).code]] : [])));
      return { workflowVersion: run.state.version, snapshotVersion: (run.state.definition as { version: number }).version, status: run.state.status, steps, code, effects: provider.byStep(runId) };
    };

    // 1. everything on v1: two runs reach their approval
    start('w1', '1');
    start('w2', '1');
    await waitFor(async () => JSON.stringify(await versions()) === '["1.0.0","1.0.0"]', { timeoutMs: 30_000, what: 'two v1 instances' });
    const r1 = (await before.start('upgrade', { n: 0 })).runId;
    const r1b = (await before.start('upgrade', { n: 10 })).runId;
    await waitingApproval(r1);
    await waitingApproval(r1b);

    // 2. the rolling restart, first half: w1 runs code v2 while w2 still runs v1; the starter uses v2 now
    await restart('w1', '2', ['1.0.0', '2.0.0']);
    const r2 = (await after.start('upgrade', { n: 0 })).runId;
    await finished(r2);
    // a v1 run decided while the versions are mixed
    expect((await after.decideApproval(`${r1b}_review`, 'approved', actor)).applied).toBe(true);
    await finished(r1b);
    expect(await versions()).toEqual(['1.0.0', '2.0.0']);

    // 3. second half: both on v2; the other v1 run is decided and finishes there
    await restart('w2', '2', ['2.0.0', '2.0.0']);
    expect((await after.decideApproval(`${r1}_review`, 'approved', actor)).applied).toBe(true);
    await finished(r1);
    const r3 = (await after.start('upgrade', { n: 0 })).runId;
    await finished(r3);

    // the v1 runs: v1's steps and only those, each side effect once
    for (const id of [r1, r1b]) {
      const x = await executed(id);
      expect(x).toMatchObject({ workflowVersion: 1, snapshotVersion: 1, status: 'completed', steps: ['a', 'review', 'b'], effects: { a: 1, b: 1 } });
      expect(x.code.a).toBe('1'); // ran before the upgrade
    }
    // r1's last step ran on v2 code (nothing ran v1 any more) and still followed v1's definition
    expect((await executed(r1)).code.b).toBe('2');
    // the runs started after the switch: v2's steps, c and d only on v2 code (v1 code does not have them)
    for (const id of [r2, r3]) {
      const x = await executed(id);
      expect(x).toMatchObject({ workflowVersion: 2, snapshotVersion: 2, status: 'completed', steps: ['a', 'c', 'd'], effects: { a: 1, c: 1, d: 1 } });
      expect([x.code.c, x.code.d]).toEqual(['2', '2']);
    }
    expect((await executed(r3)).code.a).toBe('2');
  }, 180_000);
});
