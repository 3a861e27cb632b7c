/**
 * The sandbox's flag builder (engine/sandbox.ts), its manifest validation (runtime/define.ts), the
 * error normalizer that makes ERR_ACCESS_DENIED permanent (runtime/errors.ts), and the cgroup
 * manager on a stand-in hierarchy. tests/engine/sandbox.int.test.ts runs the real thing.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { toFailure } from '../../bus/index.ts';
import { defineAgent, defineCapability, sandboxDenial, SandboxDeniedError, type AgentSandbox } from '../../runtime/index.ts';
import { agentProcessSpecs, groupAgentProcesses, type PlannedAgent } from '../../engine/supervisor.ts';
import { AGENT_DATA_DIRS, agentSandboxNeeds, DEFAULT_MAX_OLD_SPACE_MB, detectCgroups, prepareSandboxDirs, processCompileCacheDir, resolveSandboxPath, sandboxContext, sandboxEnabled, sandboxPlan, type SandboxContext } from '../../engine/sandbox.ts';
import { tempDir } from '../helpers/index.ts';

const ctx: SandboxContext = { repoRoot: '/app', dataDir: '/var/keel', modelsDir: '/cache/keel/models', compileCacheDir: '/tmp/node-compile-cache' };
const reads = (flags: string[]) => flags.filter((f) => f.startsWith('--allow-fs-read=')).map((f) => f.slice('--allow-fs-read='.length));
const writes = (flags: string[]) => flags.filter((f) => f.startsWith('--allow-fs-write=')).map((f) => f.slice('--allow-fs-write='.length));

const cap = (name: string, memory?: 'read' | 'write') =>
  defineCapability({ name, version: '1', input: z.object({}), output: z.object({}), ...(memory ? { permissions: { memory } } : {}), handler: async () => ({}) });

describe('sandbox flags (engine/sandbox.ts)', () => {
  it('base allowance: repo and node_modules and models read, the data dir\'s agent folders and compile cache read/write, nothing else', () => {
    const p = sandboxPlan([{ name: 'intake' }], ctx);
    expect(p.permission).toBe(true);
    expect(p.flags[0]).toBe('--permission');
    expect(reads(p.flags).sort()).toEqual(['/app', '/app/node_modules', '/cache/keel/models', '/tmp/node-compile-cache', '/var/keel/attachments', '/var/keel/outbox', '/var/keel/site'].sort());
    expect(writes(p.flags).sort()).toEqual(['/tmp/node-compile-cache', '/var/keel/outbox', '/var/keel/site']);
    // one flag per path: Node 24 takes `a,b` as one path named "a,b"
    for (const f of p.flags) expect(f).not.toContain(',');
    expect(p.flags).not.toContain('--allow-child-process');
    expect(p.flags).not.toContain('--allow-worker');
    expect(p.flags).not.toContain('--allow-addons');
    expect(p.flags).toContain(`--max-old-space-size=${DEFAULT_MAX_OLD_SPACE_MB}`);
  });

  it('the data dir root is in no grant: operators.json and credentials.json are outside every allowance', () => {
    // a path is granted when a grant is the path or one of its folders (Node extends a folder grant to its contents)
    const covers = (grants: string[], path: string) => grants.some((g) => path === g || path.startsWith(`${g}/`));
    const plans = [
      sandboxPlan([{ name: 'intake' }], ctx),
      sandboxPlan([{ name: 'triage', sandbox: { fsWrite: ['$KEEL_MODELS_DIR/../cache'] } }, { name: 'sender' }], ctx),
      sandboxPlan([{ name: 'a' }], sandboxContext({ dataDir: '/var/keel', modelsDir: '/m', state: 'sqlite:/var/keel/keel.db', memory: 'sqlite-vec:/var/keel/memory.db' }, { NODE_COMPILE_CACHE: '/cc' }, '/app')),
    ];
    for (const p of plans) {
      expect(p.fsRead).not.toContain('/var/keel');
      expect(p.fsWrite).not.toContain('/var/keel');
      for (const secret of ['/var/keel/operators.json', '/var/keel/credentials.json']) {
        expect(covers(reads(p.flags), secret), `read ${secret}`).toBe(false);
        expect(covers(writes(p.flags), secret), `write ${secret}`).toBe(false);
      }
      // the agents' folders are there; the SQLite files need none (node:sqlite is not checked)
      for (const d of AGENT_DATA_DIRS.write) expect(writes(p.flags)).toContain(`/var/keel/${d}`);
      for (const d of AGENT_DATA_DIRS.read) expect(reads(p.flags)).toContain(`/var/keel/${d}`);
      expect(covers(writes(p.flags), '/var/keel/attachments/x')).toBe(false);
    }
  });

  it('each agent process has its own compile cache folder, and only that one is in its allowance', () => {
    const triage = processCompileCacheDir('/tmp/node-compile-cache', 'triage-0');
    const sender = processCompileCacheDir('/tmp/node-compile-cache', 'sender-0');
    expect(triage).not.toBe(sender);
    expect(triage.startsWith('/tmp/node-compile-cache/')).toBe(true);
    expect(processCompileCacheDir('/tmp/node-compile-cache/', 'triage-0')).toBe(triage);
    expect(processCompileCacheDir('/cc', '../x/y#1')).toBe('/cc/agent-.._x_y_1');
    const p = sandboxPlan([{ name: 'triage' }], { ...ctx, compileCacheDir: triage });
    expect(writes(p.flags)).toContain(triage);
    expect(reads(p.flags)).not.toContain('/tmp/node-compile-cache');
    expect(writes(p.flags)).not.toContain('/tmp/node-compile-cache');
    expect([...reads(p.flags), ...writes(p.flags)].some((g) => sender === g || sender.startsWith(`${g}/`))).toBe(false);
  });

  it('a manifest adds paths (data-dir relative, absolute, $KEEL_MODELS_DIR), child processes, workers and its heap cap', () => {
    const sandbox: AgentSandbox = { fsRead: ['inbox', '/srv/templates'], fsWrite: ['$KEEL_MODELS_DIR/../cache'], childProcess: true, workers: true, maxOldSpaceMb: 512 };
    const p = sandboxPlan([{ name: 'a', sandbox }], ctx);
    expect(reads(p.flags)).toEqual(expect.arrayContaining(['/var/keel/inbox', '/srv/templates', '/cache/keel/cache']));
    // a writable path is readable too
    expect(writes(p.flags)).toContain('/cache/keel/cache');
    expect(p.flags).toEqual(expect.arrayContaining(['--allow-child-process', '--allow-worker', '--max-old-space-size=512']));
    expect(resolveSandboxPath('$KEEL_DATA_DIR', ctx)).toBe('/var/keel');
    expect(resolveSandboxPath('$KEEL_DATA_DIR/x/../y', ctx)).toBe('/var/keel/y');
  });

  it('a host gets the union of its agents\' allowances and the largest caps', () => {
    const p = sandboxPlan(
      [
        { name: 'a', sandbox: { fsRead: ['/only/a'], maxOldSpaceMb: 300, memoryMaxMb: 400 } },
        { name: 'b', sandbox: { fsWrite: ['/only/b'], workers: true, maxOldSpaceMb: 128, cpuPercent: 50 } },
        { name: 'c' },
      ],
      ctx,
    );
    expect(reads(p.flags)).toEqual(expect.arrayContaining(['/only/a', '/only/b']));
    expect(writes(p.flags)).toContain('/only/b');
    expect(writes(p.flags)).not.toContain('/only/a');
    expect(p.flags).toContain('--allow-worker');
    expect(p.flags).not.toContain('--allow-child-process');
    expect(p.flags).toContain('--max-old-space-size=300');
    expect(p.flags.filter((f) => f.startsWith('--max-old-space-size'))).toHaveLength(1);
    expect([p.memoryMaxMb, p.cpuPercent]).toEqual([400, 50]);
  });

  it('sqlite-vec memory turns the permission model off for that process only (Node refuses SQLite extensions under it), keeping the heap cap', () => {
    const memo = defineAgent({ name: 'memo', version: '1', capabilities: [cap('m.recall', 'read')] });
    const plain = defineAgent({ name: 'plain', version: '1', capabilities: [cap('p.do')] });
    expect(agentSandboxNeeds(memo, 'sqlite-vec:/var/keel/memory.db').loadsSqliteExtensions).toBe(true);
    expect(agentSandboxNeeds(memo, 'http://qdrant:6333').loadsSqliteExtensions).toBe(false);
    expect(agentSandboxNeeds(plain, 'sqlite-vec:/var/keel/memory.db').loadsSqliteExtensions).toBe(false);
    const host = sandboxPlan([agentSandboxNeeds(plain, 'sqlite-vec:/m.db'), agentSandboxNeeds(memo, 'sqlite-vec:/m.db')], ctx);
    expect(host.permission).toBe(false);
    expect(host.permissionOffReason).toMatch(/memo uses long-term memory in sqlite-vec.*ERR_LOAD_SQLITE_EXTENSION/);
    expect(host.flags).toEqual([`--max-old-space-size=${DEFAULT_MAX_OLD_SPACE_MB}`]);
    expect(sandboxPlan([agentSandboxNeeds(plain, 'sqlite-vec:/m.db')], ctx).permission).toBe(true);
  });

  it('KEEL_AGENT_SANDBOX=0: no flags at all; anything but 1/0 is refused', () => {
    const off = sandboxPlan([{ name: 'a', sandbox: { maxOldSpaceMb: 512, memoryMaxMb: 300 } }], ctx, false);
    expect(off).toMatchObject({ permission: false, flags: [], memoryMaxMb: undefined, permissionOffReason: 'KEEL_AGENT_SANDBOX=0' });
    expect(sandboxEnabled({})).toBe(true);
    expect(sandboxEnabled({ KEEL_AGENT_SANDBOX: '1' })).toBe(true);
    expect(sandboxEnabled({ KEEL_AGENT_SANDBOX: '0' })).toBe(false);
    expect(() => sandboxEnabled({ KEEL_AGENT_SANDBOX: 'maybe' })).toThrow(/KEEL_AGENT_SANDBOX/);
  });

  it('the base allowance follows the configuration: scripted model files, state and memory files outside the data dir', () => {
    const c = sandboxContext(
      { dataDir: '/var/keel', modelsDir: '/m', state: 'sqlite:/db/keel.db', memory: 'sqlite-vec:/var/keel/memory.db' },
      { KEEL_MODEL_SMALL: 'scripted:/scripts/small.json', KEEL_MODEL_LARGE: 'openai:gpt-4o', NODE_COMPILE_CACHE: '/cc' },
      '/app',
    );
    expect(c).toMatchObject({ dataDir: '/var/keel', modelsDir: '/m', compileCacheDir: '/cc', extraRead: ['/scripts/small.json'], extraWrite: ['/db'] });
    const p = sandboxPlan([{ name: 'a' }], c);
    expect(reads(p.flags)).toContain('/scripts/small.json');
    expect(writes(p.flags)).toContain('/db');
  });

  it('creates missing writable folders first (Node extends a grant to a folder\'s contents only if it exists at start)', () => {
    const d = tempDir('keel-sbx-dirs-');
    try {
      const c: SandboxContext = { ...ctx, dataDir: join(d.path, 'data'), compileCacheDir: join(d.path, 'cc'), modelsDir: join(d.path, 'models') };
      const plan = sandboxPlan([{ name: 'a', sandbox: { fsWrite: ['$KEEL_MODELS_DIR/../cache'] } }], c);
      expect(prepareSandboxDirs(plan)).toEqual([]);
      // the data dir's agent folders, also the read-only attachments/ the engine fills later
      for (const p of ['data/outbox', 'data/site', 'data/attachments', 'cc', 'cache']) expect(existsSync(join(d.path, p)), p).toBe(true);
      // models are only read: not created
      expect(existsSync(join(d.path, 'models'))).toBe(false);
      expect(prepareSandboxDirs({ ...plan, permission: false, fsWrite: [join(d.path, 'off')] })).toEqual([]);
      expect(existsSync(join(d.path, 'off'))).toBe(false);
    } finally {
      d.remove();
    }
  });

  it('agentProcessSpecs hands each process its agents\' sandbox needs (one per agent, all members for a host)', () => {
    const agent = (name: string): PlannedAgent => ({ name, entry: name, spec: `file:///app/${name}.ts`, replicas: 1 });
    const needs = (n: string) => ({ name: n, sandbox: { fsRead: [`/${n}`] } });
    const solo = agentProcessSpecs(groupAgentProcesses([agent('a'), agent('b')], undefined), { common: {}, sandbox: needs });
    expect(solo.map((s) => s.sandbox)).toEqual([[needs('a')], [needs('b')]]);
    const [host] = agentProcessSpecs(groupAgentProcesses([agent('a'), agent('b')], 'all'), { common: {}, sandbox: needs });
    expect(host!.sandbox).toEqual([needs('a'), needs('b')]);
    expect(agentProcessSpecs(groupAgentProcesses([agent('a')], undefined), { common: {} })[0]).not.toHaveProperty('sandbox');
  });
});

describe('sandbox manifest validation (defineAgent)', () => {
  const def = (sandbox: unknown) => () => defineAgent({ name: 'x', version: '1', capabilities: [cap('x.do')], sandbox: sandbox as AgentSandbox });
  it('accepts a well-formed sandbox and refuses bad fields, naming them', () => {
    expect(def({ fsRead: ['a', '/b'], fsWrite: ['$KEEL_DATA_DIR/out'], childProcess: false, workers: true, maxOldSpaceMb: 128, memoryMaxMb: 256, cpuPercent: 50 })).not.toThrow();
    expect(def({ fsRead: '/etc' })).toThrow(/sandbox\.fsRead must be a list/);
    expect(def({ fsWrite: ['*'] })).toThrow(/sandbox\.fsWrite: '\*'/);
    expect(def({ fsRead: [''] })).toThrow(/sandbox\.fsRead/);
    expect(def({ childProcess: 'yes' })).toThrow(/sandbox\.childProcess must be true or false/);
    expect(def({ maxOldSpaceMb: 8 })).toThrow(/sandbox\.maxOldSpaceMb must be an integer from 32/);
    expect(def({ cpuPercent: 0 })).toThrow(/sandbox\.cpuPercent/);
    expect(def({ network: true })).toThrow(/sandbox\.network is not a sandbox field/);
    expect(def([])).toThrow(/agent 'x': sandbox must be an object/);
    // the data dir's root (tokens, bus credentials) or a path out of it is never granted
    for (const p of ['$KEEL_DATA_DIR', '$KEEL_DATA_DIR/', '.', './', 'x/..', '../elsewhere', '$KEEL_DATA_DIR/../x']) expect(def({ fsWrite: [p] })).toThrow(/names the data dir itself or a path outside it/);
    expect(def({ fsRead: ['$KEEL_DATA_DIR'] })).toThrow(/names the data dir itself/);
    expect(def({ fsWrite: ['reports', '$KEEL_DATA_DIR/reports/2026', '$KEEL_MODELS_DIR/../cache', '/srv/keel'] })).not.toThrow();
  });
});

describe('ERR_ACCESS_DENIED → AGENT_SANDBOX_DENIED (permanent)', () => {
  it('turns Node\'s refusal (also as a cause) into a non-retryable error naming the permission and resource', () => {
    // a real refusal from Node's permission model, in a child process
    const r = spawnSync(process.execPath, ['--permission', '--allow-fs-read=/nonexistent-dir', '-e', "try { require('fs').readFileSync('/etc/hostname') } catch (e) { console.log(JSON.stringify({ code: e.code, permission: e.permission, resource: e.resource, message: e.message })) }"], { encoding: 'utf8' });
    const real = JSON.parse(r.stdout) as { code: string; permission: string; resource: string; message: string };
    expect(real).toMatchObject({ code: 'ERR_ACCESS_DENIED', permission: 'FileSystemRead', resource: '/etc/hostname' });
    const err = Object.assign(new Error(real.message), real);

    const d = sandboxDenial(err, 'probe', 'probe.read')!;
    expect(d).toBeInstanceOf(SandboxDeniedError);
    expect(d).toMatchObject({ code: 'AGENT_SANDBOX_DENIED', retryable: false, permission: 'FileSystemRead', resource: '/etc/hostname', agent: 'probe', capability: 'probe.read' });
    expect(d.message).toMatch(/^AGENT_SANDBOX_DENIED: .*FileSystemRead on \/etc\/hostname.*sandbox\.fsRead/);
    // the bus settles it as permanent: dead letter, no retry
    expect(toFailure(d)).toMatchObject({ retryable: false, code: 'AGENT_SANDBOX_DENIED' });
    // wrapped by a library error (e.g. an outbox write) it is still found
    const wrapped = Object.assign(new Error('could not write', { cause: Object.assign(new Error('denied'), { code: 'ERR_ACCESS_DENIED', permission: 'FileSystemWrite', resource: '/x' }) }), { code: 'CHANNEL_OUTBOX_WRITE', retryable: true });
    expect(sandboxDenial(wrapped, 'a', 'c')).toMatchObject({ permission: 'FileSystemWrite', resource: '/x' });
    expect(sandboxDenial(new Error('plain'), 'a', 'c')).toBeUndefined();
    expect(sandboxDenial(Object.assign(new Error('enoent'), { code: 'ENOENT' }), 'a', 'c')).toBeUndefined();
  });
});

describe('cgroup v2 limits (detectCgroups)', () => {
  it('off, with the reason, where there is no cgroup v2 hierarchy', () => {
    const d = tempDir('keel-cg-none-');
    try {
      const m = detectCgroups(d.path, '/');
      expect(m.available).toBe(false);
      expect(m.reason).toMatch(/no cgroup v2 hierarchy/);
      expect(m.place('a', 1, { memoryMaxMb: 10 })).toBeUndefined();
    } finally {
      d.remove();
    }
  });

  it('off when a controller is missing', () => {
    const d = tempDir('keel-cg-nocpu-');
    try {
      writeFileSync(join(d.path, 'cgroup.controllers'), 'memory pids\n');
      expect(detectCgroups(d.path, '/').reason).toMatch(/the cpu controller is not available/);
    } finally {
      d.remove();
    }
  });

  it('on a writable hierarchy: a child cgroup per process with memory.max, cpu.max and the pid', () => {
    // a stand-in for /sys/fs/cgroup (the kernel's files are plain files here)
    const d = tempDir('keel-cg-');
    try {
      writeFileSync(join(d.path, 'cgroup.controllers'), 'cpuset cpu io memory pids\n');
      writeFileSync(join(d.path, 'cgroup.subtree_control'), '');
      const m = detectCgroups(d.path, '/');
      expect(m.available).toBe(true);
      expect(readFileSync(join(d.path, 'cgroup.subtree_control'), 'utf8')).toBe('+memory +cpu');
      const dir = m.place('triage-1', 4242, { memoryMaxMb: 300, cpuPercent: 50 })!;
      expect(dir.startsWith(join(d.path, `keel-agents-${process.pid}`))).toBe(true);
      expect(readFileSync(join(dir, 'memory.max'), 'utf8')).toBe(String(300 * 1024 * 1024));
      expect(readFileSync(join(dir, 'cpu.max'), 'utf8')).toBe('50000 100000');
      expect(readFileSync(join(dir, 'cgroup.procs'), 'utf8')).toBe('4242');
      expect(m.place('plain-1', 4243, {})).toBeUndefined();
      expect(existsSync(dir)).toBe(true);
    } finally {
      d.remove();
    }
  });
});
