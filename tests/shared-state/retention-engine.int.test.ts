/**
 * Retention in `keel start` (engine/retention.ts): with KEEL_RUN_RETENTION=2s and
 * KEEL_RETENTION_INTERVAL=1s, a finished run's history is compacted by the engine's own timer,
 * `keel run show` still shows its steps, a live run is left alone, and the pass's report and
 * watermarks are in KEEL_DATA_DIR/retention.json.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { REPO_ROOT } from '../../config/index.ts';
import { startEngineProcess, waitFor, type EngineProcess } from '../helpers/index.ts';

const WORKFLOW = join(REPO_ROOT, 'tests', 'engine', 'fixtures', 'review-workflow.ts');
let engine: EngineProcess | undefined;

function keel(args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [join(REPO_ROOT, 'cli', 'keel.ts'), ...args], {
    env: { ...process.env, KEEL_DATA_DIR: engine!.dataDir, KEEL_NATS_PORT: String(engine!.natsPort), KEEL_WORKFLOWS: WORKFLOW, KEEL_LOG_LEVEL: 'silent' },
    encoding: 'utf8',
  });
}
/** One request on a fresh connection (spawnSync blocks this loop for a while: no stale keep-alive sockets). */
function api(method: string, path: string, body?: unknown): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const headers = { ...engine!.auth, ...(data !== undefined ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(data)) } : {}) };
    const req = request(`${engine!.httpUrl}${path}`, { method, agent: false, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve(JSON.parse(text || '{}') as Record<string, unknown>));
    });
    req.once('error', reject);
    req.end(data);
  });
}
interface RunShow { run: { status: string; steps: Record<string, { status: string; output?: { decision?: string } }>; entityVersion: number }; history: Array<{ version: number; type: string; data: { through?: number; events?: number } }> }
const show = (runId: string) => JSON.parse(keel(['run', 'show', runId, '--json']).stdout) as RunShow;

async function startRun(text: string): Promise<{ runId: string; approvalId: string }> {
  const { runId } = (await api('POST', '/v1/runs', { workflow: 'auth-review', input: { text } })) as { runId: string };
  let approvalId = '';
  await waitFor(async () => !!(approvalId = ((await api('GET', '/v1/approvals')).approvals as Array<{ id: string; correlationId: string }>).find((a) => a.correlationId === runId)?.id ?? ''), { timeoutMs: 15_000, what: 'the approval' });
  return { runId, approvalId };
}

beforeAll(async () => {
  engine = await startEngineProcess({ KEEL_AGENTS: 'none', KEEL_WORKFLOWS: WORKFLOW, KEEL_LOG_LEVEL: 'warn', KEEL_RUN_RETENTION: '2s', KEEL_RETENTION_INTERVAL: '1s' });
}, 90_000);

afterAll(async () => {
  if (engine) {
    await engine.stop('SIGINT');
    engine.cleanup();
  }
});

describe('retention in the engine', () => {
  it('compacts a finished run\'s history by itself, keeps its steps, leaves a live run alone and reports in retention.json', async () => {
    const done = await startRun('finish me');
    const live = await startRun('leave me waiting');
    expect(await api('POST', `/v1/approvals/${done.approvalId}`, { decision: 'approved' })).toMatchObject({ decision: 'approved', applied: true });
    await waitFor(() => show(done.runId).run.status === 'completed', { timeoutMs: 15_000, what: 'the approved run to complete' });
    const before = show(done.runId);
    expect(before.history.length).toBeGreaterThan(1);
    // older than 2 s, then the next 1 s pass
    await waitFor(() => show(done.runId).history.length === 1, { timeoutMs: 20_000, intervalMs: 500, what: 'the finished run compacted' });
    const after = show(done.runId);
    expect(after.history).toEqual([expect.objectContaining({ type: 'compacted', version: before.run.entityVersion + 1, data: expect.objectContaining({ through: before.run.entityVersion, events: before.history.length }) })]);
    expect(after.run.status).toBe('completed');
    expect(after.run.steps.review).toMatchObject({ status: 'completed', output: { decision: 'approved' } });
    // a compacted run can be re-driven: the retry appends after the `compacted` event
    const retry = keel(['run', 'retry', done.runId, '--from', 'review']);
    expect(retry.status, retry.stderr).toBe(0);
    await waitFor(() => show(done.runId).run.steps.review?.status === 'waiting_approval', { timeoutMs: 15_000, what: 'the retried run at its approval again' });
    expect(show(done.runId).history.map((h) => h.type).slice(0, 2)).toEqual(['compacted', 'step_reset']);
    // the waiting run is not finished: its history stays whole
    const waiting = show(live.runId);
    expect(waiting.run.status).toBe('running');
    expect(waiting.history.map((h) => h.type)).not.toContain('compacted');
    // the engine's report
    const file = join(engine!.dataDir, 'retention.json');
    await waitFor(() => existsSync(file), { timeoutMs: 5_000, what: 'retention.json' });
    const saved = JSON.parse(readFileSync(file, 'utf8')) as { watermarks: Record<string, string>; last: { histories: Array<{ entityType: string }> } };
    expect(saved.watermarks.workflow_run).toMatch(/^\d{4}-\d\d-\d\dT/);
    expect(saved.last.histories.map((h) => h.entityType)).toEqual(['workflow_run', 'workflow_lane']);
    // a decision on the waiting run still works after passes went by
    expect(await api('POST', `/v1/approvals/${live.approvalId}`, { decision: 'rejected', reason: 'no' })).toMatchObject({ decision: 'rejected', applied: true });
    await waitFor(() => show(live.runId).run.status !== 'running', { timeoutMs: 15_000, what: 'the rejected run to finish' });
  }, 90_000);
});
