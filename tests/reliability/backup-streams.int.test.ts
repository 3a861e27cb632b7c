/**
 * bus/backup.ts on a real nats-server: a stream exported while it is written and imported again
 * keeps every message at its sequence (gaps included), its headers and body; a durable consumer
 * that starts at new messages comes back at its ack floor; the work queue is read message by
 * message across sparse sequences; a duplicate message id inside a stream does not shift the
 * numbering; an import never mixes into a stream that holds messages.
 */
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { jetstream, jetstreamManager, AckPolicy, DeliverPolicy, RetentionPolicy, StorageType } from '@nats-io/jetstream';
import { headers as natsHeaders, nanos, type NatsConnection } from '@nats-io/nats-core';
import {
  connectBus, createBus, defineMessage, subjects, streamPositions, captureMessages, readStream, writeStreamExport, readStreamExport, importStream, recordHeader,
  type StreamMessageRecord,
} from '../../bus/index.ts';
import { natsSuite, uniqueName } from '../helpers/index.ts';
import { z } from 'zod';

const suite = natsSuite('backup-streams');

async function connect(): Promise<NatsConnection> {
  const nc = await connectBus({ servers: suite.nats!.url });
  suite.defer(() => nc.close());
  return nc;
}

async function collect(it: AsyncIterable<StreamMessageRecord>): Promise<StreamMessageRecord[]> {
  const out: StreamMessageRecord[] = [];
  for await (const r of it) out.push(r);
  return out;
}

