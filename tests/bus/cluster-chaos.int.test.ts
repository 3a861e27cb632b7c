/**
 * The clustered bus under faults (issue 15): a 3-node JetStream cluster on loopback (testkit's
 * startNatsCluster, `sync_interval: always`), R3 streams (KEEL_NATS_REPLICAS=3), and a real
 * workload under `keel start`: the test publishes orders as tasks; the intake agent records each
 * as an entity; its event triggers a workflow run whose step performs an external effect once
 * (tests/bus/fixtures/chaos/). During the load, (a) the leader of the task stream is SIGKILLed
 * and restarted 5 s later, (b) the then leader is frozen (SIGSTOP: its sockets stay open and it
 * answers nothing, like a node cut off by a partition) for 30 s and then continued. Each time:
 * every order acknowledged to the publisher is consumed (its entity recorded), every run
 * completes, and every effect happened exactly once.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { REPO_ROOT, findTool } from '../../config/index.ts';
import { connectBus, createBus, defineMessage, listAgents, type Bus, type LocalNatsServer, type NatsConnection } from '../../bus/index.ts';
import { openStore, type StateStore } from '../../shared-state/index.ts';
import { workflowRunType, type RunState } from '../../workflows/index.ts';
import { reportSkip, startNatsCluster, waitFor, type NatsClusterHandle } from '../helpers/index.ts';
import { startEngineProcess, type EngineProcess } from '../helpers/engine.ts';
import { orderType } from './fixtures/chaos/entities.ts';

const FEATURE = join(REPO_ROOT, 'tests', 'bus', 'fixtures', 'chaos', 'index.ts');
const Intake = defineMessage('task.chaos.intake', z.object({ orderId: z.string(), n: z.number().int() }));
const bin = findTool('nats-server');

interface Published {
  acked: Set<string>;
  /** failed publish attempts (each retried with the same message id) */
  retries: number;
  firstFailureAt?: number;
  lastFailureAt?: number;
  /** failed attempts by error */
  failures: Record<string, number>;
}

interface Counts {
  orders: number;
  acked: number;
  consumed: number;
  completed: number;
  failedRuns: number;
  effects: number;
  duplicateEffects: number;
  publishRetries: number;
  tasksLeft: number;
  /** the error of one failed run, if any (diagnostics) */
  runError?: string;
}

