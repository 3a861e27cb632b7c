import { jetstream, jetstreamManager, RetentionPolicy, StorageType, AckPolicy, DeliverPolicy, DiscardPolicy, type StreamConfig, type ConsumerConfig, type JetStreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { nanos, type NatsConnection } from '@nats-io/nats-core';
import { BusError, ProvisionConflictError } from './errors.ts';
import { subjects as subjectSpace, durableFor, assertToken, leaseDurable } from './subjects.ts';

/** A stream as Keel declares it. Durations in milliseconds. */
export interface StreamSpec {
  name: string;
  subjects: string[];
  retention: 'limits' | 'workqueue' | 'interest';
  maxAgeMs: number;
  duplicateWindowMs: number;
  maxMsgSize: number;
  replicas: number;
  description: string;
  /** keep only the last N messages of each subject */
  maxMsgsPerSubject?: number;
  /** most bytes the stream holds (JetStream reserves them on every replica's server) */
  maxBytes: number;
  /** most messages the stream holds */
  maxMsgs: number;
  /**
   * what a full stream does: `old` drops its oldest messages, `new` refuses the publish (the
   * publisher gets an error and retries: nothing acknowledged is dropped)
   */
  discard: 'old' | 'new';
}

export interface KvSpec {
  bucket: string;
  /** an entry not rewritten within ttl disappears */
  ttlMs: number;
  /** how long a watcher can see the delete marker an expiry leaves */
  markerTtlMs: number;
  replicas: number;
  /** most bytes the bucket holds */
  maxBytes: number;
}

export interface ConsumerSpec {
  stream: string;
  durable: string;
  filterSubject: string;
  /** server-side bound; the runtime dead-letters one delivery earlier (see consumer.ts) */
  maxDeliver: number;
  ackWaitMs: number;
  maxAckPending: number;
  /** where a new consumer starts: the whole stream (default) or only messages from now on */
  deliverPolicy?: 'all' | 'new';
  description?: string;
}

/** A lease (see lease.ts): its token and the consumer that hands it out. */
export interface LeaseSpec {
  name: string;
  /** how long a holder that stopped renewing keeps it (the consumer's ack wait) */
  ttlMs: number;
}

export interface Topology {
  streams: StreamSpec[];
  kv: KvSpec[];
  leases?: LeaseSpec[];
}

export type ProvisionAction = 'created' | 'updated' | 'unchanged';
export interface ProvisionReport {
  resource: string;
  action: ProvisionAction;
  changes?: string[];
}

const DAY = 86_400_000;

/** The streams and buckets Keel needs, for a subject prefix (see subjects.ts). */
/** Default TTL of a lease (the workflow timer sweeper's): a dead holder's lease is taken over within about this long. */
export const LEASE_TTL_MS = 2_000;
/** The lease whose holder fires due workflow timers (retries, step timeouts, approval deadlines). */
export const WORKFLOW_TIMER_LEASE = 'workflow-timers';

/** Default of KEEL_NATS_MAX_BYTES: the disk Keel's streams may fill, per replica, split by {@link STREAM_SHARE}. */
export const DEFAULT_STREAMS_MAX_BYTES = 1024 * 1024 * 1024;

/**
 * Each stream's share of the byte budget (KEEL_NATS_MAX_BYTES). JetStream reserves a stream's
 * max_bytes on its servers when the stream is created, so the budget is a total, not a per-stream size.
 */
export const STREAM_SHARE = { tasks: 0.2, evt: 0.35, in: 0.3, out: 0.05, dlq: 0.1 } as const;

export interface TopologyOptions {
  prefix?: string;
  /** replicas of every stream and bucket (KEEL_NATS_REPLICAS; default 1) */
  replicas?: number;
  /** bytes all streams together may hold, per replica (KEEL_NATS_MAX_BYTES; default 1 GiB) */
  maxBytes?: number;
  registryTtlMs?: number;
  leaseTtlMs?: number;
}

/**
 * Every stream is bounded three ways: by age, by message count and by bytes. The work queue
 * refuses new tasks when full (`discard: new`: the publisher sees an error, nothing acknowledged
 * is dropped); the logs (events, inbound, outbound, dead letters) drop their oldest entries
 * (the system of record keeps the entities and runs). Duplicate windows: long enough for a
 * publisher's retries and the workflow re-dispatch (tasks, 10 min) and for the outbox relay's
 * re-publish after a restart (events, 1 h). See docs/bus.md.
 */
export function keelTopology(opts: TopologyOptions = {}): Topology {
  const s = subjectSpace(opts.prefix ?? 'keel');
  const p = s.prefix;
  const replicas = opts.replicas ?? 1;
  const budget = opts.maxBytes ?? DEFAULT_STREAMS_MAX_BYTES;
  const mb = 1024 * 1024;
  // never less than one message of the stream's largest size
  const share = (k: keyof typeof STREAM_SHARE, maxMsgSize = mb) => Math.max(Math.floor(budget * STREAM_SHARE[k]), maxMsgSize);
  return {
    streams: [
      { name: s.streams.tasks, subjects: [`${p}.task.>`], retention: 'workqueue', maxAgeMs: 14 * DAY, duplicateWindowMs: 10 * 60_000, maxMsgSize: mb, replicas, maxBytes: share('tasks'), maxMsgs: 1_000_000, discard: 'new', description: 'work for capabilities; one durable pull consumer per capability' },
      { name: s.streams.evt, subjects: [`${p}.evt.>`], retention: 'limits', maxAgeMs: 30 * DAY, duplicateWindowMs: 10 * 60_000, maxMsgSize: mb, replicas, maxBytes: share('evt'), maxMsgs: 5_000_000, discard: 'old', description: 'canonical change events from the state outbox' },
      { name: s.streams.in, subjects: [`${p}.in.>`], retention: 'limits', maxAgeMs: 30 * DAY, duplicateWindowMs: 10 * 60_000, maxMsgSize: 8 * mb - 1024, replicas, maxBytes: share('in', 8 * mb), maxMsgs: 1_000_000, discard: 'old', description: 'raw inbound channel messages' },
      { name: s.streams.out, subjects: [`${p}.out.>`], retention: 'limits', maxAgeMs: 30 * DAY, duplicateWindowMs: 10 * 60_000, maxMsgSize: mb, replicas, maxBytes: share('out'), maxMsgs: 1_000_000, discard: 'old', description: 'outbound side effects, gated by policy' },
      { name: s.streams.dlq, subjects: [`${p}.dlq.>`], retention: 'limits', maxAgeMs: 90 * DAY, duplicateWindowMs: 10 * 60_000, maxMsgSize: 8 * mb, replicas, maxBytes: share('dlq', 8 * mb), maxMsgs: 100_000, discard: 'old', description: 'dead letters: reason, error, original headers and body' },
      { name: s.streams.leases, subjects: [`${p}.lease.>`], retention: 'limits', maxAgeMs: 0, duplicateWindowMs: 60_000, maxMsgSize: 1024, replicas, maxMsgsPerSubject: 1, maxBytes: mb, maxMsgs: 10_000, discard: 'old', description: 'one token per lease, handed out by its consumer (see lease.ts)' },
    ],
    kv: [{ bucket: s.registryBucket, ttlMs: opts.registryTtlMs ?? 15_000, markerTtlMs: 60_000, replicas, maxBytes: 8 * mb }],
    leases: [{ name: WORKFLOW_TIMER_LEASE, ttlMs: opts.leaseTtlMs ?? LEASE_TTL_MS }],
  };
}

/**
 * The event stream (`<P>_EVT` on `<p>.evt.>`) exactly as {@link keelTopology} declares it: the
 * outbox's exactly-once publishing relies on its 1 h duplicate window.
 */
export function eventStreamSpec(opts: { prefix?: string; replicas?: number; maxBytes?: number } = {}): StreamSpec {
  const name = subjectSpace(opts.prefix ?? 'keel').streams.evt;
  return keelTopology(opts).streams.find((st) => st.name === name)!;
}

export function consumerSpecFor(capability: string, opts: { prefix?: string; maxDeliver?: number; ackWaitMs?: number; maxAckPending?: number } = {}): ConsumerSpec {
  const s = subjectSpace(opts.prefix ?? 'keel');
  return {
    stream: s.streams.tasks,
    durable: durableFor(capability),
    filterSubject: s.task(capability),
    // +1: a delivery that arrives after the last allowed attempt crashed its process is
    // dead-lettered by the runtime instead of silently exhausting the server's count
    maxDeliver: (opts.maxDeliver ?? 5) + 1,
    ackWaitMs: opts.ackWaitMs ?? 30_000,
    maxAckPending: opts.maxAckPending ?? 1_000,
    description: `tasks for capability ${capability}`,
  };
}

/**
 * A durable consumer of one entity type's events (`<p>.evt.<entityType>.*` on `<P>_EVT`). It
 * starts with the events published from its creation on, not the stream's history.
 */
export function eventConsumerSpec(durable: string, entityType: string, opts: { prefix?: string; maxDeliver?: number; ackWaitMs?: number; maxAckPending?: number } = {}): ConsumerSpec {
  const s = subjectSpace(opts.prefix ?? 'keel');
  return {
    stream: s.streams.evt,
    durable: assertToken('durable name', durable),
    filterSubject: s.evtAll(entityType),
    maxDeliver: opts.maxDeliver ?? 10,
    ackWaitMs: opts.ackWaitMs ?? 30_000,
    maxAckPending: opts.maxAckPending ?? 1_000,
    deliverPolicy: 'new',
    description: `${entityType} events for ${durable}`,
  };
}

const RETENTION = { limits: RetentionPolicy.Limits, workqueue: RetentionPolicy.Workqueue, interest: RetentionPolicy.Interest } as const;

function streamConfig(s: StreamSpec): Partial<StreamConfig> & { name: string } {
  return {
    name: s.name,
    subjects: s.subjects,
    retention: RETENTION[s.retention],
    storage: StorageType.File,
    max_age: nanos(s.maxAgeMs),
    duplicate_window: nanos(s.duplicateWindowMs),
    max_msg_size: s.maxMsgSize,
    num_replicas: s.replicas,
    max_bytes: s.maxBytes,
    max_msgs: s.maxMsgs,
    discard: s.discard === 'new' ? DiscardPolicy.New : DiscardPolicy.Old,
    description: s.description,
    ...(s.maxMsgsPerSubject !== undefined ? { max_msgs_per_subject: s.maxMsgsPerSubject } : {}),
  };
}

function isNotFound(err: unknown): boolean {
  const e = err as { name?: string; code?: number; message?: string };
  return e?.name === 'StreamNotFoundError' || e?.name === 'ConsumerNotFoundError' || e?.code === 404 || /not found/i.test(e?.message ?? '');
}

function diff(want: Record<string, unknown>, have: Record<string, unknown>): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(want)) {
    if (k === 'name' || k === 'durable_name') continue;
    if (JSON.stringify(v) !== JSON.stringify(have[k])) out.push(`${k}: ${JSON.stringify(have[k])} -> ${JSON.stringify(v)}`);
  }
  return out;
}

