/**
 * docker-compose.yml with the files `keel deploy nats-config` generates: every agent service gets
 * its own bus user and no other agent's password, the engine gets the admin user, the NATS nodes
 * run with the generated config (nats-server accepts it with the nodes' own flags), and without
 * the env file compose refuses to interpolate instead of starting agents with empty passwords.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { findTool, REPO_ROOT } from '../../config/index.ts';
import { tempDir } from '../../testkit/index.ts';

const has = spawnSync('docker-compose', ['version'], { encoding: 'utf8' }).status === 0;
const dir = tempDir('keel-compose-auth-');
afterAll(() => dir.remove());

/** The lines of one service in `docker-compose config` output (services are keys at two spaces). */
function serviceBlock(config: string, name: string): string {
  const lines = config.split('\n');
  const start = lines.indexOf(`  ${name}:`);
  if (start < 0) throw new Error(`no service ${name} in the compose config`);
  let end = start + 1;
  while (end < lines.length && !/^ {0,2}\S/.test(lines[end]!)) end++;
  return lines.slice(start, end).join('\n');
}

const envValue = (block: string, key: string) => new RegExp(`^ {6}${key}: '?([^'\\n]*)'?$`, 'm').exec(block)?.[1];

describe('docker-compose.yml with generated bus credentials', () => {
  it('gives each agent service its own user, the engine the admin, NATS the generated config', (ctx) => {
    if (!has) return ctx.skip('docker-compose is not installed (Debian package docker-compose)');
    const conf = join(dir.path, 'nats-server.conf');
    const creds = join(dir.path, 'keel.env');
    const gen = spawnSync(join(REPO_ROOT, 'node_modules/.bin/node'), ['cli/keel.ts', 'deploy', 'nats-config', '--out', conf, '--creds-out', creds, '--json'], {
      cwd: REPO_ROOT,
      encoding: 'utf8',
      env: { ...process.env, KEEL_DATA_DIR: join(dir.path, 'data') },
    });
    expect(gen.status, gen.stderr).toBe(0);
    const users = (JSON.parse(gen.stdout) as { users: Array<{ user: string; agent: string | null }> }).users;
    const env = new Map(readFileSync(creds, 'utf8').split('\n').filter((l) => /^[A-Z]/.test(l)).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)] as const));

    const r = spawnSync('docker-compose', ['--env-file', creds, 'config'], { cwd: REPO_ROOT, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const agents = users.filter((u) => u.agent !== null).map((u) => u.agent!);
    expect(agents.length).toBeGreaterThan(5);
    const passwords = agents.map((a) => env.get(`KEEL_NATS_PASSWORD_${a.toUpperCase().replace(/[^A-Z0-9]+/g, '_')}`)!);
    expect(new Set(passwords).size).toBe(agents.length);
    agents.forEach((a, i) => {
      const block = serviceBlock(r.stdout, a);
      expect(envValue(block, 'KEEL_AGENT_NATS_USER')).toBe(`agent-${a}`);
      expect(envValue(block, 'KEEL_AGENT_NATS_PASSWORD')).toBe(passwords[i]);
      for (const [j, other] of passwords.entries()) if (j !== i) expect(block).not.toContain(other);
      expect(block).not.toContain(env.get('KEEL_NATS_PASSWORD')!);
    });
    const keel = serviceBlock(r.stdout, 'keel');
    expect(envValue(keel, 'KEEL_NATS_USER')).toBe(env.get('KEEL_NATS_USER'));
    expect(envValue(keel, 'KEEL_NATS_PASSWORD')).toBe(env.get('KEEL_NATS_PASSWORD'));

    // the generated config fsyncs every JetStream write before acknowledging it (KEEL_NATS_SYNC default)
    expect(readFileSync(conf, 'utf8')).toMatch(/^ {2}sync_interval: always$/m);
    expect(JSON.parse(gen.stdout)).toMatchObject({ sync: 'always' });

    // each NATS node: the generated config mounted and passed with -c; nats-server accepts it with the node's flags
    const bin = findTool('nats-server');
    for (const node of ['nats-1', 'nats-2', 'nats-3']) {
      const block = serviceBlock(r.stdout, node);
      expect(block).toMatch(/deploy\/secrets\/nats:\/etc\/nats:ro/);
      const lines = block.split('\n');
      const args: string[] = [];
      for (let i = lines.indexOf('    command:') + 1; i > 0 && i < lines.length && lines[i]!.startsWith('    - '); i++) args.push(lines[i]!.slice(6).replace(/^'(.*)'$/, '$1'));
      expect(args.slice(0, 2)).toEqual(['-c', '/etc/nats/nats-server.conf']);
      if (!bin) continue;
      const t = spawnSync(bin, [...args.map((a) => (a === '/etc/nats/nats-server.conf' ? conf : a)), '-t'], { encoding: 'utf8' });
      expect(`${t.stdout}${t.stderr}`).toMatch(/is valid/);
      expect(t.status).toBe(0);
    }
  });

  it('refuses to interpolate without the generated env file', (ctx) => {
    if (!has) return ctx.skip('docker-compose is not installed (Debian package docker-compose)');
    const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('KEEL_NATS_')));
    const empty = join(dir.path, 'empty.env');
    writeFileSync(empty, '# no credentials generated yet\n');
    const r = spawnSync('docker-compose', ['--env-file', empty, 'config', '-q'], { cwd: REPO_ROOT, encoding: 'utf8', env: clean });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/run keel deploy nats-config/);
  });
});