describe.skipIf(!bin)('a 3-node JetStream cluster under faults, with R3 streams and a real workload', () => {
  if (!bin) reportSkip('cluster chaos', 'no nats-server binary: run `npm run provision`');
  let cluster: NatsClusterHandle | undefined;
  let engine: EngineProcess | undefined;
  let nc: NatsConnection;
  let bus: Bus;
  let jsm: JetStreamManager;
  let store: StateStore;
  let skip = '';

  beforeAll(async () => {
    const c = await startNatsCluster(3);
    if (!c.ok) return void (skip = c.reason);
    cluster = c.server;
    engine = await startEngineProcess({
      KEEL_NATS_URL: cluster.urls.join(','),
      KEEL_NATS_REPLICAS: '3',
      KEEL_FEATURES: FEATURE,
      KEEL_AGENTS: 'chaos-intake,chaos-shipper',
      KEEL_WORKFLOW_SWEEP_MS: '500',
      KEEL_LOG_LEVEL: 'warn',
      KEEL_AUTO_PROVISION: '0',
    });
    nc = await connectBus({ servers: cluster.urls, name: 'chaos-publisher' });
    bus = createBus(nc, { prefix: 'keel', replicas: 3 });
    jsm = await jetstreamManager(nc);
    // the engine provisioned every stream with three replicas
    for (const name of Object.values(bus.subjects.streams)) expect((await jsm.streams.info(name)).config.num_replicas, name).toBe(3);
    expect((await jsm.streams.info(`KV_${bus.subjects.registryBucket}`)).config.num_replicas).toBe(3);
    await waitFor(async () => new Set((await listAgents(nc, bus.subjects.registryBucket)).map((a) => a.agent)).size === 2, { timeoutMs: 60_000, intervalMs: 500, what: 'the chaos agents to announce themselves' });
    store = await openStore(`sqlite:${join(engine.dataDir, 'keel.db')}`, { types: [orderType, workflowRunType] });
  }, 150_000);

  afterAll(async () => {
    await store?.close().catch(() => undefined);
    await nc?.close().catch(() => undefined);
    if (engine) {
      await engine.stop('SIGTERM').catch(() => undefined);
      engine.cleanup();
    }
    await cluster?.stop();
  }, 60_000);

  /** The node leading a stream now (its Raft leader), asked again until the cluster answers. */
  async function leaderOf(stream: string): Promise<LocalNatsServer> {
    let node: LocalNatsServer | undefined;
    await waitFor(async () => {
      const leader = (await jsm.streams.info(stream)).cluster?.leader;
      node = leader ? cluster!.cluster.node(leader) : undefined;
      return !!node;
    }, { timeoutMs: 30_000, intervalMs: 250, what: `a leader of ${stream}` });
    return node!;
  }

  /**
   * Publishes orders `from .. from+count-1` at about `perSecond`, each retried with the same
   * `Nats-Msg-Id` until the cluster acknowledges it (as any producer would): resolves with the
   * acknowledged ids and how many attempts failed.
   */
  function publishOrders(from: number, count: number, perSecond: number): { done: Promise<Published> } {
    const acked = new Set<string>();
    const out: Published = { acked, retries: 0, failures: {} };
    const one = async (n: number) => {
      const orderId = `order-${n}`;
      for (;;) {
        try {
          await bus.publish(bus.subjects.task('chaos.intake'), Intake, { orderId, n }, { id: orderId });
          acked.add(orderId);
          return;
        } catch (err) {
          out.retries++;
          out.firstFailureAt ??= Date.now();
          out.lastFailureAt = Date.now();
          const kind = String((err as Error).message).replace(/^publish to \S+ failed: /, '').slice(0, 40);
          out.failures[kind] = (out.failures[kind] ?? 0) + 1;
          await sleep(250);
        }
      }
    };
    const done = (async () => {
      const inFlight: Promise<void>[] = [];
      const t0 = Date.now();
      for (let i = 0; i < count; i++) {
        inFlight.push(one(from + i));
        const due = t0 + ((i + 1) * 1000) / perSecond;
        if (due > Date.now()) await sleep(due - Date.now());
      }
      await Promise.all(inFlight);
      return out;
    })();
    return { done };
  }

  /** Effects by order, from every shipper process's file. */
  function effectsByOrder(): Map<string, number> {
    const dir = join(engine!.dataDir, 'effects');
    const out = new Map<string, number>();
    if (!existsSync(dir)) return out;
    for (const f of readdirSync(dir))
      for (const line of readFileSync(join(dir, f), 'utf8').split('\n')) {
        const orderId = line.split(' ')[0];
        if (orderId) out.set(orderId, (out.get(orderId) ?? 0) + 1);
      }
    return out;
  }

  async function countsFor(ids: string[], acked: Set<string>, retries: number): Promise<Counts> {
    const wanted = new Set(ids);
    let consumed = 0;
    for (const id of ids) if ((await store.get('chaos_order', id)) && (await store.getIdempotency(`task:chaos.intake:${id}`))?.status === 'completed') consumed++;
    let completed = 0;
    let failedRuns = 0;
    let runError: string | undefined;
    for (let offset: number | null = 0; offset !== null; ) {
      const page: Awaited<ReturnType<typeof store.query<RunState>>> = await store.query<RunState>('workflow_run', { filter: { workflow: 'chaos-order' }, limit: 1000, offset });
      for (const r of page.items) {
        const orderId = (r.state.input as { event?: { entityId?: string } }).event?.entityId ?? '';
        if (!wanted.has(orderId)) continue;
        if (r.state.status === 'completed') completed++;
        if (r.state.status === 'failed') {
          failedRuns++;
          runError ??= r.state.error;
        }
      }
      offset = page.nextOffset;
    }
    const effects = effectsByOrder();
    let effectCount = 0;
    let duplicates = 0;
    for (const id of ids) {
      const n = effects.get(id) ?? 0;
      if (n > 0) effectCount++;
      if (n > 1) duplicates += n - 1;
    }
    const tasksLeft = (await jsm.streams.info(bus.subjects.streams.tasks)).state.messages;
    return { orders: ids.length, acked: ids.filter((id) => acked.has(id)).length, consumed, completed, failedRuns, effects: effectCount, duplicateEffects: duplicates, publishRetries: retries, tasksLeft, ...(runError ? { runError } : {}) };
  }

  /** Waits until every acknowledged order's run completed, then returns the counts. */
  async function settle(label: string, ids: string[], acked: Set<string>, retries: number, timeoutMs: number): Promise<Counts> {
    let counts: Counts | undefined;
    const t0 = Date.now();
    try {
      await waitFor(async () => {
        counts = await countsFor(ids, acked, retries);
        // and the work queue empty: a task whose ack was lost with its consumer's leader comes back
        // after the ack wait (30 s) and is acked then without running again
        return counts.completed + counts.failedRuns >= counts.acked && counts.consumed >= counts.acked && counts.tasksLeft === 0;
      }, { timeoutMs, intervalMs: 1_000, what: `${label}: every acknowledged order consumed and its run finished` });
    } catch (err) {
      console.log(`[cluster-chaos] ${label}: gave up after ${Date.now() - t0} ms with`, counts, '\nengine output (tail):\n', engine!.output().slice(-4_000));
      throw err;
    }
    // a late duplicate would show up after the runs completed: look once more a little later
    await sleep(2_000);
    counts = await countsFor(ids, acked, retries);
    console.log(`[cluster-chaos] ${label}: ${JSON.stringify(counts)} (settled ${Date.now() - t0} ms after the last acknowledgement)`);
    return counts;
  }

  /** How long publishing failed, counted from the fault. */
  const report = (label: string, faultAt: number, p: Published) =>
    console.log(
      `[cluster-chaos] ${label}: publishing failed ${p.firstFailureAt ? `from ${p.firstFailureAt - faultAt} ms to ${p.lastFailureAt! - faultAt} ms after the fault` : 'never'} (${p.retries} attempts retried: ${JSON.stringify(p.failures)})`,
    );

  /** Every replica of every stream caught up again (the restarted or continued node included). */
  const allReplicasCurrent = () =>
    waitFor(async () => {
      for (const name of Object.values(bus.subjects.streams)) {
        const c = (await jsm.streams.info(name)).cluster;
        if (!c?.leader || c.replicas?.length !== 2 || !c.replicas.every((r) => r.current && !r.offline)) return false;
      }
      return true;
    }, { timeoutMs: 30_000, intervalMs: 500, what: 'every stream\'s three replicas to be current' });

  const expectExactlyOnce = (c: Counts) => {
    expect(c.acked).toBe(c.orders);
    expect(c.consumed).toBe(c.acked);
    expect(c.completed).toBe(c.acked);
    expect(c.failedRuns).toBe(0);
    expect(c.effects).toBe(c.completed);
    expect(c.duplicateEffects).toBe(0);
    expect(c.tasksLeft).toBe(0);
  };

  it('SIGKILL of the task stream\'s leader during load, restarted 5 s later: acked = consumed = completed = effects, no duplicate', async (ctx) => {
    if (!cluster || !engine) return ctx.skip(skip);
    const count = 150;
    const ids = Array.from({ length: count }, (_, i) => `order-${i}`);
    const load = publishOrders(0, count, 15);
    await sleep(3_000);
    const leader = await leaderOf(bus.subjects.streams.tasks);
    const killedAt = Date.now();
    await leader.crash();
    await sleep(5_000);
    await leader.start();
    const newLeader = await leaderOf(bus.subjects.streams.tasks);
    console.log(`[cluster-chaos] killed ${leader.options.serverName} (leader of ${bus.subjects.streams.tasks}), restarted it after ${Date.now() - killedAt} ms; leader now ${newLeader.options.serverName}`);
    const p = await load.done;
    report('leader kill', killedAt, p);
    expectExactlyOnce(await settle('leader kill', ids, p.acked, p.retries, 90_000));
    await allReplicasCurrent();
  }, 150_000);

  it('one node frozen for 30 s (SIGSTOP, then SIGCONT) during load: acked = consumed = completed = effects, no duplicate', async (ctx) => {
    if (!cluster || !engine) return ctx.skip(skip);
    const from = 1_000;
    const count = 240;
    const ids = Array.from({ length: count }, (_, i) => `order-${from + i}`);
    const load = publishOrders(from, count, 6);
    await sleep(4_000);
    const node = await leaderOf(bus.subjects.streams.tasks);
    node.pause();
    const pausedAt = Date.now();
    try {
      await sleep(30_000);
    } finally {
      node.resume();
    }
    console.log(`[cluster-chaos] froze ${node.options.serverName} (leader of ${bus.subjects.streams.tasks}) for ${Date.now() - pausedAt} ms`);
    const p = await load.done;
    report('partition', pausedAt, p);
    expectExactlyOnce(await settle('partition', ids, p.acked, p.retries, 90_000));
    await allReplicasCurrent();
  }, 180_000);
});
