/**
 * Online export and import of Keel's JetStream streams, for `keel backup` / `keel restore`
 * (docs/backup.md).
 *
 * ```ts
 * const pos = await streamPositions(nc, 'keel');               // configs, counts, consumer ack floors
 * const tasks = captureMessages(nc, 'keel.task.>');            // every task published from now on
 * for await (const m of readStream(nc, evt, { toSeq })) ...    // a stream's stored messages
 * await writeStreamExport('KEEL_EVT.jsonl', readStream(nc, evt));
 * await importStream(nc2, { ...evt, preserveSeq: true }, readStreamExport('KEEL_EVT.jsonl'));
 * ```
 *
 * An export is JSON Lines, one {@link StreamMessageRecord} per message (subject, headers, body in
 * base64, stream sequence, time). An import recreates the stream from its recorded configuration
 * and publishes the messages again; with `preserveSeq` every message gets its old sequence
 * (`first_seq`, and a publish-then-delete filler for each gap), so a dead letter keeps its
 * number, and each durable consumer that starts at "new" messages is recreated at its recorded
 * ack floor, so it sees again exactly what it had not acknowledged.
 */
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { jetstream, jetstreamManager, DeliverPolicy, type ConsumerConfig, type JetStreamManager, type StreamConfig } from '@nats-io/jetstream';
import { headers as natsHeaders, type MsgHdrs, type NatsConnection } from '@nats-io/nats-core';
import { KeelError } from '../config/index.ts';
import { subjects as subjectSpace } from './subjects.ts';

export type StreamBackupErrorCode =
  /** reading a stream or writing its export failed */
  | 'BUS_BACKUP_FAILED'
  /** an export file is not what an export writes (a line that is not a message record) */
  | 'BUS_BACKUP_BAD_FILE'
  /** the stream to import into already exists with messages */
  | 'BUS_RESTORE_NOT_EMPTY'
  /** the import could not recreate the stream, a consumer or a message at its sequence */
  | 'BUS_RESTORE_FAILED';

export class StreamBackupError extends KeelError {
  declare readonly code: StreamBackupErrorCode;
  readonly stream: string | undefined;
  constructor(code: StreamBackupErrorCode, message: string, opts: { stream?: string; cause?: unknown } = {}) {
    super(code, message, { cause: opts.cause });
    this.name = 'StreamBackupError';
    this.stream = opts.stream;
  }
}

/** One stored message as an export line. */
export interface StreamMessageRecord {
  /** the stream sequence (0 for a message seen on the wire, not read from the stream) */
  seq: number;
  subject: string;
  /** ISO time the stream stored it (or it was seen) */
  time: string;
  /** every header with all its values */
  headers: Record<string, string[]>;
  /** the body, base64 */
  data: string;
}

/** A durable consumer as it stood when positions were read. */
export interface ConsumerPosition {
  name: string;
  /** the server's configuration of it */
  config: Record<string, unknown>;
  /** every message at or below this stream sequence was acknowledged */
  ackFloor: number;
  /** the last stream sequence delivered */
  delivered: number;
}

/** A stream as it stood when positions were read. */
export interface StreamPosition {
  name: string;
  /** the server's configuration of it */
  config: Record<string, unknown>;
  retention: 'limits' | 'workqueue' | 'interest';
  messages: number;
  firstSeq: number;
  lastSeq: number;
  consumers: ConsumerPosition[];
}

/** What {@link streamPositions} left out, and why. */
export interface SkippedStream {
  name: string;
  why: string;
}

/**
 * The streams of a Keel prefix (`<P>_*`) with their configuration, counts and durable consumers'
 * positions. Left out: the lease stream (its token is recreated by provisioning) and the
 * capability registry bucket (heartbeats that expire within seconds).
 */
