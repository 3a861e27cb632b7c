/**
 * `keel backup` / `keel backup verify` / `keel restore` without an engine process: a store made
 * here, a bus at KEEL_NATS_URL (a real nats-server) under a prefix of this test's own. What goes
 * into the files part and what does not, modes kept, counts and the audit head in the manifest,
 * the stores keel does not copy refused with the tool to use, and a restore into KEEL_NATS_URL
 * that refuses a bus holding Keel messages before it writes anything.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { join } from 'node:path';
import { z } from 'zod';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { REPO_ROOT } from '../../config/index.ts';
import { connectBus, createBus, defineMessage, subjects } from '../../bus/index.ts';
import { openStore, defineEntityType, checkSqlite, countState } from '../../shared-state/index.ts';
import { freePort, natsSuite, uniqueName } from '../helpers/index.ts';

const suite = natsSuite('backup-cli');
const note = defineEntityType({ name: 'note', schemaVersion: 1, schema: z.object({ text: z.string(), status: z.enum(['open', 'done']) }), searchFields: ['text'] });

function keel(env: Record<string, string>, args: string[]): { status: number | null; stdout: string; stderr: string; json: <T = Record<string, unknown>>() => T } {
  const r = spawnSync(process.execPath, [join(REPO_ROOT, 'cli', 'keel.ts'), ...args], { env: { ...process.env, KEEL_LOG_LEVEL: 'silent', ...env }, encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, json: <T,>() => JSON.parse(r.stdout) as T };
}

describe('keel backup and restore against KEEL_NATS_URL', () => {
  it('backs up a store, its streams and files; restores them into an empty bus and data dir', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const prefix = uniqueName('bkc');
    const s = subjects(prefix);
    const dataDir = join(suite.dir, 'data');
    const env = { KEEL_DATA_DIR: dataDir, KEEL_NATS_URL: suite.nats.url, KEEL_SUBJECT_PREFIX: prefix };

    // the store: notes in two statuses, three audit records, an approval
    const store = await openStore(`sqlite:${join(dataDir, 'keel.db')}`, { types: [note] });
    const actor = { kind: 'human', id: 'ada' } as const;
    for (let i = 0; i < 5; i++) await store.append('note', `n${i}`, 0, [{ type: 'created', data: { text: `note ${i}`, status: i < 2 ? 'done' : 'open' } }], { actor });
    for (let i = 0; i < 3; i++) await store.appendAudit({ actor, action: 'test.did', subject: `note/n${i}`, details: { i } });
    await store.createApproval({ action: 'reply.send', subject: 'note/n1', requestedBy: actor, deadline: new Date(Date.now() + 3_600_000).toISOString() });
    await store.close();
    // files: kept with their modes, partial writes, pid files and the bus store left out, another SQLite file snapshotted
    mkdirSync(join(dataDir, 'outbox', '.tmp'), { recursive: true });
    writeFileSync(join(dataDir, 'outbox', 'key-abc.eml'), 'Subject: hi\r\n\r\nhello\r\n', { mode: 0o640 });
    writeFileSync(join(dataDir, 'outbox', '.tmp', 'x.part'), 'half');
    writeFileSync(join(dataDir, 'operators.json'), '{"tokens":[]}', { mode: 0o600 });
    chmodSync(join(dataDir, 'operators.json'), 0o600);
    writeFileSync(join(dataDir, 'nats-server.pid'), '1');
    mkdirSync(join(dataDir, 'nats', 'jetstream'), { recursive: true });
    writeFileSync(join(dataDir, 'nats', 'jetstream', 'x'), 'store');
    const extra = new DatabaseSync(join(dataDir, 'extra.db'));
    extra.exec("PRAGMA journal_mode = WAL; CREATE TABLE t (x); INSERT INTO t VALUES ('kept')");
    // (left open: its WAL is live while the backup runs)

    // the bus: events, a dead letter, two tasks outside any workflow
    const nc = await connectBus({ servers: suite.nats.url });
    suite.defer(() => nc.close());
    const bus = createBus(nc, { prefix });
    await bus.provision();
    const js = jetstream(nc);
    for (let i = 0; i < 4; i++) await js.publish(s.evt('note', `n${i}`), JSON.stringify({ i }), { msgID: `not-in-state-${i}` });
    await js.publish(s.dlq('cap-a'), JSON.stringify({ reason: 'permanent_error', error: { code: 'X', message: 'no' }, subject: s.task('cap-a'), headers: {}, body: '{}', bodyEncoding: 'utf8', deliveries: 1, deadAt: new Date().toISOString() }));
    const Task = defineMessage('task.cap', z.object({ n: z.number() }));
    await bus.publish(s.task('cap-a'), Task, { n: 1 });
    await bus.publish(s.task('cap-b'), Task, { n: 2 });

    // refusals first: MongoDB state, Qdrant memory, a target inside the data dir, no bus
    const mongo = keel({ ...env, KEEL_STATE: 'mongodb://keel:s3cret@db.example:27017/keel' }, ['backup', '--to', join(suite.dir, 'm'), '--json']);
    expect(mongo.status).toBe(1);
    expect(mongo.json()).toMatchObject({ error: 'STATE_BACKUP_UNSUPPORTED', message: expect.stringContaining('mongodump') });
    expect(mongo.stdout).not.toContain('s3cret');
    expect(keel({ ...env, KEEL_MEMORY: 'http://127.0.0.1:6333' }, ['backup', '--to', join(suite.dir, 'q'), '--json']).json()).toMatchObject({ error: 'BACKUP_UNSUPPORTED', message: expect.stringContaining('--no-memory') });
    expect(keel(env, ['backup', '--to', join(dataDir, 'backups', 'b'), '--json']).json()).toMatchObject({ error: 'BACKUP_TARGET_INSIDE_DATA_DIR' });
    expect(keel({ ...env, KEEL_NATS_URL: `nats://127.0.0.1:${await freePort()}` }, ['backup', '--to', join(suite.dir, 'x'), '--json']).json()).toMatchObject({ error: 'CLI_NO_ENGINE' });
    expect(existsSync(join(suite.dir, 'x'))).toBe(false);

    const to = join(suite.dir, 'backup');
    const b = keel(env, ['backup', '--to', to, '--json']);
    extra.close();
    expect(b.status, b.stdout + b.stderr).toBe(0);
    const out = b.json<{ counts: { entities: Record<string, number>; approvals: Record<string, number>; audit: { records: number; head: string }; streams: Record<string, number> }; tasks: { kept: number; dropped: Record<string, number> }; memory: { skipped?: string } }>();
    expect(out.counts).toMatchObject({ entities: { note: 5 }, approvals: { pending: 1 }, audit: { records: 3 } });
    // no event of the bus is in the state (the store here has no outbox relay): all four left out
    expect(out.counts.streams).toEqual({ [s.streams.dlq]: 1, [s.streams.evt]: 0, [s.streams.in]: 0, [s.streams.out]: 0, [s.streams.tasks]: 2 });
    expect(out.tasks).toMatchObject({ kept: 2, dropped: {} });
    expect(out.memory.skipped).toMatch(/no memory store/);
    const manifest = JSON.parse(readFileSync(join(to, 'manifest.json'), 'utf8')) as { files: Array<{ path: string; mode: number; bytes: number }>; counts: { state: ReturnType<typeof countState>; runs: Record<string, number> }; parts: { streams: Array<{ name: string; dropped: number }> } };
    const paths = manifest.files.map((f) => f.path).sort();
    expect(paths).toEqual(['files/extra.db', 'files/operators.json', 'files/outbox/key-abc.eml', 'state/keel.db', ...[s.streams.dlq, s.streams.evt, s.streams.in, s.streams.out, s.streams.tasks].map((n) => `streams/${n}.jsonl`)].sort());
    expect(manifest.files.find((f) => f.path === 'files/outbox/key-abc.eml')!.mode).toBe(0o640);
    expect(manifest.files.find((f) => f.path === 'files/operators.json')!.mode).toBe(0o600);
    expect(manifest.counts.state.entities.note).toEqual({ total: 5, byStatus: { done: 2, open: 3 } });
    expect(manifest.parts.streams.find((x) => x.name === s.streams.evt)!.dropped).toBe(4);
    const extraCopy = new DatabaseSync(join(to, 'files', 'extra.db'), { readOnly: true });
    expect(extraCopy.prepare('SELECT x FROM t').get()).toEqual({ x: 'kept' });
    extraCopy.close();
    expect(checkSqlite(join(to, 'state', 'keel.db'))).toEqual({ ok: true, problems: [] });
    expect(keel(env, ['backup', 'verify', to, '--json']).json()).toMatchObject({ ok: true, checked: { files: 9, audit: { ok: true, records: 3 } } });

    // restore into the same bus: refused while its streams hold messages, before anything is written
    const restoredDir = join(suite.dir, 'restored');
    const renv = { ...env, KEEL_DATA_DIR: restoredDir };
    const busy = keel(renv, ['restore', to, '--json']);
    expect(busy.json()).toMatchObject({ error: 'RESTORE_TARGET_NOT_EMPTY', streams: expect.arrayContaining([{ name: s.streams.dlq, messages: 1 }]) });
    expect(existsSync(restoredDir)).toBe(false);
    // …and under another subject prefix
    expect(keel({ ...renv, KEEL_SUBJECT_PREFIX: `${prefix}x` }, ['restore', to, '--json']).json()).toMatchObject({ error: 'BACKUP_UNSUPPORTED', message: expect.stringContaining(`KEEL_SUBJECT_PREFIX=${prefix}`) });
    const jsm = await jetstreamManager(nc);
    for (const name of Object.values(s.streams)) await jsm.streams.delete(name).catch(() => undefined);
    const r = keel(renv, ['restore', to, '--json']);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.json()).toMatchObject({ restored: restoredDir, files: 3, streams: { [s.streams.dlq]: { messages: 1 }, [s.streams.tasks]: { messages: 2 } } });
    expect(countState(join(restoredDir, 'keel.db'))).toEqual(manifest.counts.state);
    expect(statSync(join(restoredDir, 'outbox', 'key-abc.eml')).mode & 0o777).toBe(0o640);
    expect(existsSync(join(restoredDir, 'nats-server.pid'))).toBe(false);
    const dlq = await jsm.streams.getMessage(s.streams.dlq, { seq: 1 });
    expect(dlq!.json()).toMatchObject({ reason: 'permanent_error' });
    expect((await jsm.streams.info(s.streams.tasks)).state.messages).toBe(2);
    // the restored store opens and its audit chain is the one that was backed up
    expect(keel(renv, ['audit', 'verify', '--json']).json()).toMatchObject({ ok: true, records: 3, head: out.counts.audit.head });
  });
});
