/**
 * `npm run bench -- bus`: envelope publish → consume → ack through Keel's bus (zod-validated
 * envelope, trace headers, DLQ-ready consumer runtime) beside a raw nats.js publish/consume/ack
 * loop of the same messages in the same process, plus `nats bench` as the server's ceiling.
 */
import { spawnSync } from 'node:child_process';
import { z } from 'zod';
import { jetstream, jetstreamManager, AckPolicy } from '@nats-io/jetstream';
import { connectBus, createBus, defineMessage } from '../bus/index.ts';
import { findTool } from '../config/index.ts';
import { uniqueName } from '../testkit/index.ts';
import { benchNats, compare, figures, type Bench, type Figures } from './lib.ts';

const SIZE = 256;
const WINDOW = 1_000;

const Msg = defineMessage('bench.msg', z.object({ t: z.number(), pad: z.string() }));

function payload(): { t: number; pad: string } {
  return { t: performance.now(), pad: 'x'.repeat(SIZE - 40) };
}

/** Publishes `n` messages with at most WINDOW unacknowledged at once. */
async function windowed(n: number, publishOne: (i: number) => Promise<unknown>): Promise<void> {
  const pending = new Set<Promise<unknown>>();
  for (let i = 0; i < n; i++) {
    const p = publishOne(i).finally(() => pending.delete(p));
    pending.add(p);
    if (pending.size >= WINDOW) await Promise.race(pending);
  }
  await Promise.all(pending);
}

export async function rawLoop(url: string, n: number): Promise<Figures> {
  const nc = await connectBus({ servers: url });
  const jsm = await jetstreamManager(nc);
  const name = uniqueName('RAW');
  await jsm.streams.add({ name, subjects: [`${name}.>`] });
  await jsm.consumers.add(name, { durable_name: 'c', ack_policy: AckPolicy.Explicit, max_ack_pending: 10_000 });
  const js = jetstream(nc);
  const lat: number[] = [];
  const c = await js.consumers.get(name, 'c');
  const msgs = await c.consume({ max_messages: 1_000 });
  const enc = new TextEncoder();
  const t0 = performance.now();
  const consumed = (async () => {
    for await (const m of msgs) {
      const body = JSON.parse(new TextDecoder().decode(m.data)) as { t: number };
      lat.push(performance.now() - body.t);
      m.ack();
      if (lat.length >= n) break;
    }
  })();
  await windowed(n, () => js.publish(`${name}.x`, enc.encode(JSON.stringify(payload()))));
  await consumed;
  const elapsed = performance.now() - t0;
  await msgs.close().catch(() => undefined);
  await jsm.streams.delete(name);
  await nc.close();
  return figures(n, elapsed, lat);
}

export async function envelopeLoop(url: string, n: number): Promise<Figures> {
  const nc = await connectBus({ servers: url });
  const bus = createBus(nc, { prefix: uniqueName('bench') });
  await bus.provision();
  const lat: number[] = [];
  let done!: () => void;
  const all = new Promise<void>((r) => (done = r));
  const consumer = await bus.consumeTasks('bench', {
    accepts: [Msg],
    concurrency: 64,
    prefetch: 1_000,
    maxAckPending: 10_000,
    handler: async (env) => {
      lat.push(performance.now() - env.data.t);
      if (lat.length >= n) done();
    },
  });
  const subject = bus.subjects.task('bench');
  const t0 = performance.now();
  await windowed(n, () => bus.publish(subject, Msg, payload(), { correlationId: 'bench', customer: 'cust-1' }));
  await all;
  const elapsed = performance.now() - t0;
  await consumer.stop();
  const jsm = await jetstreamManager(nc);
  for (const s of Object.values(bus.subjects.streams)) await jsm.streams.delete(s).catch(() => undefined);
  await nc.close();
  return figures(n, elapsed, lat);
}

function natsBench(url: string, n: number): Record<string, unknown> | null {
  const cli = findTool('nats');
  if (!cli) return null;
  const stream = uniqueName('NB');
  const run = (args: string[]) => spawnSync(cli, ['-s', url, 'bench', 'js', '--msgs', String(n), '--size', String(SIZE), '--no-progress', '--stream', stream, ...args], { encoding: 'utf8' });
  const rate = (out: string) => Number(/stats: ([\d,]+) msgs\/sec/.exec(out)?.[1]?.replace(/,/g, '') ?? NaN);
  const pub = run(['pub', 'async', `${stream}.x`, '--create', '--purge']);
  const con = run(['consume']);
  return { nats_bench_js_pub_async_msgs_per_s: rate(pub.stdout + pub.stderr), nats_bench_js_consume_msgs_per_s: rate(con.stdout + con.stderr) };
}

export const busBench: Bench = {
  name: 'bus',
  description: 'envelope publish→consume→ack vs raw nats.js; nats bench as the ceiling',
  async run(ctx) {
    const n = ctx.quick ? 5_000 : 50_000;
    const nats = await benchNats();
    const url = nats.url;
    try {
      ctx.progress(`warm-up`);
      await rawLoop(url, 2_000);
      await envelopeLoop(url, 2_000);
      const rounds = ctx.quick ? 1 : 3;
      const raws: Figures[] = [];
      const envs: Figures[] = [];
      for (let r = 0; r < rounds; r++) {
        ctx.progress(`round ${r + 1}/${rounds}: raw nats.js loop, ${n} x ${SIZE} B`);
        raws.push(await rawLoop(url, n));
        ctx.progress(`round ${r + 1}/${rounds}: envelope loop, ${n} x ${SIZE} B`);
        envs.push(await envelopeLoop(url, n));
      }
      const median = (xs: Figures[]) => [...xs].sort((a, b) => a.throughput_per_s - b.throughput_per_s)[Math.floor(xs.length / 2)]!;
      ctx.progress('nats bench (server ceiling)');
      const ceiling = natsBench(url, n);
      const raw = median(raws);
      const envl = median(envs);
      return {
        machine: { nats_server: url },
        results: [
          compare(
            'envelope publish→consume→ack (256 B, 1000 in flight, hop latency)',
            { ...envl, notes: { messages: n, rounds, all_rounds_per_s: envs.map((f) => f.throughput_per_s), ...(ceiling ?? { nats_bench: 'natscli not provisioned' }) } },
            { scenario: 'raw nats.js publish/consume/ack', ...raw, notes: { all_rounds_per_s: raws.map((f) => f.throughput_per_s) } },
          ),
        ],
      };
    } finally {
      await nats.stop();
    }
  },
};
