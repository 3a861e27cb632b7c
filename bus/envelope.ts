import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { headers as natsHeaders, type MsgHdrs } from '@nats-io/nats-core';
import { InvalidMessageError } from './errors.ts';

/**
 * Header names every Keel message carries (DESIGN.md §3). `Nats-Msg-Id` is the server-side
 * dedupe key; `traceparent`/`tracestate` carry W3C trace context.
 */
export const H = {
  msgId: 'Nats-Msg-Id',
  traceparent: 'traceparent',
  tracestate: 'tracestate',
  type: 'Keel-Type',
  idempotencyKey: 'Keel-Idempotency-Key',
  correlationId: 'Keel-Correlation-Id',
  causationId: 'Keel-Causation-Id',
  customer: 'Keel-Customer',
  budget: 'Keel-Budget-Usd',
  publishedAt: 'Keel-Published-At',
} as const;

/** A message type: a name and the zod schema of its body. */
export interface MessageType<T = unknown> {
  type: string;
  schema: z.ZodType<T>;
}

export function defineMessage<S extends z.ZodType>(type: string, schema: S): MessageType<z.infer<S>> {
  if (!/^[A-Za-z0-9_.-]+$/.test(type)) throw new Error(`invalid message type '${type}'`);
  return { type, schema: schema as z.ZodType<z.infer<S>> };
}

/** What a publisher says about a message besides its body. */
export interface EnvelopeMeta {
  /** `Nats-Msg-Id`; default a random UUID. Publish the same id twice and it is stored once. */
  id?: string;
  idempotencyKey?: string;
  correlationId?: string;
  causationId?: string;
  customer?: string;
  /** USD this message's work may still spend */
  budgetUsd?: number;
  /** extra headers (e.g. `Keel-Run-Id`); names must not clash with the ones above */
  headers?: Record<string, string>;
}

/** A validated message as a handler sees it. */
export interface Envelope<T = unknown> {
  id: string;
  type: string;
  subject: string;
  data: T;
  idempotencyKey: string;
  correlationId: string | undefined;
  causationId: string | undefined;
  customer: string | undefined;
  budgetUsd: number | undefined;
  publishedAt: number | undefined;
  traceparent: string | undefined;
  tracestate: string | undefined;
  /** 1 on first delivery */
  deliveryCount: number;
  streamSeq: number | undefined;
  /** every header, as received */
  headers: Record<string, string>;
}

const optionalId = z.string().min(1).max(512).optional();
const headerSchema = z.object({
  [H.msgId]: z.string({ error: `missing header ${H.msgId}` }).min(1).max(512),
  [H.type]: z.string({ error: `missing header ${H.type}` }).regex(/^[A-Za-z0-9_.-]+$/, `malformed ${H.type}`),
  [H.idempotencyKey]: optionalId,
  [H.correlationId]: optionalId,
  [H.causationId]: optionalId,
  [H.customer]: optionalId,
  [H.budget]: z.string().regex(/^\d+(\.\d+)?$/, `malformed ${H.budget}`).optional(),
  [H.publishedAt]: z.string().regex(/^\d+$/, `malformed ${H.publishedAt}`).optional(),
  [H.traceparent]: z.string().regex(/^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/, 'malformed traceparent').optional(),
  [H.tracestate]: z.string().max(512).optional(),
});

export function buildHeaders(type: string, meta: EnvelopeMeta, trace: Record<string, string>): { hdrs: MsgHdrs; id: string } {
  const id = meta.id ?? randomUUID();
  const h = natsHeaders();
  h.set(H.msgId, id);
  h.set(H.type, type);
  h.set(H.idempotencyKey, meta.idempotencyKey ?? id);
  if (meta.correlationId) h.set(H.correlationId, meta.correlationId);
  if (meta.causationId) h.set(H.causationId, meta.causationId);
  if (meta.customer) h.set(H.customer, meta.customer);
  if (meta.budgetUsd !== undefined) h.set(H.budget, String(meta.budgetUsd));
  h.set(H.publishedAt, String(Date.now()));
  if (meta.headers) for (const [k, v] of Object.entries(meta.headers)) h.set(k, v);
  for (const [k, v] of Object.entries(trace)) h.set(k, v);
  return { hdrs: h, id };
}

export function headersToRecord(h: MsgHdrs | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!h) return out;
  for (const k of h.keys()) out[k] = h.get(k);
  return out;
}

const decoder = new TextDecoder('utf-8', { fatal: true });

/**
 * Turns raw bytes and headers into an {@link Envelope}, or throws {@link InvalidMessageError}
 * naming why: missing/malformed headers, oversized payload, unknown type, malformed JSON, or a
 * body that fails its schema.
 */
export function openEnvelope<T>(
  raw: { subject: string; data: Uint8Array; headers: Record<string, string>; deliveryCount: number; streamSeq?: number },
  accepts: ReadonlyMap<string, MessageType<T>>,
  maxPayloadBytes: number,
): Envelope<T> {
  if (raw.data.length > maxPayloadBytes) throw new InvalidMessageError('payload_too_large', `${raw.data.length} bytes > limit ${maxPayloadBytes}`);
  const hp = headerSchema.safeParse(raw.headers);
  if (!hp.success) throw new InvalidMessageError('missing_headers', hp.error.issues.map((i) => i.message));
  const hdr = hp.data;
  const type = hdr[H.type]!;
  const mt = accepts.get(type);
  if (!mt) throw new InvalidMessageError('unknown_type', `type '${type}' is not one of ${[...accepts.keys()].join(', ')}`);
  let json: unknown;
  try {
    json = JSON.parse(decoder.decode(raw.data));
  } catch (err) {
    throw new InvalidMessageError('malformed_json', (err as Error).message);
  }
  const body = mt.schema.safeParse(json);
  if (!body.success) {
    throw new InvalidMessageError(
      'schema_mismatch',
      body.error.issues.map((i) => `${i.path.length ? i.path.join('.') : '(body)'}: ${i.message}`),
    );
  }
  return {
    id: hdr[H.msgId]!,
    type,
    subject: raw.subject,
    data: body.data,
    idempotencyKey: hdr[H.idempotencyKey] ?? hdr[H.msgId]!,
    correlationId: hdr[H.correlationId],
    causationId: hdr[H.causationId],
    customer: hdr[H.customer],
    budgetUsd: hdr[H.budget] === undefined ? undefined : Number(hdr[H.budget]),
    publishedAt: hdr[H.publishedAt] === undefined ? undefined : Number(hdr[H.publishedAt]),
    traceparent: hdr[H.traceparent],
    tracestate: hdr[H.tracestate],
    deliveryCount: raw.deliveryCount,
    streamSeq: raw.streamSeq,
    headers: raw.headers,
  };
}