/** Settings JetStream cannot change on an existing stream/consumer. */
const IMMUTABLE_STREAM = new Set(['retention', 'storage']);
const IMMUTABLE_CONSUMER = new Set(['deliver_policy', 'ack_policy']);

export async function ensureStream(jsm: JetStreamManager, spec: StreamSpec): Promise<ProvisionReport> {
  const want = streamConfig(spec);
  let have: StreamConfig | undefined;
  try {
    have = (await jsm.streams.info(spec.name)).config;
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  if (!have) {
    try {
      await jsm.streams.add(want);
      return { resource: `stream ${spec.name}`, action: 'created' };
    } catch (err) {
      // another process created it at the same moment: fall through to compare
      have = (await jsm.streams.info(spec.name).catch(() => {
        throw placementError(`stream ${spec.name}`, spec, err);
      })).config;
    }
  }
  const changes = diff(want, have as unknown as Record<string, unknown>);
  if (changes.length === 0) return { resource: `stream ${spec.name}`, action: 'unchanged' };
  const fixed = changes.filter((c) => IMMUTABLE_STREAM.has(c.split(':')[0]!));
  if (fixed.length) throw new ProvisionConflictError(`stream ${spec.name}`, fixed);
  try {
    await jsm.streams.update(spec.name, want);
  } catch (err) {
    throw placementError(`stream ${spec.name}`, spec, err);
  }
  return { resource: `stream ${spec.name}`, action: 'updated', changes };
}

/**
 * The server's refusal to place a stream, as a typed error saying what to change: more replicas
 * than JetStream servers (10074 on a single server, 10005 in a cluster), or more bytes than its
 * storage has left (10047: JetStream reserves every stream's max_bytes).
 */
function placementError(resource: string, spec: { replicas: number; maxBytes: number }, err: unknown): unknown {
  const code = (err as { code?: unknown }).code;
  const msg = (err as Error | undefined)?.message ?? String(err);
  if (code === 10074 || code === 10005 || /replicas > 1 not supported|insufficient resources/i.test(msg)) {
    return new BusError(
      'BUS_REPLICAS_UNAVAILABLE',
      `${resource} needs ${spec.replicas} replicas and the NATS server refused (${msg}): set KEEL_NATS_REPLICAS to at most the number of JetStream servers (1 for a single server), or start a cluster (KEEL_NATS_CLUSTER=3)`,
      { cause: err },
    );
  }
  if (code === 10047 || /insufficient storage/i.test(msg)) {
    return new BusError(
      'BUS_STORAGE_UNAVAILABLE',
      `${resource} reserves ${Math.round(spec.maxBytes / 1024 / 1024)} MiB and the NATS server has not that much JetStream storage left (${msg}): lower KEEL_NATS_MAX_BYTES, free disk space, or raise the server's max_file_store`,
      { cause: err },
    );
  }
  return err;
}

export async function ensureConsumer(jsm: JetStreamManager, spec: ConsumerSpec): Promise<ProvisionReport> {
  const want: Partial<ConsumerConfig> & { durable_name: string } = {
    durable_name: spec.durable,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: spec.deliverPolicy === 'new' ? DeliverPolicy.New : DeliverPolicy.All,
    filter_subject: spec.filterSubject,
    max_deliver: spec.maxDeliver,
    ack_wait: nanos(spec.ackWaitMs),
    max_ack_pending: spec.maxAckPending,
    ...(spec.description ? { description: spec.description } : {}),
  };
  const resource = `consumer ${spec.stream}/${spec.durable}`;
  let have: ConsumerConfig | undefined;
  try {
    have = (await jsm.consumers.info(spec.stream, spec.durable)).config;
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  if (!have) {
    try {
      await jsm.consumers.add(spec.stream, want);
      return { resource, action: 'created' };
    } catch (err) {
      // a replica starting at the same moment created it first: fall through to compare
      have = (await jsm.consumers.info(spec.stream, spec.durable).catch(() => {
        throw err;
      })).config;
    }
  }
  const changes = diff(want, have as unknown as Record<string, unknown>);
  if (changes.length === 0) return { resource, action: 'unchanged' };
  const fixed = changes.filter((c) => IMMUTABLE_CONSUMER.has(c.split(':')[0]!));
  if (fixed.length) throw new ProvisionConflictError(resource, fixed);
  await jsm.consumers.update(spec.stream, spec.durable, want);
  return { resource, action: 'updated', changes };
}

export async function ensureKv(nc: NatsConnection, spec: KvSpec): Promise<ProvisionReport> {
  const kvm = new Kvm(nc);
  const jsm = await jetstreamManager(nc);
  const streamName = `KV_${spec.bucket}`;
  let exists = true;
  try {
    await jsm.streams.info(streamName);
  } catch (err) {
    if (!isNotFound(err)) throw err;
    exists = false;
  }
  const resource = `kv ${spec.bucket}`;
  if (!exists) {
    try {
      await kvm.create(spec.bucket, { ttl: spec.ttlMs, history: 1, replicas: spec.replicas, markerTTL: spec.markerTtlMs, max_bytes: spec.maxBytes });
    } catch (err) {
      throw placementError(resource, spec, err);
    }
    return { resource, action: 'created' };
  }
  // the bucket is a stream: TTL (max_age), replicas and size change in place
  const info = await jsm.streams.info(streamName);
  const want = { max_age: nanos(spec.ttlMs), num_replicas: spec.replicas, max_bytes: spec.maxBytes };
  const changes = diff(want, info.config as unknown as Record<string, unknown>);
  if (changes.length === 0) return { resource, action: 'unchanged' };
  try {
    await jsm.streams.update(streamName, { ...info.config, ...want });
  } catch (err) {
    throw placementError(resource, spec, err);
  }
  return { resource, action: 'updated', changes };
}

/**
 * Makes the server hold exactly the declared streams and buckets: creates what is missing,
 * updates what can change in place, and refuses (ProvisionConflictError) a change JetStream
 * cannot apply. Running it twice changes nothing.
 */
export async function provisionBus(nc: NatsConnection, topology: Topology, opts: { readyTimeoutMs?: number } = {}): Promise<ProvisionReport[]> {
  // a cluster that just started elects its leaders and learns its peers for a few seconds
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 30_000);
  const jsm = await untilReady(() => jetstreamManager(nc), deadline);
  const out: ProvisionReport[] = [];
  for (const s of topology.streams) out.push(await untilReady(() => ensureStream(jsm, s), deadline));
  for (const k of topology.kv) out.push(await untilReady(() => ensureKv(nc, k), deadline));
  const leaseStream = topology.streams.find((st) => st.subjects.some((x) => x.endsWith('.lease.>')));
  for (const l of topology.leases ?? []) if (leaseStream) out.push(await untilReady(() => ensureLease(nc, jsm, leaseStream, l), deadline));
  return out;
}

/**
 * What a JetStream cluster answers while it is still forming (or electing a new leader): no
 * meta leader yet (10008, 503), peers not known yet (10005), a request that timed out.
 */
function isTransient(err: unknown): boolean {
  for (let e = err as { code?: unknown; status?: unknown; name?: unknown; message?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 3; e = e.cause as typeof e, depth++) {
    if (e.code === 10008 || e.code === 10005 || e.status === 503 || e.code === '503') return true;
    if (e.name === 'TimeoutError' || e.name === 'NoRespondersError') return true;
    if (typeof e.message === 'string' && /temporarily unavailable|no suitable peers|timeout/i.test(e.message)) return true;
  }
  return false;
}

async function untilReady<T>(fn: () => Promise<T>, deadline: number): Promise<T> {
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (!isTransient(err) || Date.now() >= deadline) throw err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

/**
 * A lease's consumer (ack wait = its TTL, one token out at a time, redelivered forever) and its
 * token, published only when the subject holds none (expected last subject sequence 0), so
 * provisioning twice never makes a second token.
 */
export async function ensureLease(nc: NatsConnection, jsm: JetStreamManager, stream: StreamSpec, lease: LeaseSpec): Promise<ProvisionReport> {
  const prefix = stream.subjects[0]!.slice(0, -'.lease.>'.length);
  const subject = `${prefix}.lease.${assertToken('lease name', lease.name)}`;
  const consumer = await ensureConsumer(jsm, {
    stream: stream.name,
    durable: leaseDurable(lease.name),
    filterSubject: subject,
    maxDeliver: -1,
    ackWaitMs: lease.ttlMs,
    maxAckPending: 1,
    description: `the token of lease ${lease.name}: whoever holds it renews it with +WPI and never acks it`,
  });
  let action = consumer.action;
  const changes = [...(consumer.changes ?? [])];
  try {
    await jetstream(nc).publish(subject, lease.name, { expect: { lastSubjectSequence: 0 } });
    action = action === 'unchanged' ? 'updated' : action;
    changes.push('token published');
  } catch (err) {
    // a token is there already: the wrong-last-sequence answer is the expected one
    if (!/wrong last sequence/i.test((err as Error).message) && (err as { code?: number }).code !== 10071) throw err;
  }
  return { resource: `lease ${lease.name}`, action, ...(changes.length ? { changes } : {}) };
}
