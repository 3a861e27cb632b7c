import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { REPO_ROOT } from '../../config/index.ts';
import { openStore } from '../../shared-state/index.ts';
import { type RunState } from '../../workflows/index.ts';
import { readFileSync } from 'node:fs';
import { startEngineProcess, waitFor, isAlive } from '../helpers/index.ts';
import { ALL_ENTITY_TYPES } from '../helpers/types.ts';

const GREETER = join(REPO_ROOT, 'tests', 'workflows', 'fixtures', 'greeter.ts');
const DEFS = join(REPO_ROOT, 'tests', 'workflows', 'fixtures', 'greet-workflow.ts');

describe('workflows under `keel start`', () => {
  it('an entity event triggers a run; a killed agent is restarted by the supervisor; `keel run retry --from` re-drives with edited input', async () => {
    const e = await startEngineProcess({ KEEL_AGENTS: GREETER, KEEL_WORKFLOWS: DEFS, KEEL_WORKFLOW_SWEEP_MS: '300', KEEL_LOG_LEVEL: 'warn' });
    const keel = (args: string[]) => {
      const r = spawnSync(process.execPath, [join(REPO_ROOT, 'cli', 'keel.ts'), ...args], { env: { ...process.env, KEEL_DATA_DIR: e.dataDir, KEEL_NATS_PORT: String(e.natsPort), KEEL_WORKFLOWS: DEFS, KEEL_LOG_LEVEL: 'silent' }, encoding: 'utf8' });
      return { ...r, json: () => JSON.parse(r.stdout) as unknown };
    };
    const store = await openStore(`sqlite:${join(e.dataDir, 'keel.db')}`, { types: ALL_ENTITY_TYPES });
    try {
      const agents = () => (keel(['agents', '--json']).json() as { agents: Array<{ agent: string; pid: number }> }).agents;
      await waitFor(() => agents().some((a) => a.agent === 'greeter'), { timeoutMs: 30_000, intervalMs: 300, what: 'the greeter agent' });

      await store.append('customer', 'cus-ada', 0, [{ type: 'created', data: { name: 'Ada' } }], { actor: { kind: 'human', id: 'test' } });
      const runs = async () => (await store.query<RunState>('workflow_run', { filter: { workflow: 'greet-new-customer' } })).items;
      await waitFor(async () => (await runs()).some((r) => r.state.status === 'completed'), { timeoutMs: 30_000, what: 'a triggered run to complete' });
      const run = (await runs())[0]!;
      expect(run.state.steps.greet!.output).toEqual({ greeting: 'Welcome, Ada!' });
      // an update is not a creation: no second run
      await store.append('customer', 'cus-ada', 1, [{ type: 'updated', data: { notes: 'vip' } }], { actor: { kind: 'human', id: 'test' } });
      await new Promise((r) => setTimeout(r, 2_000));
      expect(await runs()).toHaveLength(1);

      const before = agents().find((a) => a.agent === 'greeter')!.pid;
      process.kill(before, 'SIGKILL');
      await waitFor(() => agents().some((a) => a.agent === 'greeter' && a.pid !== before), { timeoutMs: 30_000, intervalMs: 300, what: 'the supervisor to restart the agent' });

      const retry = keel(['run', 'retry', run.entityId, '--from', 'greet', '--input', '{"name":"Zed"}', '--json']);
      expect(retry.status).toBe(0);
      await waitFor(async () => {
        const r = await store.get<RunState>('workflow_run', run.entityId);
        return r?.state.status === 'completed' && (r.state.steps.greet!.output as { greeting: string }).greeting === 'Welcome, Zed!';
      }, { timeoutMs: 30_000, what: 'the re-driven run' });
      const shown = keel(['run', 'show', run.entityId, '--json']).json() as { run: { steps: Record<string, { attempt: number }> }; history: Array<{ type: string }> };
      expect(shown.run.steps.greet!.attempt).toBe(2);
      expect(shown.history.map((h) => h.type)).toContain('step_reset');
      expect(keel(['run', 'retry', run.entityId, '--from', 'nope']).status).toBe(1);

      // the engine is SIGKILLed: its agent processes notice and leave (no orphans)
      const agentPid = agents().find((a) => a.agent === 'greeter')!.pid;
      const natsPid = Number(readFileSync(join(e.dataDir, 'nats', 'nats-server.pid'), 'utf8'));
      e.child.kill('SIGKILL');
      await waitFor(() => !isAlive(agentPid), { timeoutMs: 15_000, what: 'the orphaned agent to exit' });
      process.kill(natsPid, 'SIGKILL'); // the next `keel start` would reap it; this test cleans up itself
    } finally {
      await store.close();
      await e.stop('SIGINT');
      e.cleanup();
    }
  }, 120_000);
});
