/**
 * `keel deploy mongo-users`: the mongosh script creates one role per agent limited to the
 * collections Keel's MongoDB code really uses, and one user per agent. Against a real MongoDB
 * (MONGODB_URL or a container) the roles are applied and enforced; FerretDB 1.24 (the provisioned
 * server here) has no createRole, which this test pins so the docs stay true.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { runInNewContext } from 'node:vm';
import { MongoClient } from 'mongodb';
import { REPO_ROOT } from '../../config/index.ts';
import { reportSkip, startMongo, tempDir, uniqueName } from '../../testkit/index.ts';

const dir = tempDir('keel-mongo-users-');
afterAll(() => dir.remove());

interface Call {
  fn: 'createRole' | 'createUser';
  arg: { role?: string; user?: string; pwd?: string; privileges?: Array<{ resource: { db: string; collection: string }; actions: string[] }>; roles: Array<{ role: string; db: string }> };
}

/** Runs the script against a recording stand-in for mongosh's `db`: it must run, and says what it would create. */
function record(script: string, database: string): Call[] {
  const calls: Call[] = [];
  const kdb = {
    getRole: () => null,
    getUser: () => null,
    dropRole: () => undefined,
    dropUser: () => undefined,
    createRole: (arg: Call['arg']) => void calls.push({ fn: 'createRole', arg }),
    createUser: (arg: Call['arg']) => void calls.push({ fn: 'createUser', arg }),
  };
  runInNewContext(script, { db: { getSiblingDB: (name: string) => (expect(name).toBe(database), kdb) }, print: () => undefined });
  return calls;
}

/** The collections Keel's MongoDB code opens, read from its source. */
function usedCollections(): string[] {
  const out = new Set<string>();
  for (const f of ['shared-state/mongo-store.ts', 'runtime/langgraph/mongo-backend.ts'])
    for (const m of readFileSync(join(REPO_ROOT, f), 'utf8').matchAll(/\.collection\('([a-z_]+)'\)/g)) out.add(m[1]!);
  return [...out].sort();
}

describe('keel deploy mongo-users', () => {
  const database = uniqueName('keeldb');
  const out = join(dir.path, 'users.js');
  const r = spawnSync(join(REPO_ROOT, 'node_modules/.bin/node'), ['cli/keel.ts', 'deploy', 'mongo-users', '--out', out, '--database', database, '--json'], {
    cwd: REPO_ROOT,
    encoding: 'utf8',
    env: { ...process.env, KEEL_DATA_DIR: join(dir.path, 'data') },
  });

  it('writes a script with one role per agent, limited to the store\'s collections', () => {
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const j = JSON.parse(r.stdout) as { roles: string[]; users: Array<{ user: string; agent: string | null }>; collections: string[] };
    expect(statSync(out).mode & 0o777).toBe(0o600);
    const calls = record(readFileSync(out, 'utf8'), database);
    const roles = calls.filter((c) => c.fn === 'createRole');
    const users = calls.filter((c) => c.fn === 'createUser');
    expect(roles.map((c) => c.arg.role)).toEqual(j.roles);
    expect(users.map((c) => c.arg.user)).toEqual(j.users.map((u) => u.user));
    expect(roles.length).toBe(j.users.filter((u) => u.agent).length);
    for (const role of roles) {
      const colls = role.arg.privileges!.map((p) => p.resource.collection).filter(Boolean).sort();
      expect(colls).toEqual(usedCollections());
      for (const p of role.arg.privileges!) {
        expect(p.resource.db).toBe(database);
        expect(p.actions).not.toContain('dropCollection');
        expect(p.actions).not.toContain('dropDatabase');
      }
    }
    // each agent user holds exactly its own role, with its own password
    for (const u of users.filter((c) => c.arg.user !== 'keel-engine')) expect(u.arg.roles).toEqual([{ role: `keel_agent_${u.arg.user!.replace(/^agent-/, '')}`, db: database }]);
    expect(new Set(users.map((u) => u.arg.pwd)).size).toBe(users.length);
  });

  it('is enforced by MongoDB; FerretDB 1.24 has no roles', async (ctx) => {
    const m = await startMongo();
    if (!m.ok) {
      reportSkip('mongo-users against a server', m.reason);
      return ctx.skip(m.reason);
    }
    const admin = new MongoClient(m.server.url, { serverSelectionTimeoutMS: 5_000 });
    try {
      const kdb = admin.db(database);
      const calls = record(readFileSync(out, 'utf8'), database);
      if (m.server.flavor === 'ferretdb') {
        const role = calls.find((c) => c.fn === 'createRole')!.arg;
        await expect(kdb.command({ createRole: role.role, privileges: role.privileges, roles: [] })).rejects.toThrow(/no such command: 'createRole'/);
        return;
      }
      for (const c of calls) {
        if (c.fn === 'createRole') await kdb.command({ createRole: c.arg.role, privileges: c.arg.privileges, roles: [] });
        else await kdb.command({ createUser: c.arg.user, pwd: c.arg.pwd, roles: c.arg.roles });
      }
      const triage = calls.find((c) => c.fn === 'createUser' && c.arg.user === 'agent-triage')!.arg;
      const u = new URL(m.server.url);
      u.username = triage.user!;
      u.password = triage.pwd!;
      u.searchParams.set('authSource', database);
      const agent = new MongoClient(u.toString(), { serverSelectionTimeoutMS: 5_000 });
      try {
        const adb = agent.db(database);
        await adb.collection('entities').insertOne({ _id: 'x' } as never);
        expect(await adb.collection('entities').countDocuments()).toBe(1);
        await expect(adb.collection('not_keel').insertOne({ a: 1 })).rejects.toThrow(/not authorized/);
        await expect(adb.dropDatabase()).rejects.toThrow(/not authorized/);
      } finally {
        await agent.close();
      }
    } finally {
      await admin.db(database).dropDatabase().catch(() => undefined);
      await admin.close();
      await m.server.stop();
    }
  });
});