export async function streamPositions(nc: NatsConnection, prefix = 'keel'): Promise<{ streams: StreamPosition[]; skipped: SkippedStream[] }> {
  const s = subjectSpace(prefix);
  const jsm = await jetstreamManager(nc);
  const P = s.streams.tasks.slice(0, -'_TASKS'.length);
  const streams: StreamPosition[] = [];
  const skipped: SkippedStream[] = [];
  for await (const info of jsm.streams.list()) {
    const name = info.config.name;
    if (name === `KV_${s.registryBucket}`) {
      skipped.push({ name, why: 'capability registry: heartbeats of live agents, rewritten within seconds of a start' });
      continue;
    }
    // this prefix's streams only (another tenant's prefix may share the name's start: `keel_x` → KEEL_X_TASKS)
    if (!name.startsWith(`${P}_`) || !(info.config.subjects ?? []).every((x) => x.startsWith(`${prefix}.`))) continue;
    if (name === s.streams.leases) {
      skipped.push({ name, why: 'lease tokens: recreated when the engine provisions the bus' });
      continue;
    }
    const consumers: ConsumerPosition[] = [];
    for await (const c of jsm.consumers.list(name)) {
      if (!c.config.durable_name) continue;
      consumers.push({ name: c.name, config: plain(c.config), ackFloor: c.ack_floor.stream_seq, delivered: c.delivered.stream_seq });
    }
    streams.push({
      name,
      config: plain(info.config),
      retention: info.config.retention as StreamPosition['retention'],
      messages: info.state.messages,
      firstSeq: info.state.first_seq,
      lastSeq: info.state.last_seq,
      consumers: consumers.sort((a, b) => a.name.localeCompare(b.name)),
    });
  }
  streams.sort((a, b) => a.name.localeCompare(b.name));
  return { streams, skipped };
}

const plain = (o: object): Record<string, unknown> => JSON.parse(JSON.stringify(o)) as Record<string, unknown>;

function headersOf(h: MsgHdrs | undefined): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  if (!h) return out;
  for (const k of h.keys()) out[k] = h.values(k);
  return out;
}

function record(m: { seq: number; subject: string; time: Date; data: Uint8Array }, h: MsgHdrs | undefined): StreamMessageRecord {
  return { seq: m.seq, subject: m.subject, time: m.time.toISOString(), headers: headersOf(h), data: Buffer.from(m.data).toString('base64') };
}

/** The first value of a header of a record (`Nats-Msg-Id` …), or undefined. */
export function recordHeader(r: StreamMessageRecord, name: string): string | undefined {
  const k = Object.keys(r.headers).find((x) => x.toLowerCase() === name.toLowerCase());
  return k ? r.headers[k]![0] : undefined;
}

/** The headers of a record, one value each (the first), as the bus's envelopes read them. */
export function recordHeaders(r: StreamMessageRecord): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(r.headers)) if (v[0] !== undefined) out[k] = v[0];
  return out;
}

/**
 * Every message published on `subject` (core NATS: JetStream publishes included) from now until
 * `stop()`, with headers. Call `nc.flush()` after it so the server has the subscription before
 * anything is read from the stream.
 */
export function captureMessages(nc: NatsConnection, subject: string): { count(): number; stop(): Promise<StreamMessageRecord[]> } {
  const got: StreamMessageRecord[] = [];
  const sub = nc.subscribe(subject, {
    callback: (err, m) => {
      if (err) return;
      got.push({ seq: 0, subject: m.subject, time: new Date().toISOString(), headers: headersOf(m.headers), data: Buffer.from(m.data).toString('base64') });
    },
  });
  return {
    count: () => got.length,
    stop: async () => {
      await nc.flush();
      sub.unsubscribe();
      return got;
    },
  };
}

/**
 * The messages of a stream from its first up to `toSeq` (default: its last sequence now), in
 * order. A work-queue stream is read message by message (`STREAM.MSG.GET` with `next_by_subj`:
 * a work queue takes no second consumer); any other stream with an ordered consumer.
 */
