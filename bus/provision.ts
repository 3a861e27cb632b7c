import { jetstream, jetstreamManager, RetentionPolicy, StorageType, AckPolicy, DeliverPolicy, DiscardPolicy, type StreamConfig, type ConsumerConfig, type JetStreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { nanos, type NatsConnection } from '@nats-io/nats-core';
import { ProvisionConflictError } from './errors.ts';
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
}

export interface KvSpec {
  bucket: string;
  /** an entry not rewritten within ttl disappears */
  ttlMs: number;
  /** how long a watcher can see the delete marker an expiry leaves */
  markerTtlMs: number;
  replicas: number;
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

export function keelTopology(opts: { prefix?: string; replicas?: number; registryTtlMs?: number; leaseTtlMs?: number } = {}): Topology {
  const s = subjectSpace(opts.prefix ?? 'keel');
  const p = s.prefix;
  const replicas = opts.replicas ?? 1;
  const mb = 1024 * 1024;
  return {
    streams: [
      { name: s.streams.tasks, subjects: [`${p}.task.>`], retention: 'workqueue', maxAgeMs: 14 * DAY, duplicateWindowMs: 10 * 60_000, maxMsgSize: mb, replicas, description: 'work for capabilities; one durable pull consumer per capability' },
      { name: s.streams.evt, subjects: [`${p}.evt.>`], retention: 'limits', maxAgeMs: 30 * DAY, duplicateWindowMs: 60 * 60_000, maxMsgSize: mb, replicas, description: 'canonical change events from the state outbox' },
      { name: s.streams.in, subjects: [`${p}.in.>`], retention: 'limits', maxAgeMs: 30 * DAY, duplicateWindowMs: 10 * 60_000, maxMsgSize: 8 * mb - 1024, replicas, description: 'raw inbound channel messages' },
      { name: s.streams.out, subjects: [`${p}.out.>`], retention: 'limits', maxAgeMs: 30 * DAY, duplicateWindowMs: 60 * 60_000, maxMsgSize: mb, replicas, description: 'outbound side effects, gated by policy' },
      { name: s.streams.dlq, subjects: [`${p}.dlq.>`], retention: 'limits', maxAgeMs: 90 * DAY, duplicateWindowMs: 10 * 60_000, maxMsgSize: 8 * mb, replicas, description: 'dead letters: reason, error, original headers and body' },
      { name: s.streams.leases, subjects: [`${p}.lease.>`], retention: 'limits', maxAgeMs: 0, duplicateWindowMs: 60_000, maxMsgSize: 1024, replicas, maxMsgsPerSubject: 1, description: 'one token per lease, handed out by its consumer (see lease.ts)' },
    ],
    kv: [{ bucket: s.registryBucket, ttlMs: opts.registryTtlMs ?? 15_000, markerTtlMs: 60_000, replicas }],
    leases: [{ name: WORKFLOW_TIMER_LEASE, ttlMs: opts.leaseTtlMs ?? LEASE_TTL_MS }],
  };
}

/**
 * The event stream (`<P>_EVT` on `<p>.evt.>`) exactly as {@link keelTopology} declares it: the
 * outbox's exactly-once publishing relies on its 1 h duplicate window.
 */
export function eventStreamSpec(opts: { prefix?: string; replicas?: number } = {}): StreamSpec {
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
    discard: DiscardPolicy.Old,
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
        throw err;
      })).config;
    }
  }
  const changes = diff(want, have as unknown as Record<string, unknown>);
  if (changes.length === 0) return { resource: `stream ${spec.name}`, action: 'unchanged' };
  const fixed = changes.filter((c) => IMMUTABLE_STREAM.has(c.split(':')[0]!));
  if (fixed.length) throw new ProvisionConflictError(`stream ${spec.name}`, fixed);
  await jsm.streams.update(spec.name, want);
  return { resource: `stream ${spec.name}`, action: 'updated', changes };
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
  if (!exists) {
    await kvm.create(spec.bucket, { ttl: spec.ttlMs, history: 1, replicas: spec.replicas, markerTTL: spec.markerTtlMs });
    return { resource: `kv ${spec.bucket}`, action: 'created' };
  }
  const status = await (await kvm.open(spec.bucket)).status();
  if (status.ttl !== spec.ttlMs) {
    const info = await jsm.streams.info(streamName);
    await jsm.streams.update(streamName, { ...info.config, max_age: nanos(spec.ttlMs) });
    return { resource: `kv ${spec.bucket}`, action: 'updated', changes: [`ttl: ${status.ttl} -> ${spec.ttlMs}`] };
  }
  return { resource: `kv ${spec.bucket}`, action: 'unchanged' };
}

/**
 * Makes the server hold exactly the declared streams and buckets: creates what is missing,
 * updates what can change in place, and refuses (ProvisionConflictError) a change JetStream
 * cannot apply. Running it twice changes nothing.
 */
export async function provisionBus(nc: NatsConnection, topology: Topology): Promise<ProvisionReport[]> {
  const jsm = await jetstreamManager(nc);
  const out: ProvisionReport[] = [];
  for (const s of topology.streams) out.push(await ensureStream(jsm, s));
  for (const k of topology.kv) out.push(await ensureKv(nc, k));
  const leaseStream = topology.streams.find((st) => st.subjects.some((x) => x.endsWith('.lease.>')));
  for (const l of topology.leases ?? []) if (leaseStream) out.push(await ensureLease(nc, jsm, leaseStream, l));
  return out;
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
