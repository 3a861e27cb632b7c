/**
 * Keel's subject space (DESIGN.md §3), under a configurable prefix (one per tenant):
 *
 * | subject                        | stream       | what                                   |
 * | ------------------------------ | ------------ | -------------------------------------- |
 * | `<p>.task.<capability>`        | `<P>_TASKS`  | work for a capability (competing pull) |
 * | `<p>.evt.<entityType>.<id>`    | `<P>_EVT`    | canonical change events (outbox)       |
 * | `<p>.in.<channel>`             | `<P>_IN`     | raw inbound messages                   |
 * | `<p>.out.<channel>`            | `<P>_OUT`    | outbound side effects, gated by policy |
 * | `<p>.dlq.<capability>`         | `<P>_DLQ`    | dead letters with reason and original  |
 * | `<p>.rpc.<service>`            | (core NATS)  | request/reply queries                  |
 * | `<p>.run.finished.<status>`    | (core NATS)  | best-effort notice when a run ends     |
 * | `<p>.lease.<name>`             | `<P>_LEASES` | a lease's token (see lease.ts)         |
 *
 * Wildcards: `evtAll(entityType)` is `<p>.evt.<entityType>.*` (every entity of a type),
 * `runFinishedAll` is `<p>.run.finished.*` (every run end, whatever its status).
 */
import { BusError } from './errors.ts';

const TOKEN = /^[A-Za-z0-9_-]+$/;
/** capability names may be dotted (`email.send`): each token must be valid */
const DOTTED = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;

export function assertToken(kind: string, value: string): string {
  if (!TOKEN.test(value)) throw new BusError('BUS_INVALID_SUBJECT', `invalid ${kind} '${value}': use letters, digits, '_' or '-'`);
  return value;
}
export function assertDotted(kind: string, value: string): string {
  if (!DOTTED.test(value)) throw new BusError('BUS_INVALID_SUBJECT', `invalid ${kind} '${value}': dot-separated tokens of letters, digits, '_' or '-'`);
  return value;
}

export interface Subjects {
  prefix: string;
  task(capability: string): string;
  evt(entityType: string, entityId: string): string;
  /** `<p>.evt.<entityType>.*`: the events of every entity of a type */
  evtAll(entityType: string): string;
  in(channel: string): string;
  out(channel: string): string;
  dlq(capability: string): string;
  rpc(service: string): string;
  /** `<p>.run.finished.<status>` (status: completed, failed, cancelled); the subject is a contract */
  runFinished(status: string): string;
  /** `<p>.run.finished.*` */
  runFinishedAll: string;
  streams: { tasks: string; evt: string; in: string; out: string; dlq: string; leases: string };
  /** KV bucket of capability announcements */
  registryBucket: string;
  /** `<p>.lease.<name>`: the token of a lease (one holder at a time, e.g. the workflow timer sweeper; see lease.ts) */
  lease(name: string): string;
}

export function subjects(prefix = 'keel'): Subjects {
  assertToken('subject prefix', prefix);
  const P = prefix.toUpperCase().replace(/-/g, '_');
  return {
    prefix,
    task: (c) => `${prefix}.task.${assertDotted('capability', c)}`,
    evt: (t, id) => `${prefix}.evt.${assertToken('entity type', t)}.${assertToken('entity id', id)}`,
    evtAll: (t) => `${prefix}.evt.${assertToken('entity type', t)}.*`,
    in: (ch) => `${prefix}.in.${assertDotted('channel', ch)}`,
    out: (ch) => `${prefix}.out.${assertDotted('channel', ch)}`,
    dlq: (c) => `${prefix}.dlq.${assertDotted('capability', c)}`,
    rpc: (s) => `${prefix}.rpc.${assertDotted('service', s)}`,
    runFinished: (status) => `${prefix}.run.finished.${assertToken('run status', status)}`,
    runFinishedAll: `${prefix}.run.finished.*`,
    streams: { tasks: `${P}_TASKS`, evt: `${P}_EVT`, in: `${P}_IN`, out: `${P}_OUT`, dlq: `${P}_DLQ`, leases: `${P}_LEASES` },
    registryBucket: `${P}_agents`,
    lease: (name) => `${prefix}.lease.${assertToken('lease name', name)}`,
  };
}

/** Durable consumer through which a lease's token is handed out. */
export function leaseDurable(name: string): string {
  return `lease-${assertToken('lease name', name)}`;
}

/** Durable consumer name for a capability (dots are not allowed in consumer names). */
export function durableFor(capability: string): string {
  return assertDotted('capability', capability).replace(/\./g, '_');
}