export async function* readStream(nc: NatsConnection, stream: Pick<StreamPosition, 'name' | 'retention'>, opts: { fromSeq?: number; toSeq?: number } = {}): AsyncGenerator<StreamMessageRecord> {
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.info(stream.name);
  const toSeq = opts.toSeq ?? info.state.last_seq;
  let seq = Math.max(opts.fromSeq ?? 1, info.state.first_seq);
  if (info.state.messages === 0 || seq > toSeq) return;
  if (stream.retention === 'workqueue') {
    while (seq <= toSeq) {
      // the next stored message at or after seq (any subject)
      const m = await jsm.streams.getMessage(stream.name, { seq, next_by_subj: '>' } as unknown as { seq: number }).catch((err: unknown) => {
        throw new StreamBackupError('BUS_BACKUP_FAILED', `reading ${stream.name} at ${seq}: ${(err as Error).message}`, { stream: stream.name, cause: err });
      });
      if (!m || m.seq > toSeq) return;
      yield record(m, m.header);
      seq = m.seq + 1;
    }
    return;
  }
  const js = jetstream(nc);
  const consumer = await js.consumers.get(stream.name, { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: seq });
  try {
    for (;;) {
      const batch = await consumer.fetch({ max_messages: 500, expires: 2_000 });
      let n = 0;
      for await (const m of batch) {
        n++;
        if (m.seq > toSeq) return;
        yield record(m, m.headers);
        // nothing stored after it: toSeq itself was deleted
        if (m.seq >= toSeq || m.info.pending === 0) return;
      }
      if (n === 0) return;
    }
  } finally {
    await consumer.delete().catch(() => undefined);
  }
}

/** Writes records as JSON Lines; `keep` drops what it refuses (counted). */
export async function writeStreamExport(path: string, records: AsyncIterable<StreamMessageRecord> | Iterable<StreamMessageRecord>, opts: { keep?: (r: StreamMessageRecord) => boolean; mode?: number } = {}): Promise<{ messages: number; dropped: number; firstSeq: number; lastSeq: number; bytes: number }> {
  const out: WriteStream = createWriteStream(path, { mode: opts.mode ?? 0o600 });
  const done = new Promise<void>((resolve, reject) => {
    out.once('finish', resolve);
    out.once('error', reject);
  });
  let messages = 0;
  let dropped = 0;
  let firstSeq = 0;
  let lastSeq = 0;
  let bytes = 0;
  try {
    for await (const r of records) {
      if (opts.keep && !opts.keep(r)) {
        dropped++;
        continue;
      }
      const line = `${JSON.stringify(r)}\n`;
      bytes += Buffer.byteLength(line);
      if (!out.write(line)) await new Promise<void>((res) => out.once('drain', () => res()));
      messages++;
      if (r.seq) {
        if (!firstSeq) firstSeq = r.seq;
        lastSeq = r.seq;
      }
    }
  } finally {
    out.end();
  }
  await done;
  return { messages, dropped, firstSeq, lastSeq, bytes };
}

/** Reads an export written by {@link writeStreamExport}, checking each line's shape. */
export async function* readStreamExport(path: string): AsyncGenerator<StreamMessageRecord> {
  const lines = createInterface({ input: createReadStream(path), crlfDelay: Infinity });
  let n = 0;
  for await (const line of lines) {
    n++;
    if (!line) continue;
    let r: StreamMessageRecord;
    try {
      r = JSON.parse(line) as StreamMessageRecord;
    } catch (err) {
      throw new StreamBackupError('BUS_BACKUP_BAD_FILE', `${path} line ${n} is not JSON: ${(err as Error).message}`, { cause: err });
    }
    if (typeof r !== 'object' || r === null || typeof r.seq !== 'number' || typeof r.subject !== 'string' || typeof r.data !== 'string' || typeof r.headers !== 'object' || r.headers === null) {
      throw new StreamBackupError('BUS_BACKUP_BAD_FILE', `${path} line ${n} is not a message record (seq, subject, headers, data)`);
    }
    yield r;
  }
}

/** Headers never published again: expectations of the original publish (and batch markers) would refuse or skew the import. */
const DROP_HEADER = /^(Nats-Expected-|Nats-Batch-)/i;

