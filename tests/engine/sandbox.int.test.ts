/**
 * The agent sandbox under a real engine (`keel start` as a process, a real nats-server, SQLite):
 * the fixture agent (tests/engine/fixtures/sandbox/) runs under Node's permission model. Reading a
 * file outside its allowance fails the task for good (dead letter AGENT_SANDBOX_DENIED, failed run,
 * an error line in the agent's log) without crashing or restarting its process; reading inside the
 * folder its manifest declares in sandbox.fsRead succeeds. The data dir's secrets (credentials.json,
 * operators.json) are outside every agent's allowance.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT, findTool } from '../../config/index.ts';
import { reportSkip, startEngineProcess, tempDir, waitFor, type EngineProcess } from '../helpers/index.ts';

const FEATURE = join(REPO_ROOT, 'tests', 'engine', 'fixtures', 'sandbox', 'index.ts');

type RunJson = { run: { status: string; error?: string; steps: Record<string, { status: string; output?: unknown; error?: string }> } };
type AgentsJson = { agents: Array<{ agent: string }>; processes: Array<{ pid: number; name: string; agents: string[] }> };
type DlqJson = { letters: Array<{ capability: string; reason: string; error: { code: string; message: string }; deliveries: number; run: { id: string } | null }> };

/** The CLI against an engine process, and a wait for a run to end in the wanted status. */
function cli(e: EngineProcess, env: Record<string, string>) {
  const keel = (args: string[]) => {
    const r = spawnSync(process.execPath, [join(REPO_ROOT, 'cli', 'keel.ts'), ...args], {
      env: { ...process.env, ...env, KEEL_DATA_DIR: e.dataDir, KEEL_NATS_PORT: String(e.natsPort), KEEL_LOG_LEVEL: 'silent' },
      encoding: 'utf8',
    });
    if (r.status !== 0) throw new Error(`keel ${args.join(' ')} exited with ${r.status}:\n${r.stderr}`);
    return JSON.parse(r.stdout) as unknown;
  };
  const runTo = async (runId: string, want: 'completed' | 'failed') => {
    let shown: RunJson | undefined;
    await waitFor(
      () => {
        shown = keel(['run', 'show', runId, '--json']) as RunJson;
        return shown.run.status === 'completed' || shown.run.status === 'failed';
      },
      { timeoutMs: 30_000, intervalMs: 300, what: `run ${runId} to end` },
    );
    expect(shown!.run.status, `${runId}: ${JSON.stringify(shown!.run)}\n${e.output().slice(-3000)}`).toBe(want);
    return shown!.run;
  };
  return { keel, runTo };
}

const skipWithoutNats = (ctx: { skip: (reason: string) => void }, what: string): boolean => {
  if (findTool('nats-server')) return false;
  const reason = 'no nats-server binary: run `npm run provision`';
  reportSkip(what, reason);
  ctx.skip(reason);
  return true;
};

