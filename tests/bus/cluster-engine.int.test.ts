/**
 * `keel start` with KEEL_NATS_CLUSTER=3: the engine runs three clustered nats-server nodes on
 * loopback (stores under <data>/nats/n0..n2, routes authenticated), provisions every stream and
 * bucket with three replicas, hands its agents all three URLs, restarts a node that dies, and
 * leaves no node behind when it stops.
 */
import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { REPO_ROOT, findTool } from '../../config/index.ts';
import { connectBus, listAgents, subjects } from '../../bus/index.ts';
import { reportSkip, startEngineProcess, waitFor } from '../helpers/index.ts';

const FEATURE = join(REPO_ROOT, 'tests', 'bus', 'fixtures', 'chaos', 'index.ts');

/** pid of each running nats-server whose config is under `dir`, by node (n0, n1, …). */
function nodePids(dir: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of execFileSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' }).split('\n')) {
    const m = new RegExp(`^\\s*(\\d+)\\s+\\S*nats-server -c ${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/nats/(n\\d)/nats-server\\.conf`).exec(line);
    if (m) out[m[2]!] = Number(m[1]);
  }
  return out;
}

describe('keel start with KEEL_NATS_CLUSTER=3', () => {
  it('runs and supervises three clustered nodes with R3 streams; a killed node comes back; stop leaves none', async (ctx) => {
    if (!findTool('nats-server')) {
      reportSkip('embedded cluster', 'no nats-server binary: run `npm run provision`');
      return ctx.skip('no nats-server binary');
    }
    const e = await startEngineProcess({ KEEL_NATS_CLUSTER: '3', KEEL_NATS_PORT: '0', KEEL_FEATURES: FEATURE, KEEL_AGENTS: 'chaos-intake', KEEL_LOG_LEVEL: 'warn', KEEL_AUTO_PROVISION: '0' });
    let stopped = false;
    try {
      const health = (await (await fetch(`${e.httpUrl}/healthz`)).json()) as { status: string; bus: { url: string } };
      expect(health.status).toBe('ok');
      const urls = health.bus.url.split(',');
      expect(urls).toHaveLength(3);
      const pids = nodePids(e.dataDir);
      expect(Object.keys(pids).sort()).toEqual(['n0', 'n1', 'n2']);
      // the routes authenticate: each node's config carries the route user, and its routes use it
      const conf = readFileSync(join(e.dataDir, 'nats', 'n1', 'nats-server.conf'), 'utf8');
      expect(conf).toMatch(/cluster \{[^}]*authorization \{ user: "keel-route", password: "[0-9a-f]{36}"/);
      expect(conf).toMatch(/routes: \["nats:\/\/keel-route:[0-9a-f]{36}@127\.0\.0\.1:\d+", "nats:\/\/keel-route:[0-9a-f]{36}@127\.0\.0\.1:\d+"\]/);
      expect(conf).toMatch(/^ {2}sync_interval: always$/m);

      const admin = (JSON.parse(readFileSync(join(e.dataDir, 'credentials.json'), 'utf8')) as { admin: { user: string; password: string } }).admin;
      const nc = await connectBus({ servers: urls, user: admin.user, pass: admin.password });
      try {
        const jsm = await jetstreamManager(nc);
        const s = subjects('keel');
        const names = [...Object.values(s.streams), `KV_${s.registryBucket}`];
        for (const name of names) expect((await jsm.streams.info(name)).config.num_replicas, name).toBe(3);
        // the agent process got the three URLs (and no KEEL_NATS_CLUSTER of its own): it announces itself
        await waitFor(async () => (await listAgents(nc, s.registryBucket)).some((a) => a.agent === 'chaos-intake'), { timeoutMs: 60_000, intervalMs: 500, what: 'the agent to announce itself' });

        // a node killed outright is restarted by the engine, on the same ports, and catches up
        process.kill(pids.n1!, 'SIGKILL');
        await waitFor(() => (nodePids(e.dataDir).n1 ?? pids.n1) !== pids.n1, { timeoutMs: 30_000, intervalMs: 250, what: 'the engine to restart node n1' });
        await waitFor(async () => {
          for (const name of names) {
            const c = (await jsm.streams.info(name)).cluster;
            if (!c?.leader || c.replicas?.length !== 2 || !c.replicas.every((r) => r.current && !r.offline)) return false;
          }
          return true;
        }, { timeoutMs: 30_000, intervalMs: 500, what: 'every stream\'s replicas current again' });
        expect(((await (await fetch(`${e.httpUrl}/healthz`)).json()) as { status: string }).status).toBe('ok');
        expect(e.output()).toMatch(/nats-server exited unexpectedly; restarting/);
      } finally {
        await nc.close();
      }

      expect(await e.stop('SIGINT')).toBe(0);
      stopped = true;
      expect(nodePids(e.dataDir)).toEqual({});
    } finally {
      if (!stopped) await e.stop('SIGINT');
      e.cleanup();
    }
  }, 150_000);
});