function publishHeaders(r: StreamMessageRecord, withMsgId: boolean): MsgHdrs | undefined {
  const entries = Object.entries(r.headers).filter(([k]) => !DROP_HEADER.test(k) && (withMsgId || k.toLowerCase() !== 'nats-msg-id'));
  if (entries.length === 0) return undefined;
  const h = natsHeaders();
  for (const [k, vs] of entries) for (const v of vs) h.append(k, v);
  return h;
}

/** A subject of the stream for gap fillers: its first subject with wildcards replaced. */
function fillerSubject(config: Record<string, unknown>): string {
  const subjects = (config.subjects as string[] | undefined) ?? [];
  const first = subjects[0];
  if (!first) throw new StreamBackupError('BUS_RESTORE_FAILED', `stream ${String(config.name)} has no subjects to fill sequence gaps on`);
  return first.split('.').map((t) => (t === '>' || t === '*' ? '_keel_restore_gap' : t)).join('.');
}

/** The recorded configuration, cleaned of what only the server sets. */
function createConfig<T extends Record<string, unknown>>(config: T, replicas: number | undefined): T {
  const c: Record<string, unknown> = { ...config };
  delete c.sealed;
  delete c.first_seq;
  if (c.metadata && typeof c.metadata === 'object') {
    const md = Object.fromEntries(Object.entries(c.metadata as Record<string, string>).filter(([k]) => !k.startsWith('_nats')));
    if (Object.keys(md).length) c.metadata = md;
    else delete c.metadata;
  }
  if (replicas !== undefined) c.num_replicas = replicas;
  return c as T;
}

export interface ImportStreamSpec {
  name: string;
  config: Record<string, unknown>;
  consumers: ConsumerPosition[];
  /** give every message its recorded sequence (limits streams); false: publish in order as new messages (work queues) */
  preserveSeq: boolean;
  /** the stream's first sequence when it was read (preserveSeq: where numbering starts) */
  firstSeq?: number;
}

export interface ImportStreamResult {
  name: string;
  messages: number;
  /** sequence gaps filled and deleted again */
  gaps: number;
  /** messages the server refused (work-queue import only: reported, not fatal) */
  refused: Array<{ subject: string; msgId: string | undefined; error: string }>;
  /** durable consumers recreated at their ack floor */
  consumers: string[];
  lastSeq: number;
}

/** Whether these streams exist and hold messages (a restore refuses to mix into them). */
export async function nonEmptyStreams(nc: NatsConnection, names: string[]): Promise<Array<{ name: string; messages: number }>> {
  const jsm = await jetstreamManager(nc);
  const out: Array<{ name: string; messages: number }> = [];
  for (const name of names) {
    const info = await jsm.streams.info(name).catch(() => null);
    if (info && info.state.messages > 0) out.push({ name, messages: info.state.messages });
  }
  return out;
}

/**
 * Recreates a stream from its recorded configuration and publishes the records into it. With
 * `preserveSeq`, each message lands at its recorded sequence (checked with the expected last
 * sequence), gaps are filled and deleted, and each durable consumer that delivers only new
 * messages is created when the stream reaches its ack floor. Consumers of work-queue streams
 * and "deliver all" consumers are left to the engine and agents, which create theirs at start.
 * Refuses a stream that exists with messages (`BUS_RESTORE_NOT_EMPTY`).
 */
