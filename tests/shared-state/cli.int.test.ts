import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../config/index.ts';
import { openStore } from '../../shared-state/index.ts';
import { tempDir, uniqueName } from '../helpers/index.ts';
import { ALL_ENTITY_TYPES } from '../helpers/types.ts';

const dir = tempDir('keel-state-cli-');
afterAll(() => dir.remove());

function keel(args: string[], state: string) {
  const r = spawnSync(process.execPath, ['--no-warnings', join(REPO_ROOT, 'cli', 'keel.ts'), ...args], { env: { ...process.env, KEEL_STATE: state }, encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('keel entity / changes / audit', () => {
  it('tampering with one audit record is detected by `keel audit verify`', async () => {
    const path = join(dir.path, `${uniqueName('audit')}.db`);
    const state = `sqlite:${path}`;
    const store = await openStore(state, { types: ALL_ENTITY_TYPES });
    for (let i = 1; i <= 5; i++) await store.appendAudit({ actor: { kind: 'human', id: 'op' }, action: 'approval.decided', subject: `approval/a${i}`, details: { decision: 'approved' } });
    await store.close();

    const ok = keel(['audit', 'verify', '--json'], state);
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ ok: true, records: 5 });
    const exported = keel(['audit', 'export'], state).stdout.trim().split('\n').map((l) => JSON.parse(l) as { seq: number; hash: string });
    expect(exported.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(keel(['audit', 'export', '--after', '3'], state).stdout.trim().split('\n')).toHaveLength(2);
    // --since is a time everywhere; a position in the log is --after
    expect(keel(['audit', 'export', '--since', '1h'], state).stdout.trim().split('\n')).toHaveLength(5);
    expect(keel(['audit', 'export', '--since', new Date(Date.now() + 60_000).toISOString()], state).stdout.trim()).toBe('');
    const old = keel(['audit', 'export', '--since', '3', '--json'], state);
    expect(old.code).toBe(1);
    expect(JSON.parse(old.stdout)).toMatchObject({ error: 'CLI_BAD_ARGUMENT', message: expect.stringMatching(/use --after 3/) });

    const db = new DatabaseSync(path);
    db.prepare('UPDATE audit SET details = ? WHERE seq = 3').run(JSON.stringify({ decision: 'rejected' }));
    db.close();
    const bad = keel(['audit', 'verify', '--json'], state);
    expect(bad.code).toBe(1);
    expect(JSON.parse(bad.stdout)).toMatchObject({ ok: false, brokenAt: 3 });
    const human = keel(['audit', 'verify'], state);
    expect(human.code).toBe(1);
    expect(human.stderr).toMatch(/BROKEN at record 3/);

    // deleting a record is detected too (the chain skips a seq)
    const db2 = new DatabaseSync(path);
    db2.prepare('UPDATE audit SET details = ? WHERE seq = 3').run(JSON.stringify({ decision: 'approved' }));
    expect(JSON.parse(keel(['audit', 'verify', '--json'], state).stdout)).toMatchObject({ ok: true });
    db2.prepare('DELETE FROM audit WHERE seq = 2').run();
    db2.close();
    expect(JSON.parse(keel(['audit', 'verify', '--json'], state).stdout)).toMatchObject({ ok: false, brokenAt: 2 });
  });

  it('lists, shows (current, at a version, history) and reads the change log, with --json and clear errors', async () => {
    const state = `sqlite:${join(dir.path, `${uniqueName('cli')}.db`)}`;
    const store = await openStore(state, { types: ALL_ENTITY_TYPES });
    const actor = { kind: 'agent', id: 'triage' } as const;
    await store.append('ticket', 'T-7', 0, [{ type: 'created', data: { subject: 'Where is my parcel?' } }], { actor, correlationId: 'conv-1', causationId: 'mail-1' });
    await store.append('ticket', 'T-7', 1, [{ type: 'updated', data: { status: 'escalated' } }], { actor: { kind: 'human', id: 'op' } });
    await store.append('customer', 'ada', 0, [{ type: 'created', data: { name: 'Ada' } }], { actor });
    await store.close();

    const list = keel(['entity', 'list', '--type', 'ticket'], state);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/T-7\s+2\s+.*Where is my parcel\? \[escalated\]/);
    expect(JSON.parse(keel(['entity', 'list', '--type', 'ticket', '--where', 'status=open', '--json'], state).stdout)).toMatchObject({ items: [], total: 0 });

    expect(JSON.parse(keel(['entity', 'show', 'T-7', '--json'], state).stdout)).toMatchObject({ entityType: 'ticket', version: 2, state: { status: 'escalated' } });
    expect(JSON.parse(keel(['entity', 'show', 'T-7', '--at', '1', '--json'], state).stdout)).toMatchObject({ version: 1, state: { status: 'open' } });
    const hist = JSON.parse(keel(['entity', 'show', 'T-7', '--type', 'ticket', '--history', '--json'], state).stdout) as { events: { meta: unknown }[] };
    expect(hist.events).toHaveLength(2);
    expect(hist.events[0]!.meta).toEqual({ actor, correlationId: 'conv-1', causationId: 'mail-1' });
    expect(keel(['entity', 'show', 'T-7', '--history'], state).stdout).toMatch(/mail-1\s+conv-1/);

    const ch = JSON.parse(keel(['changes', '--after', '1', '--json'], state).stdout) as { events: { cursor: number }[]; cursor: number };
    expect(ch.events.map((e) => e.cursor)).toEqual([2, 3]);
    expect(ch.cursor).toBe(3);
    expect(JSON.parse(keel(['changes', '--type', 'customer', '--json'], state).stdout).events).toHaveLength(1);
    expect(keel(['changes', '--after', '3'], state).stdout).toMatch(/no changes after cursor 3/);
    expect(keel(['changes', '--after', '1'], state).stdout).toMatch(/next: keel changes --after 3/);
    expect((JSON.parse(keel(['changes', '--since', '1h', '--json'], state).stdout) as { events: unknown[] }).events).toHaveLength(3);
    expect((JSON.parse(keel(['changes', '--since', '1h', '--type', 'customer', '--json'], state).stdout) as { events: unknown[] }).events).toHaveLength(1);
    expect(keel(['changes', '--since', new Date(Date.now() + 60_000).toISOString()], state).stdout).toMatch(/no changes since/);
    const cursor = keel(['changes', '--since', '5'], state);
    expect(cursor.code).toBe(1);
    expect(cursor.stderr).toMatch(/^error \[CLI_BAD_ARGUMENT\]: --since takes a duration .* use --after 5/);

    const missing = keel(['entity', 'show', 'nope', '--json'], state);
    expect(missing.code).toBe(1);
    expect(JSON.parse(missing.stdout)).toMatchObject({ error: 'STATE_NOT_FOUND' });
    const unknown = keel(['entity', 'list', '--type', 'spaceship'], state);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/unknown entity type 'spaceship'; known types: customer/);
    expect(keel(['changes', '--after', 'x'], state).stderr).toMatch(/--after must be an integer/);
    expect(keel(['changes', '--since', 'x'], state).stderr).toMatch(/--since takes a duration \(15m, 2h, 7d/);
  });
});
