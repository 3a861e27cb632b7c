/**
 * The `keel` command's contract, as a process: one error format (JSON on stdout with --json,
 * usage errors included), refused filter values, and a data dir without a store refused with a
 * hint instead of showing an empty system.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../../config/index.ts';
import { startNats, tempDir } from '../helpers/index.ts';

const dirs: Array<{ path: string; remove(): void }> = [];
afterAll(() => dirs.forEach((d) => d.remove()));
const dataDir = () => {
  const d = tempDir('keel-cli-');
  dirs.push(d);
  return d.path;
};

function keel(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [join(REPO_ROOT, 'bin', 'keel.js'), ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, KEEL_STATE: '', KEEL_NATS_URL: '', KEEL_LOG_LEVEL: 'silent', ...env },
    encoding: 'utf8',
    timeout: 30_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, json: () => JSON.parse(r.stdout) as Record<string, unknown> };
}

describe('a data dir without a Keel store', () => {
  it('is refused by every command that reads state, naming the variable and how to fix it; keel init creates one on purpose', () => {
    const dir = join(dataDir(), 'typo');
    for (const args of [['tickets'], ['approvals'], ['runs'], ['cost'], ['changes'], ['entity', 'list', '--type', 'ticket'], ['ticket', 'show', 'tkt-1'], ['audit', 'verify']]) {
      const r = keel([...args, '--json'], { KEEL_DATA_DIR: dir });
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.json(), args.join(' ')).toMatchObject({ error: 'CLI_NO_STORE', dataDir: dir, state: `sqlite:${join(dir, 'keel.db')}` });
    }
    const human = keel(['tickets'], { KEEL_DATA_DIR: dir });
    expect(human.code).toBe(1);
    expect(human.stdout).toBe('');
    expect(human.stderr).toMatch(/^error \[CLI_NO_STORE\]: no Keel store at .*typo\/keel\.db \(KEEL_DATA_DIR=.*typo/);
    expect(human.stderr).toMatch(/Point KEEL_DATA_DIR at the running engine's data dir .*keel init/);
    expect(existsSync(join(dir, 'keel.db'))).toBe(false); // nothing was created by looking

    const state = `sqlite:${join(dir, 'other.db')}`;
    expect(keel(['approvals', '--json'], { KEEL_STATE: state }).json()).toMatchObject({ error: 'CLI_NO_STORE', message: expect.stringContaining(`KEEL_STATE=${state}`) });

    const init = keel(['init', '--json'], { KEEL_DATA_DIR: dir });
    expect(init.code, init.stderr).toBe(0);
    expect(init.json()).toEqual({ state: `sqlite:${join(dir, 'keel.db')}`, dataDir: dir, created: true });
    expect(keel(['init', '--json'], { KEEL_DATA_DIR: dir }).json()).toMatchObject({ created: false });
    const list = keel(['tickets'], { KEEL_DATA_DIR: dir });
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/^no tickets$/m);
  });
});

describe('errors: one contract', () => {
  const dir = dataDir();
  keel(['init'], { KEEL_DATA_DIR: dir });
  const k = (args: string[]) => keel(args, { KEEL_DATA_DIR: dir });

  it('usage errors from the argument parser honour --json: {"error": CODE, "message"} on stdout, nothing on stderr, exit 1', () => {
    const cases: Array<[string[], string, RegExp]> = [
      [['tickets', '--bogus', '--json'], 'CLI_UNKNOWN_OPTION', /unknown option '--bogus'/],
      [['tikets', '--json'], 'CLI_UNKNOWN_COMMAND', /unknown command 'tikets'[\s\S]*Did you mean tickets\?/],
      [['ticket', 'show', '--json'], 'CLI_MISSING_ARGUMENT', /missing required argument 'id'/],
      [['reject', 'a1', '--json'], 'CLI_MISSING_OPTION', /required option '--reason <reason>' not specified/],
      [['tickets', '--limit', '--json'], 'CLI_BAD_ARGUMENT', /--limit must be an integer >= 1 \(got '--json'\)/],
    ];
    for (const [args, code, message] of cases) {
      const r = k(args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr, args.join(' ')).toBe('');
      expect(r.json(), args.join(' ')).toMatchObject({ error: code, message: expect.stringMatching(message) });
    }
  });

  it('without --json a usage error is one line in the same format, with where to find help', () => {
    const r = k(['tickets', '--bogus']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe("error [CLI_UNKNOWN_OPTION]: unknown option '--bogus'\n(run keel tickets --help for usage)\n");
    expect(k(['ticket', 'show']).stderr).toMatch(/\(run keel ticket show --help for usage\)/);
  });

  it('an enumerated filter refuses an unknown value and names the valid ones', () => {
    const t = k(['tickets', '--status', 'bogus', '--json']);
    expect(t.code).toBe(1);
    expect(t.json()).toEqual({ error: 'CLI_BAD_ARGUMENT', message: "--status takes open, pending, escalated, resolved, closed; got 'bogus'", option: '--status', value: 'bogus', valid: ['open', 'pending', 'escalated', 'resolved', 'closed'] });
    expect(k(['tickets', '--status', 'bogus']).stderr).toMatch(/^error \[CLI_BAD_ARGUMENT\]: --status takes open, pending, escalated, resolved, closed; got 'bogus'/);
    expect(k(['approvals', '--state', 'done', '--json']).json()).toMatchObject({ error: 'CLI_BAD_ARGUMENT', valid: expect.arrayContaining(['pending', 'approved', 'rejected', 'expired']) });
    expect(k(['runs', '--status', 'ok', '--json']).json()).toMatchObject({ error: 'CLI_BAD_ARGUMENT', valid: expect.arrayContaining(['running', 'completed', 'failed']) });
    expect(k(['runs', '--workflow', 'nope', '--json']).json()).toMatchObject({ error: 'CLI_BAD_ARGUMENT', message: expect.stringMatching(/known workflows: inbound-message/) });
    expect(k(['cost', '--by', 'planet', '--json']).json()).toMatchObject({ error: 'COST_BAD_ARGUMENT', message: expect.stringMatching(/agent, capability, customer, run/) });
    expect(k(['entity', 'list', '--type', 'spaceship', '--json']).json()).toMatchObject({ message: expect.stringMatching(/known types: customer/) });
    // valid values still work
    expect(k(['tickets', '--status', 'open', '--json']).json()).toMatchObject({ tickets: [], total: 0 });
    expect(k(['approvals', '--state', 'approved', '--json']).json()).toEqual({ approvals: [] });
  });

  it('--since is a time for tickets and runs too', () => {
    expect(k(['tickets', '--since', '2h', '--json']).json()).toMatchObject({ tickets: [] });
    expect(k(['runs', '--since', '2026-01-01', '--json']).json()).toMatchObject({ runs: [] });
    expect(k(['tickets', '--since', 'last week', '--json']).json()).toMatchObject({ error: 'CLI_BAD_ARGUMENT', message: expect.stringMatching(/--since takes a duration/) });
  });
});

describe('keel agents: a wrong data dir or no engine is explained', () => {
  it('no engine on the port: CLI_NO_ENGINE naming the port and keel start', () => {
    const r = keel(['agents', '--json'], { KEEL_DATA_DIR: dataDir(), KEEL_NATS_PORT: '1' });
    expect(r.code).toBe(1);
    expect(r.json()).toMatchObject({ error: 'CLI_NO_ENGINE', message: expect.stringMatching(/no engine answers at nats:\/\/127\.0\.0\.1:1 \(KEEL_NATS_PORT=1\): start it with `keel start`/) });
  });

  it('an engine bus that refuses the credentials: CLI_BUS_AUTH naming the data dir', async (ctx) => {
    const nats = await startNats({ users: [{ user: 'admin', password: 'the-engines-secret' }] });
    if (!nats.ok) return ctx.skip(nats.reason);
    try {
      const port = new URL(nats.server.url).port;
      const empty = dataDir();
      const r = keel(['agents', '--json'], { KEEL_DATA_DIR: empty, KEEL_NATS_PORT: port });
      expect(r.code).toBe(1);
      expect(r.json()).toMatchObject({ error: 'CLI_BUS_AUTH', dataDir: empty, message: expect.stringMatching(/there is no .*credentials\.json.*most likely uses another data dir.*KEEL_DATA_DIR/) });
      const wrong = dataDir();
      writeFileSync(join(wrong, 'credentials.json'), JSON.stringify({ admin: { user: 'admin', password: 'stale' }, agents: {} }));
      const h = keel(['agents'], { KEEL_DATA_DIR: wrong, KEEL_NATS_PORT: port });
      expect(h.code).toBe(1);
      expect(h.stderr).toMatch(/^error \[CLI_BUS_AUTH\]: the bus at nats:\/\/127\.0\.0\.1:\d+ \(KEEL_NATS_PORT=\d+\) refused the CLI: the CLI used the admin credentials in .*credentials\.json/);
    } finally {
      await nats.server.stop();
    }
  });
});
