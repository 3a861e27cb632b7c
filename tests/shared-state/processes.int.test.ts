import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore, type StateStore } from '../../shared-state/index.ts';
import { startMongo, tempDir, uniqueName, type MongoHandle } from '../helpers/index.ts';
import { ALL_ENTITY_TYPES } from '../helpers/types.ts';

const APPENDER = join(import.meta.dirname, 'fixtures', 'appender.ts');

/** Starts an appender; `ready` resolves once it has opened the store and waits for the go file. */
function run(env: Record<string, string>): { ready: Promise<void>; done: Promise<{ code: number | null; stdout: string; stderr: string }> } {
  let ready!: () => void;
  const isReady = new Promise<void>((r) => (ready = r));
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, ['--no-warnings', APPENDER], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (stderr.includes('ready\n')) ready();
    });
    child.on('close', (code) => {
      ready();
      resolve({ code, stdout, stderr });
    });
  });
  return { ready: isReady, done };
}

let mongo: MongoHandle | undefined;
let mongoReason = '';
const dir = tempDir('keel-state-procs-');
beforeAll(async () => {
  const m = await startMongo();
  if (m.ok) mongo = m.server;
  else mongoReason = m.reason;
});
afterAll(async () => {
  await mongo?.stop();
  dir.remove();
});

const targets: { name: string; url: () => string | null; env: () => Record<string, string> }[] = [];
{
  const path = join(dir.path, `${uniqueName('procs')}.db`);
  targets.push({ name: 'sqlite', url: () => `sqlite:${path}`, env: () => ({}) });
  const db = uniqueName('procs');
  targets.push({ name: 'mongodb', url: () => (mongo ? mongo.url : null), env: () => ({ STATE_DB: db }) });
}

describe('several OS processes appending to the same entities at once', () => {
  for (const t of targets) {
    it(`${t.name}: no lost update, every conflict surfaced to its writer`, async (ctx) => {
      const url = t.url();
      if (!url) return ctx.skip(mongoReason);
      const extra = t.env();
      const store: StateStore = await openStore(url, { types: ALL_ENTITY_TYPES, ...(extra.STATE_DB ? { mongodb: { database: extra.STATE_DB } } : {}) });
      const ids = ['conv-a', 'conv-b'];
      try {
        for (const id of ids) await store.append('conversation', id, 0, [{ type: 'created', data: { channel: 'chat' } }], { actor: { kind: 'system', id: 'test' } });
        const workers = 4;
        const count = 30;
        // all children start appending at the same moment: once every one has opened the store
        const go = join(dir.path, uniqueName('go'));
        const procs = Array.from({ length: workers }, (_, w) => run({ KEEL_STATE: url, ENTITIES: ids.join(','), COUNT: String(count), WORKER: `w${w}`, GO_FILE: go, ...extra }));
        await Promise.all(procs.map((p) => p.ready));
        writeFileSync(go, 'go');
        const results = await Promise.all(procs.map((p) => p.done));
        const out = results.map((r) => {
          expect(r.code, r.stderr).toBe(0);
          return JSON.parse(r.stdout.trim()) as { ok: number; conflicts: number; other: string[]; observed: { expected: number; actual: number }[] };
        });
        for (const o of out) expect(o.other).toEqual([]);
        const ok = out.reduce((n, o) => n + o.ok, 0);
        const conflicts = out.reduce((n, o) => n + o.conflicts, 0);
        expect(ok).toBe(workers * count);
        // contention really happened, and each conflict named a stale expected version
        expect(conflicts).toBeGreaterThan(0);
        for (const o of out) for (const c of o.observed) expect(c.actual).toBeGreaterThan(c.expected);

        let messages = 0;
        const seen = new Set<string>();
        for (const id of ids) {
          const e = await store.get<{ messages: { id: string }[] }>('conversation', id);
          // final version == 1 (created) + successful appends to it; nothing was overwritten
          expect(e!.version).toBe(1 + e!.state.messages.length);
          expect((await store.history('conversation', id)).map((x) => x.version)).toEqual(Array.from({ length: e!.version }, (_, i) => i + 1));
          messages += e!.state.messages.length;
          for (const m of e!.state.messages) seen.add(m.id);
        }
        expect(messages).toBe(ok);
        expect(seen.size).toBe(ok);
        // the change log has each committed event once, in increasing cursor order
        const log = await store.changes({ since: 0, limit: 10_000 });
        expect(log.events).toHaveLength(ok + ids.length);
        expect(new Set(log.events.map((e) => e.cursor)).size).toBe(log.events.length);
        console.log(`[${t.name}] ${workers} processes: ${ok} appends, ${conflicts} conflicts surfaced and retried`);
      } finally {
        await store.close();
      }
    });
  }
});