describe('agent sandbox (KEEL_AGENT_SANDBOX, default on)', () => {
  it('refuses a read outside the allowance as a permanent failure, keeps the process, allows the declared fsRead', async (ctx) => {
    if (skipWithoutNats(ctx, 'agent sandbox end to end')) return;
    // two folders outside the data dir: one the manifest declares, one nobody does
    const allowed = tempDir('keel-sandbox-allowed-');
    const outside = tempDir('keel-sandbox-outside-');
    mkdirSync(join(allowed.path, 'in'), { recursive: true });
    const insideFile = join(allowed.path, 'in', 'note.txt');
    const outsideFile = join(outside.path, 'secret.txt');
    writeFileSync(insideFile, 'inside the sandbox');
    writeFileSync(outsideFile, 'the agent must not read this');

    const env = { KEEL_FEATURES: FEATURE, KEEL_TEST_SANDBOX_ALLOWED: allowed.path, KEEL_LOG_LEVEL: 'info' };
    const e = await startEngineProcess({ ...env, KEEL_AGENTS: 'sandbox-probe', KEEL_WORKFLOW_SWEEP_MS: '300' });
    const { keel, runTo } = cli(e, env);
    try {
      const probe = () => (keel(['agents', '--json']) as AgentsJson).processes.find((p) => p.agents.includes('sandbox-probe'));
      await waitFor(() => probe() !== undefined, { timeoutMs: 30_000, intervalMs: 300, what: 'the sandbox-probe agent' });
      const pid = probe()!.pid;
      expect(e.output()).toMatch(/"agent":"sandbox-probe"[^\n]*"sandbox":true[^\n]*"maxOldSpaceMb":192[^\n]*agent process started/);

      // outside: refused, once (not retried), dead-lettered with the reason
      keel(['run', 'start', 'sandbox-read-outside', '--input', JSON.stringify({ path: outsideFile }), '--id', 'run-outside', '--json']);
      const failed = await runTo('run-outside', 'failed');
      expect(JSON.stringify(failed)).toContain('AGENT_SANDBOX_DENIED');
      const letters = (keel(['dlq', 'list', '--json']) as DlqJson).letters.filter((l) => l.capability === 'probe.read-outside');
      expect(letters).toHaveLength(1);
      expect(letters[0]).toMatchObject({ reason: 'permanent_error', deliveries: 1, error: { code: 'AGENT_SANDBOX_DENIED' }, run: { id: 'run-outside' } });
      expect(letters[0]!.error.message).toContain('FileSystemRead');
      expect(letters[0]!.error.message).toContain(outsideFile);
      // the agent's log says so, naming the permission and the resource (its output reaches us between polls)
      const deniedLine = () => e.output().split('\n').find((l) => l.includes('"code":"AGENT_SANDBOX_DENIED"'));
      await waitFor(() => deniedLine() !== undefined, { timeoutMs: 5_000, what: 'the AGENT_SANDBOX_DENIED log line' });
      const line = deniedLine();
      const logged = JSON.parse(line!) as { level: number; permission: string; resource: string; capability: string };
      expect(logged).toMatchObject({ level: 50, permission: 'FileSystemRead', resource: outsideFile, capability: 'probe.read-outside' });

      // inside the declared fsRead: allowed
      keel(['run', 'start', 'sandbox-read-inside', '--input', JSON.stringify({ path: insideFile }), '--id', 'run-inside', '--json']);
      const done = await runTo('run-inside', 'completed');
      expect(done.steps.read).toMatchObject({ status: 'completed', output: { text: 'inside the sandbox' } });

      // the same process all along: no crash, no restart
      expect(probe()!.pid).toBe(pid);
      expect(e.output()).not.toMatch(/agent process exited; restarting/);
    } finally {
      await e.stop('SIGINT');
      e.cleanup();
      allowed.remove();
      outside.remove();
    }
  }, 90_000);

  it('the data dir\'s secrets are outside the allowance: reading credentials.json and writing operators.json are refused', async (ctx) => {
    if (skipWithoutNats(ctx, 'agent sandbox and the data dir')) return;
    const env = { KEEL_FEATURES: FEATURE, KEEL_LOG_LEVEL: 'info' };
    const e = await startEngineProcess({ ...env, KEEL_AGENTS: 'sandbox-probe', KEEL_WORKFLOW_SWEEP_MS: '300' });
    const { keel, runTo } = cli(e, env);
    try {
      await waitFor(() => (keel(['agents', '--json']) as AgentsJson).agents.some((a) => a.agent === 'sandbox-probe'), { timeoutMs: 30_000, intervalMs: 300, what: 'the sandbox-probe agent' });
      expect(e.output()).toMatch(/"agent":"sandbox-probe"[^\n]*"sandbox":true[^\n]*agent process started/);
      const credentials = join(e.dataDir, 'credentials.json');
      const operators = join(e.dataDir, 'operators.json');
      // the engine's local bus keeps every agent's password there
      expect(existsSync(credentials)).toBe(true);
      const operatorsBefore = existsSync(operators) ? readFileSync(operators, 'utf8') : undefined;

      keel(['run', 'start', 'sandbox-read-outside', '--input', JSON.stringify({ path: credentials }), '--id', 'run-credentials', '--json']);
      const read = await runTo('run-credentials', 'failed');
      expect(JSON.stringify(read)).toContain('AGENT_SANDBOX_DENIED');
      expect(JSON.stringify(read)).not.toContain('password');

      keel(['run', 'start', 'sandbox-write-file', '--input', JSON.stringify({ path: operators }), '--id', 'run-operators', '--json']);
      const write = await runTo('run-operators', 'failed');
      expect(JSON.stringify(write)).toContain('AGENT_SANDBOX_DENIED');
      expect(existsSync(operators) ? readFileSync(operators, 'utf8') : undefined).toBe(operatorsBefore);

      const letters = (keel(['dlq', 'list', '--json']) as DlqJson).letters;
      const letterOf = (run: string) => letters.find((l) => l.run?.id === run);
      expect(letterOf('run-credentials')).toMatchObject({ reason: 'permanent_error', error: { code: 'AGENT_SANDBOX_DENIED' } });
      expect(letterOf('run-credentials')!.error.message).toContain('FileSystemRead');
      expect(letterOf('run-credentials')!.error.message).toContain(credentials);
      expect(letterOf('run-operators')).toMatchObject({ reason: 'permanent_error', error: { code: 'AGENT_SANDBOX_DENIED' } });
      expect(letterOf('run-operators')!.error.message).toContain('FileSystemWrite');
      expect(letterOf('run-operators')!.error.message).toContain(operators);
    } finally {
      await e.stop('SIGINT');
      e.cleanup();
    }
  }, 90_000);

  it('KEEL_AGENT_SANDBOX=0: the same read outside succeeds (the refusal above is the sandbox\'s)', async (ctx) => {
    if (skipWithoutNats(ctx, 'agent sandbox off')) return;
    const outside = tempDir('keel-sandbox-outside-');
    const outsideFile = join(outside.path, 'secret.txt');
    writeFileSync(outsideFile, 'readable without a sandbox');
    const env = { KEEL_FEATURES: FEATURE, KEEL_AGENT_SANDBOX: '0', KEEL_LOG_LEVEL: 'info' };
    const e = await startEngineProcess({ ...env, KEEL_AGENTS: 'sandbox-probe', KEEL_WORKFLOW_SWEEP_MS: '300' });
    const { keel, runTo } = cli(e, env);
    try {
      await waitFor(() => (keel(['agents', '--json']) as AgentsJson).agents.some((a) => a.agent === 'sandbox-probe'), { timeoutMs: 30_000, intervalMs: 300, what: 'the sandbox-probe agent' });
      expect(e.output()).toMatch(/agent sandbox off \(KEEL_AGENT_SANDBOX=0\)/);
      expect(e.output()).toMatch(/"agent":"sandbox-probe"[^\n]*"sandbox":false[^\n]*agent process started/);
      keel(['run', 'start', 'sandbox-read-outside', '--input', JSON.stringify({ path: outsideFile }), '--id', 'run-unsandboxed', '--json']);
      const done = await runTo('run-unsandboxed', 'completed');
      expect(done.steps.read).toMatchObject({ status: 'completed', output: { text: 'readable without a sandbox' } });
    } finally {
      await e.stop('SIGINT');
      e.cleanup();
      outside.remove();
    }
  }, 60_000);
});