export async function importStream(nc: NatsConnection, spec: ImportStreamSpec, records: AsyncIterable<StreamMessageRecord>, opts: { replicas?: number; onProgress?: (n: number) => void } = {}): Promise<ImportStreamResult> {
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  const existing = await jsm.streams.info(spec.name).catch(() => null);
  if (existing && existing.state.messages > 0) throw new StreamBackupError('BUS_RESTORE_NOT_EMPTY', `stream ${spec.name} already holds ${existing.state.messages} messages: restore into an empty bus`, { stream: spec.name });
  if (existing) await jsm.streams.delete(spec.name);
  const firstSeq = spec.preserveSeq ? Math.max(1, spec.firstSeq ?? 1) : 1;
  const config = createConfig(spec.config, opts.replicas) as unknown as StreamConfig;
  try {
    await jsm.streams.add({ ...config, ...(firstSeq > 1 ? { first_seq: firstSeq } : {}) });
  } catch (err) {
    throw new StreamBackupError('BUS_RESTORE_FAILED', `cannot create stream ${spec.name}: ${(err as Error).message}`, { stream: spec.name, cause: err });
  }
  // consumers that start at new messages, by the sequence after which they must start
  const pendingConsumers = spec.preserveSeq && config.retention !== 'workqueue' ? spec.consumers.filter((c) => c.config.deliver_policy === DeliverPolicy.New).sort((a, b) => a.ackFloor - b.ackFloor) : [];
  const created: string[] = [];
  let last = firstSeq - 1;
  const createDue = async (upTo: number) => {
    while (pendingConsumers.length && pendingConsumers[0]!.ackFloor <= upTo) {
      const c = pendingConsumers.shift()!;
      await addConsumer(jsm, spec.name, c, opts.replicas);
      created.push(c.name);
    }
  };
  await createDue(last);
  const filler = spec.preserveSeq ? fillerSubject(spec.config) : '';
  const result: ImportStreamResult = { name: spec.name, messages: 0, gaps: 0, refused: [], consumers: created, lastSeq: last };
  for await (const r of records) {
    if (spec.preserveSeq) {
      if (r.seq <= last) throw new StreamBackupError('BUS_RESTORE_FAILED', `${spec.name}: record ${r.seq} is out of order (after ${last})`, { stream: spec.name });
      while (last + 1 < r.seq) {
        // a gap (deleted or dropped message): hold its number with a filler, then delete it
        const ack = await publishAt(js, spec.name, filler, new Uint8Array(), undefined, last);
        await jsm.streams.deleteMessage(spec.name, ack, false);
        last = ack;
        result.gaps++;
        await createDue(last);
      }
      last = await publishAt(js, spec.name, r.subject, Buffer.from(r.data, 'base64'), r, last);
      await createDue(last);
    } else {
      try {
        const ack = await js.publish(r.subject, Buffer.from(r.data, 'base64'), { headers: publishHeaders(r, true) });
        last = ack.seq;
      } catch (err) {
        result.refused.push({ subject: r.subject, msgId: recordHeader(r, 'Nats-Msg-Id'), error: (err as Error).message });
        continue;
      }
    }
    result.messages++;
    if (result.messages % 1000 === 0) opts.onProgress?.(result.messages);
  }
  // consumers whose floor is past the last imported message (its tail was deleted)
  await createDue(Number.MAX_SAFE_INTEGER);
  result.lastSeq = last;
  return result;
}

/** Publishes so the message is stored at `prev + 1` exactly (a duplicate message id is published again without it). */
async function publishAt(js: ReturnType<typeof jetstream>, stream: string, subject: string, data: Uint8Array, r: StreamMessageRecord | undefined, prev: number): Promise<number> {
  for (const withMsgId of [true, false]) {
    try {
      const ack = await js.publish(subject, data, { headers: r ? publishHeaders(r, withMsgId) : undefined, expect: { lastSequence: prev, streamName: stream } });
      if (ack.duplicate) continue;
      if (ack.seq !== prev + 1) throw new Error(`stored at ${ack.seq}, expected ${prev + 1}`);
      return ack.seq;
    } catch (err) {
      throw new StreamBackupError('BUS_RESTORE_FAILED', `${stream}: cannot store ${r ? `message ${r.seq}` : 'a gap filler'} on ${subject} at sequence ${prev + 1}: ${(err as Error).message}`, { stream, cause: err });
    }
  }
  throw new StreamBackupError('BUS_RESTORE_FAILED', `${stream}: message ${r?.seq} was refused as a duplicate even without its message id`, { stream });
}

async function addConsumer(jsm: JetStreamManager, stream: string, c: ConsumerPosition, replicas: number | undefined): Promise<void> {
  try {
    await jsm.consumers.add(stream, createConfig(c.config, replicas) as unknown as ConsumerConfig);
  } catch (err) {
    throw new StreamBackupError('BUS_RESTORE_FAILED', `cannot recreate consumer ${stream}/${c.name}: ${(err as Error).message}`, { stream, cause: err });
  }
}
