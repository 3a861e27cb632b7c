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
 */
const TOKEN = /^[A-Za-z0-9_-]+$/;
/** capability names may be dotted (`email.send`): each token must be valid */
const DOTTED = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;

export function assertToken(kind: string, value: string): string {
  if (!TOKEN.test(value)) throw new Error(`invalid ${kind} '${value}': use letters, digits, '_' or '-'`);
  return value;
}
export function assertDotted(kind: string, value: string): string {
  if (!DOTTED.test(value)) throw new Error(`invalid ${kind} '${value}': dot-separated tokens of letters, digits, '_' or '-'`);
  return value;
}

export interface Subjects {
  prefix: string;
  task(capability: string): string;
  evt(entityType: string, entityId: string): string;
  in(channel: string): string;
  out(channel: string): string;
  dlq(capability: string): string;
  rpc(service: string): string;
  streams: { tasks: string; evt: string; in: string; out: string; dlq: string };
  /** KV bucket of capability announcements */
  registryBucket: string;
}

export function subjects(prefix = 'keel'): Subjects {
  assertToken('subject prefix', prefix);
  const P = prefix.toUpperCase().replace(/-/g, '_');
  return {
    prefix,
    task: (c) => `${prefix}.task.${assertDotted('capability', c)}`,
    evt: (t, id) => `${prefix}.evt.${assertToken('entity type', t)}.${assertToken('entity id', id)}`,
    in: (ch) => `${prefix}.in.${assertDotted('channel', ch)}`,
    out: (ch) => `${prefix}.out.${assertDotted('channel', ch)}`,
    dlq: (c) => `${prefix}.dlq.${assertDotted('capability', c)}`,
    rpc: (s) => `${prefix}.rpc.${assertDotted('service', s)}`,
    streams: { tasks: `${P}_TASKS`, evt: `${P}_EVT`, in: `${P}_IN`, out: `${P}_OUT`, dlq: `${P}_DLQ` },
    registryBucket: `${P}_agents`,
  };
}

/** Durable consumer name for a capability (dots are not allowed in consumer names). */
export function durableFor(capability: string): string {
  return assertDotted('capability', capability).replace(/\./g, '_');
}
