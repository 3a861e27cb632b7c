/**
 * The clustering and durability settings, in-process: KEEL_NATS_CLUSTER / _REPLICAS / _SYNC /
 * _MAX_BYTES and their checks, the stream limits keelTopology declares, and the nats-server
 * configuration renderNatsConfig writes (sync_interval, route credentials); `nats-server -t`
 * accepts it when the provisioned binary is there.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, findTool, loadConfig, natsMaxBytesFromEnv, natsReplicasFromEnv, parseBytes } from '../../config/index.ts';
import { DEFAULT_STREAMS_MAX_BYTES, STREAM_SHARE, keelTopology, renderNatsConfig } from '../../bus/index.ts';
import { tempDir } from '../../testkit/index.ts';

const problem = (env: Record<string, string>): string => {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error(`loadConfig accepted ${JSON.stringify(env)}`);
};

describe('KEEL_NATS_CLUSTER, KEEL_NATS_REPLICAS, KEEL_NATS_SYNC, KEEL_NATS_MAX_BYTES', () => {
  it('default to one node, one replica, fsync before every ack, the bus\'s byte budget', () => {
    expect(loadConfig({})).toMatchObject({ natsCluster: 1, natsReplicas: 1, natsSync: 'always', natsMaxBytes: undefined });
  });

  it('a local cluster defaults to three replicas; a cluster URL takes what it is told', () => {
    expect(loadConfig({ KEEL_NATS_CLUSTER: '3' })).toMatchObject({ natsCluster: 3, natsReplicas: 3 });
    expect(loadConfig({ KEEL_NATS_CLUSTER: '5' })).toMatchObject({ natsCluster: 5, natsReplicas: 3 });
    expect(loadConfig({ KEEL_NATS_CLUSTER: '5', KEEL_NATS_REPLICAS: '5' })).toMatchObject({ natsReplicas: 5 });
    expect(loadConfig({ KEEL_NATS_CLUSTER: '3', KEEL_NATS_REPLICAS: '1' })).toMatchObject({ natsReplicas: 1 });
    expect(loadConfig({ KEEL_NATS_URL: 'nats://a:4222,nats://b:4222,nats://c:4222', KEEL_NATS_REPLICAS: '3' })).toMatchObject({ natsCluster: 1, natsReplicas: 3 });
    // an agent process gets KEEL_NATS_URL from the engine and KEEL_NATS_CLUSTER emptied
    expect(loadConfig({ KEEL_NATS_URL: 'nats://a:1', KEEL_NATS_CLUSTER: '' })).toMatchObject({ natsCluster: 1 });
  });

  it('refuses what cannot work, saying what to set', () => {
    expect(problem({ KEEL_NATS_CLUSTER: '2' })).toMatch(/KEEL_NATS_CLUSTER must be 3 or 5/);
    expect(problem({ KEEL_NATS_REPLICAS: '2' })).toMatch(/KEEL_NATS_REPLICAS must be 1, 3 or 5/);
    expect(problem({ KEEL_NATS_REPLICAS: '3' })).toMatch(/KEEL_NATS_REPLICAS=3 needs 3 JetStream servers.*KEEL_NATS_CLUSTER=3/);
    expect(problem({ KEEL_NATS_CLUSTER: '3', KEEL_NATS_REPLICAS: '5' })).toMatch(/more than the 3 nodes/);
    expect(problem({ KEEL_NATS_CLUSTER: '3', KEEL_NATS_URL: 'nats://a:1' })).toMatch(/set only one of them/);
    expect(problem({ KEEL_NATS_SYNC: 'sometimes' })).toMatch(/KEEL_NATS_SYNC must be `always` or an interval/);
    expect(problem({ KEEL_NATS_MAX_BYTES: '10MB' })).toMatch(/at least 64MB/);
    expect(problem({ KEEL_NATS_MAX_BYTES: 'lots' })).toMatch(/KEEL_NATS_MAX_BYTES/);
  });

  it('reads sync intervals and sizes', () => {
    for (const v of ['always', '250ms', '1s', '2m']) expect(loadConfig({ KEEL_NATS_SYNC: v }).natsSync).toBe(v);
    expect(parseBytes('512MB')).toBe(512 * 1024 ** 2);
    expect(parseBytes('4GB')).toBe(4 * 1024 ** 3);
    expect(parseBytes('1.5GiB')).toBe(1.5 * 1024 ** 3);
    expect(parseBytes('1048576')).toBe(1024 ** 2);
    expect(parseBytes('12 parsecs')).toBeUndefined();
    expect(loadConfig({ KEEL_NATS_MAX_BYTES: '2GB' }).natsMaxBytes).toBe(2 * 1024 ** 3);
  });

  it('every process reads the replicas and byte budget createBus provisions with from the environment', () => {
    expect(natsReplicasFromEnv({})).toBe(1);
    expect(natsReplicasFromEnv({ KEEL_NATS_URL: 'nats://a:1', KEEL_NATS_REPLICAS: '3' })).toBe(3);
    expect(natsReplicasFromEnv({ KEEL_NATS_CLUSTER: '3' })).toBe(3);
    expect(natsReplicasFromEnv({ KEEL_NATS_REPLICAS: 'x' })).toBe(1);
    expect(natsMaxBytesFromEnv({ KEEL_NATS_MAX_BYTES: '256MB' })).toBe(256 * 1024 ** 2);
    expect(natsMaxBytesFromEnv({ KEEL_NATS_MAX_BYTES: '1MB' })).toBeUndefined();
  });
});

describe('keelTopology: bounded streams', () => {
  it('bounds every stream by age, count and bytes; the byte budget is split by STREAM_SHARE', () => {
    for (const budget of [undefined, 256 * 1024 ** 2, 8 * 1024 ** 3]) {
      const t = keelTopology({ prefix: 'acme', replicas: 3, maxBytes: budget });
      const total = budget ?? DEFAULT_STREAMS_MAX_BYTES;
      for (const s of t.streams) {
        expect(s.replicas, s.name).toBe(3);
        expect(s.maxBytes, s.name).toBeGreaterThan(0);
        expect(s.maxMsgs, s.name).toBeGreaterThan(0);
        expect(s.maxBytes, `${s.name} holds at least one message of the largest size`).toBeGreaterThanOrEqual(s.maxMsgSize);
        if (!s.name.endsWith('_LEASES')) expect(s.maxAgeMs, s.name).toBeGreaterThan(0);
      }
      const byName = Object.fromEntries(t.streams.map((s) => [s.name.replace(/^ACME_/, '').toLowerCase(), s]));
      for (const [k, share] of Object.entries(STREAM_SHARE)) expect(byName[k]!.maxBytes).toBe(Math.floor(total * share));
      expect(t.kv[0]).toMatchObject({ replicas: 3 });
      expect(t.kv[0]!.maxBytes).toBeGreaterThan(0);
    }
    // the smallest budget still leaves room for one message of each stream's largest size
    for (const st of keelTopology({ maxBytes: 64 * 1024 ** 2 }).streams) expect(st.maxBytes, st.name).toBeGreaterThanOrEqual(st.maxMsgSize);
    const shares = Object.values(STREAM_SHARE).reduce((a, b) => a + b, 0);
    expect(shares).toBeCloseTo(1, 10);
  });

  it('a full task queue refuses new tasks (the publisher retries); the logs drop their oldest', () => {
    const t = keelTopology();
    const discard = Object.fromEntries(t.streams.map((s) => [s.name, s.discard]));
    expect(discard).toEqual({ KEEL_TASKS: 'new', KEEL_EVT: 'old', KEEL_IN: 'old', KEEL_OUT: 'old', KEEL_DLQ: 'old', KEEL_LEASES: 'old' });
  });
});

describe('renderNatsConfig: durability and cluster settings', () => {
  const base = { listen: '127.0.0.1:-1', jetStreamDir: '/tmp/keel-js' };

  it('writes sync_interval (always, or a quoted interval) inside the jetstream block, nothing when unset', () => {
    expect(renderNatsConfig({ ...base, syncInterval: 'always' })).toMatch(/jetstream \{\n[^}]*\n {2}sync_interval: always\n\}/);
    expect(renderNatsConfig({ ...base, syncInterval: '1s' })).toMatch(/^ {2}sync_interval: "1s"$/m);
    expect(renderNatsConfig(base)).not.toMatch(/sync_interval/);
  });

  it('gives a cluster\'s routes the route credentials, and the listener their check', () => {
    const text = renderNatsConfig({ ...base, cluster: { name: 'keel', listen: '127.0.0.1:6222', routes: ['nats://127.0.0.1:6223', 'nats://127.0.0.1:6224'], authorization: { user: 'keel-route', password: 'p@ss/word' } } });
    expect(text).toContain('authorization { user: "keel-route", password: "p@ss/word", timeout: 2 }');
    expect(text).toContain('routes: ["nats://keel-route:p%40ss%2Fword@127.0.0.1:6223", "nats://keel-route:p%40ss%2Fword@127.0.0.1:6224"]');
  });

  it.skipIf(!findTool('nats-server'))('nats-server accepts what it renders', () => {
    const dir = tempDir('keel-render-');
    try {
      const conf = join(dir.path, 'n.conf');
      writeFileSync(conf, renderNatsConfig({ ...base, jetStreamDir: join(dir.path, 'js'), syncInterval: 'always', cluster: { name: 'keel', listen: '127.0.0.1:6222', routes: ['nats://127.0.0.1:6223'], authorization: { user: 'keel-route', password: 'secret' } } }));
      const t = spawnSync(findTool('nats-server')!, ['-c', conf, '-t'], { encoding: 'utf8' });
      expect(`${t.stdout}${t.stderr}`).toMatch(/is valid/);
      expect(t.status).toBe(0);
    } finally {
      dir.remove();
    }
  });
});