describe('stream export and import', () => {
  it('keeps sequences, gaps, headers and bodies; recreates a "new" consumer at its ack floor', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const nc = await connect();
    const prefix = uniqueName('bk');
    const s = subjects(prefix);
    const bus = createBus(nc, { prefix });
    await bus.provision();
    const js = jetstream(nc);
    const jsm = await jetstreamManager(nc);

    // 40 events; a durable "new" consumer created after the first 10, which acks 10 more
    const publish = async (i: number) => {
      const h = natsHeaders();
      h.set('Nats-Msg-Id', `ev-${i}`);
      h.append('X-Multi', 'a');
      h.append('X-Multi', `b${i}`);
      return js.publish(s.evt('ticket', `t${i % 3}`), JSON.stringify({ i }), { headers: h });
    };
    for (let i = 1; i <= 10; i++) await publish(i);
    await jsm.consumers.add(s.streams.evt, { durable_name: 'trigger_x', ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.New, filter_subject: s.evtAll('ticket'), ack_wait: nanos(30_000) });
    for (let i = 11; i <= 40; i++) await publish(i);
    const c = await js.consumers.get(s.streams.evt, 'trigger_x');
    const got = await c.fetch({ max_messages: 10, expires: 2_000 });
    for await (const m of got) m.ack();
    await nc.flush();
    // a hole in the middle and at the front
    await jsm.streams.deleteMessage(s.streams.evt, 25, false);
    await jsm.streams.deleteMessage(s.streams.evt, 1, false);

    // a recorder sees what is published from now on (here: two tasks)
    const rec = captureMessages(nc, `${prefix}.task.>`);
    await nc.flush();
    const Task = defineMessage('task.x', z.object({ n: z.number() }));
    await bus.publish(s.task('cap-a'), Task, { n: 1 });
    await bus.publish(s.task('cap-b'), Task, { n: 2 });

    const pos = await streamPositions(nc, prefix);
    expect(pos.streams.map((p) => p.name)).toEqual([s.streams.dlq, s.streams.evt, s.streams.in, s.streams.out, s.streams.tasks].sort());
    expect(pos.skipped.map((x) => x.name).sort()).toEqual([`KV_${s.registryBucket}`, s.streams.leases].sort());
    const evt = pos.streams.find((p) => p.name === s.streams.evt)!;
    expect(evt).toMatchObject({ retention: 'limits', messages: 38, firstSeq: 2, lastSeq: 40 });
    expect(evt.consumers).toEqual([expect.objectContaining({ name: 'trigger_x', ackFloor: 20, delivered: 20 })]);

    // written while a writer goes on: the export stops at the sequence asked for
    const file = join(suite.dir, `${prefix}-evt.jsonl`);
    const writing = writeStreamExport(file, readStream(nc, evt, { toSeq: evt.lastSeq }));
    for (let i = 41; i <= 45; i++) await publish(i);
    const w = await writing;
    expect(w).toMatchObject({ messages: 38, dropped: 0, firstSeq: 2, lastSeq: 40 });
    const exported = await collect(readStreamExport(file));
    expect(exported.map((r) => r.seq)).toEqual([...Array.from({ length: 39 }, (_, k) => k + 2)].filter((q) => q !== 25));
    expect(exported[0]!.headers['X-Multi']).toEqual(['a', 'b2']);
    expect(recordHeader(exported[0]!, 'nats-msg-id')).toBe('ev-2');
    expect(JSON.parse(Buffer.from(exported[0]!.data, 'base64').toString())).toEqual({ i: 2 });

    const captured = await rec.stop();
    expect(captured.map((r) => r.subject)).toEqual([s.task('cap-a'), s.task('cap-b')]);

    // into an empty stream of the same name: same sequences, the gap kept, the consumer at its floor
    await expect(importStream(nc, { name: evt.name, config: evt.config, consumers: evt.consumers, preserveSeq: true, firstSeq: w.firstSeq }, readStreamExport(file))).rejects.toMatchObject({ code: 'BUS_RESTORE_NOT_EMPTY' });
    await jsm.streams.delete(s.streams.evt);
    const r = await importStream(nc, { name: evt.name, config: evt.config, consumers: evt.consumers, preserveSeq: true, firstSeq: w.firstSeq }, readStreamExport(file));
    expect(r).toMatchObject({ messages: 38, gaps: 1, consumers: ['trigger_x'], lastSeq: 40 });
    const info = await jsm.streams.info(s.streams.evt);
    expect(info.state).toMatchObject({ messages: 38, first_seq: 2, last_seq: 40 });
    expect(await jsm.streams.getMessage(s.streams.evt, { seq: 25 })).toBeNull();
    const m26 = await jsm.streams.getMessage(s.streams.evt, { seq: 26 });
    expect(m26!.json()).toEqual({ i: 26 });
    expect(m26!.header.values('X-Multi')).toEqual(['a', 'b26']);
    expect(m26!.header.get('Nats-Msg-Id')).toBe('ev-26');
    // the consumer delivers exactly what it had not acknowledged: 21..40 without the gap
    const again = await (await js.consumers.get(s.streams.evt, 'trigger_x')).fetch({ max_messages: 100, expires: 1_500 });
    const seqs: number[] = [];
    for await (const m of again) {
      seqs.push(m.seq);
      m.ack();
    }
    expect(seqs).toEqual(Array.from({ length: 20 }, (_, k) => k + 21).filter((q) => q !== 25));
    // the restored message ids are in the dedupe window: the outbox publishing ev-30 again stores nothing
    const dup = await js.publish(s.evt('ticket', 't0'), '{}', { msgID: 'ev-30' });
    expect(dup.duplicate).toBe(true);
  });

  it('reads a work queue across sparse sequences and republishes it in order', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const nc = await connect();
    const prefix = uniqueName('bk');
    const s = subjects(prefix);
    const bus = createBus(nc, { prefix });
    await bus.provision();
    const js = jetstream(nc);
    const jsm = await jetstreamManager(nc);
    for (let i = 1; i <= 30; i++) await js.publish(s.task(i % 2 ? 'odd' : 'even'), JSON.stringify({ i }), { msgID: `task-${i}` });
    // the "even" tasks are done (acked by their consumer: a work queue removes them)
    await jsm.consumers.add(s.streams.tasks, { durable_name: 'even', ack_policy: AckPolicy.Explicit, filter_subject: s.task('even') });
    const done = await (await js.consumers.get(s.streams.tasks, 'even')).fetch({ max_messages: 15, expires: 2_000 });
    for await (const m of done) await m.ackAck();
    const pos = (await streamPositions(nc, prefix)).streams.find((p) => p.name === s.streams.tasks)!;
    expect(pos).toMatchObject({ retention: 'workqueue', messages: 15 });
    const tasks = await collect(readStream(nc, pos));
    expect(tasks.map((t) => JSON.parse(Buffer.from(t.data, 'base64').toString()).i)).toEqual(Array.from({ length: 15 }, (_, k) => 2 * k + 1));

    await jsm.streams.delete(s.streams.tasks);
    const r = await importStream(nc, { name: pos.name, config: pos.config, consumers: pos.consumers, preserveSeq: false }, (async function* () { yield* tasks; })());
    expect(r).toMatchObject({ messages: 15, refused: [], consumers: [] });
    const info = await jsm.streams.info(s.streams.tasks);
    expect(info.config.retention).toBe(RetentionPolicy.Workqueue);
    expect(info.state.messages).toBe(15);
  });

  it('a message id stored twice in a stream (outside the dedupe window) keeps its sequence', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const nc = await connect();
    const prefix = uniqueName('bk');
    const P = subjects(prefix).streams.tasks.replace(/_TASKS$/, '');
    const jsm = await jetstreamManager(nc);
    const js = jetstream(nc);
    const name = `${P}_DUPS`;
    await jsm.streams.add({ name, subjects: [`${prefix}.dups.>`], retention: RetentionPolicy.Limits, storage: StorageType.File, duplicate_window: nanos(400) });
    await js.publish(`${prefix}.dups.a`, 'one', { msgID: 'same' });
    await new Promise((r) => setTimeout(r, 600));
    await js.publish(`${prefix}.dups.a`, 'two', { msgID: 'same' });
    await js.publish(`${prefix}.dups.a`, 'three', { msgID: 'other' });
    const pos = (await streamPositions(nc, prefix)).streams.find((p) => p.name === name)!;
    expect(pos.messages).toBe(3);
    const msgs = await collect(readStream(nc, pos));
    await jsm.streams.delete(name);
    const r = await importStream(nc, { name, config: pos.config, consumers: [], preserveSeq: true, firstSeq: pos.firstSeq }, (async function* () { yield* msgs; })());
    expect(r).toMatchObject({ messages: 3, gaps: 0, lastSeq: 3 });
    const second = await jsm.streams.getMessage(name, { seq: 2 });
    expect(second!.string()).toBe('two');
    expect((await jsm.streams.getMessage(name, { seq: 3 }))!.string()).toBe('three');
  });
});
