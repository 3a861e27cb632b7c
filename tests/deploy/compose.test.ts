import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { REPO_ROOT } from '../../config/index.ts';

const has = spawnSync('docker-compose', ['version'], { encoding: 'utf8' }).status === 0;

/** The lines of one service in `docker-compose config` output (services are keys at two spaces). */
function serviceBlock(config: string, name: string): string {
  const lines = config.split('\n');
  const start = lines.indexOf(`  ${name}:`);
  if (start < 0) throw new Error(`no service ${name} in the compose config`);
  let end = start + 1;
  while (end < lines.length && !/^ {0,2}\S/.test(lines[end]!)) end++;
  return lines.slice(start, end).join('\n');
}

/** A service's command as the list `docker-compose config` prints. */
const commandOf = (block: string): string[] => {
  const lines = block.split('\n');
  const out: string[] = [];
  for (let i = lines.indexOf('    command:') + 1; i > 0 && i < lines.length && lines[i]!.startsWith('    - '); i++) out.push(lines[i]!.slice(6).replace(/^'(.*)'$/, '$1'));
  return out;
};
const flag = (cmd: string[], name: string) => cmd[cmd.indexOf(name) + 1];

describe('docker-compose.yml', () => {
  it('is a valid compose file with the production-shaped stack', (ctx) => {
    if (!has) return ctx.skip('docker-compose is not installed (Debian package docker-compose)');
    // the bus credentials come from the env file `keel deploy nats-config` writes; the example has placeholders
    const q = spawnSync('docker-compose', ['--env-file', 'deploy/keel.env.example', 'config', '-q'], { cwd: REPO_ROOT, encoding: 'utf8' });
    expect(q.stderr).toBe('');
    expect(q.status).toBe(0);
    const services = spawnSync('docker-compose', ['--env-file', 'deploy/keel.env.example', 'config', '--services'], { cwd: REPO_ROOT, encoding: 'utf8' }).stdout.trim().split('\n');
    for (const s of ['nats-1', 'nats-2', 'nats-3', 'mongo', 'qdrant', 'otel-collector', 'jaeger', 'prometheus', 'grafana', 'keel', 'intake', 'triage', 'summarizer', 'reply-suggester', 'sender', 'escalation', 'memorizer', 'researcher', 'writer', 'marketer']) expect(services).toContain(s);
    const cfg = spawnSync('docker-compose', ['--env-file', 'deploy/keel.env.example', 'config'], { cwd: REPO_ROOT, encoding: 'utf8' }).stdout;
    expect(cfg).toMatch(/--replSet/);
    expect(cfg).toMatch(/--js/);
  });

  it('runs NATS as a 3-node JetStream cluster and provisions R3 streams', (ctx) => {
    if (!has) return ctx.skip('docker-compose is not installed (Debian package docker-compose)');
    const cfg = spawnSync('docker-compose', ['--env-file', 'deploy/keel.env.example', 'config'], { cwd: REPO_ROOT, encoding: 'utf8' }).stdout;
    const nodes = ['nats-1', 'nats-2', 'nats-3'];
    for (const node of nodes) {
      const block = serviceBlock(cfg, node);
      const cmd = commandOf(block);
      // one cluster, each node routing to the two others, its own name and its own volume
      expect(flag(cmd, '--name')).toBe(node);
      expect(flag(cmd, '--cluster_name')).toBe('keel');
      expect(cmd).toContain('--js');
      expect(flag(cmd, '--routes')!.split(',').sort()).toEqual(nodes.filter((n) => n !== node).map((n) => `nats://${n}:6222`));
      expect(block).toContain(`- ${node}:/data:rw`);
      expect(block).toMatch(/healthz\?js-enabled-only=true/);
    }
    // the engine waits for all three, and every Keel process knows all three and asks for three replicas
    const keel = serviceBlock(cfg, 'keel');
    for (const node of nodes) expect(keel).toMatch(new RegExp(`${node}:\\n {8}condition: service_healthy`));
    for (const svc of ['keel', 'intake', 'sender', 'marketer']) {
      const block = serviceBlock(cfg, svc);
      expect(block).toContain('KEEL_NATS_URL: nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222');
      expect(block).toContain("KEEL_NATS_REPLICAS: '3'");
    }
  });
});
