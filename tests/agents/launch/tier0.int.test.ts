/**
 * The launch with no model configured (tier 0: templates from the product and the notes), and
 * its exceptions: an overdue review task and a rejected asset block the product with the reason
 * and notify the operator. The engine runs as processes (`keel start`) with the three launch
 * agents, each its own process; the operator uses the CLI.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../../../config/index.ts';
import { startEngineProcess, waitFor, type EngineProcess } from '../../helpers/index.ts';

describe('launching at tier 0 (no model) and its exceptions', () => {
  let engine: EngineProcess | undefined;

  function keel(args: string[]): { status: number | null; stdout: string; stderr: string; json: <T = unknown>() => T } {
    const r = spawnSync(process.execPath, [join(REPO_ROOT, 'cli', 'keel.ts'), ...args], {
      env: { ...process.env, KEEL_DATA_DIR: engine!.dataDir, KEEL_NATS_PORT: String(engine!.natsPort), KEEL_LOG_LEVEL: 'silent', KEEL_OPERATOR: 'olivia' },
      encoding: 'utf8',
    });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr, json: <T,>() => JSON.parse(r.stdout) as T };
  }
  type Approval = { id: string; payload: { productId: string; slot: string } };
  const approvalsOf = (productId: string) => keel(['approvals', '--json']).json<{ approvals: Approval[] }>().approvals.filter((a) => a.payload?.productId === productId);
  const outbox = () => (existsSync(join(engine!.dataDir, 'outbox')) ? readdirSync(join(engine!.dataDir, 'outbox')).filter((f) => f.endsWith('.eml')).map((f) => readFileSync(join(engine!.dataDir, 'outbox', f), 'utf8')) : []);
  interface ProductShow {
    lifecycle: string;
    blocked?: { kind: string; reason: string; taskId?: string };
    exceptions: Array<{ kind: string; reason: string }>;
    launch?: { runId: string; runStatus: string };
    research?: { tier: number; note?: string; points: string[] };
    tasks: Array<{ id: string; owner: string; status: string; step?: string }>;
    assets: Array<{ slot: string; status: string; versions: Array<{ tier?: number; by: string }> }>;
    cost: { modelCalls: number };
  }
  const show = (id: string) => keel(['product', 'show', id, '--json']).json<ProductShow>();

  beforeAll(async () => {
    // no KEEL_MODEL_*: the agents have no model; reviews are due 8 s after a launch starts
    const noModels = Object.fromEntries(Object.keys(process.env).filter((k) => k.startsWith('KEEL_MODEL_')).map((k) => [k, '']));
    engine = await startEngineProcess({ ...noModels, KEEL_AGENTS: 'researcher,writer,marketer', KEEL_LOG_LEVEL: 'warn', KEEL_WORKFLOW_SWEEP_MS: '300', KEEL_LAUNCH_SWEEP_MS: '1000', KEEL_LAUNCH_REVIEW_DUE_MS: '8000', KEEL_LAUNCH_DUE_MS: '60000' });
    await waitFor(() => keel(['agents', '--json']).json<{ agents: unknown[] }>().agents.length >= 3, { timeoutMs: 60_000, intervalMs: 500, what: 'the three launch agents' });
  }, 120_000);

  afterAll(async () => {
    if (engine) {
      await engine.stop('SIGINT');
      engine.cleanup();
    }
  });

  it('with no model configured, the launch completes on templates filled from the product and the notes', async () => {
    const P = 'trail-kit';
    expect(keel(['product', 'create', '--name', 'Trail Kit', '--pitch', 'A repair kit for trail runners.', '--audience', 'trail runners', '--price', '19', '--notes', 'Trail runners told us a torn shoe ends the run. They carry less than 100 grams of gear.', '--subscribers', 'dee@example.com', '--json']).status).toBe(0);
    const started = keel(['launch', 'start', P, '--at', '+6s', '--follow-up-after', '1s', '--json']);
    expect(started.status, started.stderr).toBe(0);
    const { runId } = started.json<{ runId: string }>();
    await waitFor(() => approvalsOf(P).length === 4, { timeoutMs: 60_000, intervalMs: 300, what: 'four approvals' });
    for (const a of approvalsOf(P)) {
      const r = keel(['approve', a.id]);
      expect(r.status, `${a.id} ${a.payload.slot}: ${r.stdout}${r.stderr}`).toBe(0);
    }
    await waitFor(() => keel(['run', 'show', runId, '--json']).json<{ run: { status: string } }>().run.status === 'completed', { timeoutMs: 60_000, intervalMs: 500, what: 'the launch to complete' });
    const p = show(P);
    expect(p.lifecycle).toBe('done');
    expect(p.research!.tier).toBe(0);
    expect(p.research!.note).toMatch(/no web-search connector configured/);
    expect(p.research!.points.join(' ')).toMatch(/torn shoe/);
    for (const a of p.assets) expect(a.versions[0]).toMatchObject({ tier: 0, by: 'agent:writer' });
    expect(p.cost.modelCalls).toBe(0);
    const html = readFileSync(join(engine!.dataDir, 'site', P, 'index.html'), 'utf8');
    expect(html).toContain('<h1>Trail Kit</h1>');
    expect(html).toContain('$19');
    expect(outbox().filter((m) => /^X-Keel-Product: trail-kit$/m.test(m) && /^To: dee@example\.com$/m.test(m))).toHaveLength(2);
  }, 150_000);

  it('a review task left past its due time blocks the product (overdue, owner operator) and notifies the operator; a rejected asset blocks it with the reason', async () => {
    const P = 'rain-cape';
    expect(keel(['product', 'create', '--name', 'Rain Cape', '--pitch', 'A cape that packs into its own pocket.', '--audience', 'city cyclists', '--json']).status).toBe(0);
    const { runId } = keel(['launch', 'start', P, '--follow-up-after', '1s', '--json']).json<{ runId: string }>();
    await waitFor(() => approvalsOf(P).length === 4, { timeoutMs: 60_000, intervalMs: 300, what: 'four approvals' });
    // nobody reviews: 8 s after the start the operator's review tasks are overdue
    await waitFor(() => show(P).blocked?.kind === 'overdue', { timeoutMs: 60_000, intervalMs: 500, what: 'the product blocked as overdue' });
    const p = show(P);
    expect(p.lifecycle).toBe('blocked');
    expect(p.blocked!.reason).toMatch(/^task 'Review .*' \(owner operator\) is overdue: it was due /);
    const task = p.tasks.find((t) => t.id === p.blocked!.taskId)!;
    expect(task).toMatchObject({ owner: 'operator', status: 'todo' });
    expect(keel(['launches', '--json']).json<{ launches: Array<{ productId: string; lifecycle: string; blocked?: { kind: string } }> }>().launches.find((l) => l.productId === P)).toMatchObject({ lifecycle: 'blocked', blocked: { kind: 'overdue' } });
    await waitFor(() => outbox().some((m) => /^To: operator@keel\.local$/m.test(m) && /Rain Cape: task overdue/.test(m)), { timeoutMs: 30_000, what: 'the overdue notice' });
    // the operator rejects the landing page: the launch stops, blocked with the reason
    const page = approvalsOf(P).find((a) => a.payload.slot === 'page')!;
    expect(keel(['reject', page.id, '--reason', 'off-brand colours']).status).toBe(0);
    await waitFor(() => show(P).blocked?.kind === 'rejected', { timeoutMs: 60_000, intervalMs: 500, what: 'the product blocked by the rejection' });
    const after = show(P);
    expect(after.blocked!.reason).toMatch(/asset 'page'.*rejected by human:olivia: off-brand colours/);
    expect(after.exceptions.map((e) => e.kind)).toEqual(expect.arrayContaining(['overdue', 'rejected']));
    expect(after.assets.find((a) => a.slot === 'page')!.status).toBe('rejected');
    expect(keel(['run', 'show', runId, '--json']).json<{ run: { status: string } }>().run.status).toBe('failed');
    const notices = outbox().filter((m) => /^To: operator@keel\.local$/m.test(m) && /Rain Cape blocked \(rejected\)/.test(m));
    expect(notices).toHaveLength(1);
    // the notice says how to go on: the page is written again and comes back for review
    expect(notices[0]!.replace(/=\r?\n/g, '')).toContain(`keel run retry ${runId} --from write-page`);
    expect(keel(['run', 'retry', runId, '--from', 'write-page']).status).toBe(0);
    await waitFor(() => approvalsOf(P).some((a) => a.payload.slot === 'page' && a.id !== page.id), { timeoutMs: 60_000, intervalMs: 300, what: 'a new approval for the page' });
    expect(show(P).lifecycle).toBe('review');
    for (const a of approvalsOf(P)) {
      const r = keel(['approve', a.id]);
      expect(r.status, `${a.id} ${a.payload.slot}: ${r.stdout}${r.stderr}`).toBe(0);
    }
    await waitFor(() => keel(['run', 'show', runId, '--json']).json<{ run: { status: string } }>().run.status === 'completed', { timeoutMs: 60_000, intervalMs: 500, what: 'the resumed launch to complete' });
    const done = show(P);
    expect(done.lifecycle).toBe('done');
    expect(done.assets.find((a) => a.slot === 'page')!.versions).toHaveLength(2);
    expect(existsSync(join(engine!.dataDir, 'site', P, 'index.html'))).toBe(true);
  }, 200_000);
});
