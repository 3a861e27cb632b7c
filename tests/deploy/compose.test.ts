import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { REPO_ROOT } from '../../config/index.ts';

const has = spawnSync('docker-compose', ['version'], { encoding: 'utf8' }).status === 0;

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
});
