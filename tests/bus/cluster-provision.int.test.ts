/**
 * Provisioning on real servers: on a 3-node cluster, Keel's streams and buckets go from one
 * replica to three in place (messages and durable consumers kept), with their limits; a bus
 * provisioned before the limits existed is brought up to them; on a single server three replicas
 * are refused with a typed error that says what to set, and so is a byte budget the server
 * cannot reserve.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { jetstreamManager, DiscardPolicy, type JetStreamManager } from '@nats-io/jetstream';
import { connectBus, consumerSpecFor, createBus, defineMessage, ensureConsumer, isBusError, keelTopology, provisionBus, type Bus, type NatsConnection } from '../../bus/index.ts';
import { startNats, startNatsCluster, uniqueName, type NatsClusterHandle, type NatsHandle } from '../helpers/index.ts';

const Work = defineMessage('test.work', z.object({ n: z.number() }));

describe('provisioning Keel\'s streams with replicas and limits', () => {
  let cluster: NatsClusterHandle | undefined;
  let single: NatsHandle | undefined;
  let skipCluster = '';
  let skipSingle = '';
  const conns: NatsConnection[] = [];

  beforeAll(async () => {
    const [c, s] = await Promise.all([startNatsCluster(3), startNats()]);
    if (c.ok) cluster = c.server;
    else skipCluster = c.reason;
    if (s.ok) single = s.server;
    else skipSingle = s.reason;
  }, 60_000);
  afterAll(async () => {
    for (const nc of conns) await nc.close().catch(() => undefined);
    await cluster?.stop();
    await single?.stop();
  });

  const connect = async (servers: string | string[]) => {
    const nc = await connectBus({ servers });
    conns.push(nc);
    return nc;
  };

  it('on a 3-node cluster: R1 → R3 in place, messages and consumers kept, every stream bounded; again: unchanged', async (ctx) => {
    if (!cluster) return ctx.skip(skipCluster);
    const nc = await connect(cluster.urls);
    const prefix = uniqueName('r');
    const bus: Bus = createBus(nc, { prefix, replicas: 1 });
    // the cluster just started: provision waits for its meta leader
    expect((await bus.provision()).every((r) => r.action === 'created')).toBe(true);
    const jsm: JetStreamManager = await jetstreamManager(nc);
    const tasks = bus.subjects.streams.tasks;
    const spec = consumerSpecFor('work', { prefix });
    await ensureConsumer(jsm, spec);
    for (let n = 0; n < 5; n++) await bus.publish(bus.subjects.task('work'), Work, { n });
    expect((await jsm.streams.info(tasks)).config.num_replicas).toBe(1);

    const report = await bus.provision({ replicas: 3 });
    const updated = report.filter((r) => r.action === 'updated');
    expect(updated.map((r) => r.resource).sort()).toEqual([...Object.values(bus.subjects.streams).map((n) => `stream ${n}`), `kv ${bus.subjects.registryBucket}`].sort());
    for (const r of updated) expect(r.changes!.join(';'), r.resource).toMatch(/num_replicas: 1 -> 3/);
    for (const name of [...Object.values(bus.subjects.streams), `KV_${bus.subjects.registryBucket}`]) {
      const info = await jsm.streams.info(name);
      expect(info.config.num_replicas, name).toBe(3);
      expect(info.config.max_bytes, name).toBeGreaterThan(0);
      // a bucket keeps one value per key and is bounded by bytes; a stream by count too
      if (!name.startsWith('KV_')) expect(info.config.max_msgs, name).toBeGreaterThan(0);
    }
    expect((await jsm.streams.info(tasks)).state.messages).toBe(5);
    expect((await jsm.streams.info(tasks)).config.discard).toBe(DiscardPolicy.New);
    // the durable consumer follows its stream to three replicas (it inherits them), its 5 messages
    // still pending (while it moves, its info may briefly not answer)
    const consumerInfo = () => jsm.consumers.info(tasks, spec.durable).catch(() => undefined);
    await expect.poll(async () => (await consumerInfo())?.cluster?.replicas?.length ?? 0, { timeout: 20_000, interval: 250 }).toBe(2);
    await expect.poll(async () => (await consumerInfo())?.num_pending, { timeout: 10_000, interval: 250 }).toBe(5);

    const again = await bus.provision({ replicas: 3 });
    expect(again.map((r) => r.action)).toEqual(again.map(() => 'unchanged'));
  }, 90_000);

  it('a bus provisioned before streams had limits is brought up to them in place', async (ctx) => {
    if (!single) return ctx.skip(skipSingle);
    const nc = await connect(single.url);
    const prefix = uniqueName('old');
    const jsm = await jetstreamManager(nc);
    const t = keelTopology({ prefix });
    // as an earlier Keel made them: no byte or count limit, oldest dropped when full
    const old = { ...t, streams: t.streams.map((s) => ({ ...s, maxBytes: -1, maxMsgs: -1, discard: 'old' as const })), kv: t.kv.map((k) => ({ ...k, maxBytes: -1 })) };
    await provisionBus(nc, old);
    expect((await jsm.streams.info(`${prefix.toUpperCase()}_TASKS`)).config.max_bytes).toBe(-1);
    const report = await provisionBus(nc, t);
    const tasks = report.find((r) => r.resource === `stream ${prefix.toUpperCase()}_TASKS`)!;
    expect(tasks.action).toBe('updated');
    expect(tasks.changes!.join(';')).toMatch(/max_bytes: -1 -> \d+.*max_msgs: -1 -> 1000000.*discard: "old" -> "new"/);
    const info = await jsm.streams.info(`${prefix.toUpperCase()}_TASKS`);
    expect(info.config).toMatchObject({ max_bytes: t.streams[0]!.maxBytes, max_msgs: 1_000_000, discard: DiscardPolicy.New });
    expect(report.find((r) => r.resource.startsWith('kv '))?.action).toBe('updated');
    expect((await provisionBus(nc, t)).every((r) => r.action === 'unchanged')).toBe(true);
  });

  it('on a single server: three replicas are refused with BUS_REPLICAS_UNAVAILABLE, and a budget it cannot reserve with BUS_STORAGE_UNAVAILABLE', async (ctx) => {
    if (!single) return ctx.skip(skipSingle);
    if (single.source !== 'local') return ctx.skip('needs a single local server (NATS_URL may name a cluster)');
    const nc = await connect(single.url);
    const err = await createBus(nc, { prefix: uniqueName('r3') }).provision({ replicas: 3 }).catch((e: unknown) => e);
    expect(isBusError(err, 'BUS_REPLICAS_UNAVAILABLE'), String(err)).toBe(true);
    expect((err as Error).message).toMatch(/needs 3 replicas.*KEEL_NATS_REPLICAS/);
    // JetStream reserves every stream's max_bytes: a petabyte is more than any test machine has
    const big = await createBus(nc, { prefix: uniqueName('big') }).provision({ maxBytes: 2 ** 50 }).catch((e: unknown) => e);
    expect(isBusError(big, 'BUS_STORAGE_UNAVAILABLE'), String(big)).toBe(true);
    expect((big as Error).message).toMatch(/KEEL_NATS_MAX_BYTES/);
  });
});
