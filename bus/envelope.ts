import { randomUUID } from 'node:crypto';
import type { z } from 'zod';
import { headers as natsHeaders, type MsgHdrs } from '@nats-io/nats-core';
import { BusError, InvalidMessageError } from './errors.ts';

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
  if (!/^[A-Za-z0-9_.-]+$/.test(type)) throw new BusError('BUS_INVALID_MESSAGE_TYPE', `invalid message type '${type}'`);
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

const TYPE_RE = /^[A-Za-z0-9_.-]+$/;
const DECIMAL_RE = /^\d+(\.\d+)?$/;
const DIGITS_RE = /^\d+$/;
const TRACEPARENT_RE = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;

/** Checks the envelope headers (hand-written: this runs for every message). */
function checkHeaders(h: Record<string, string>): string[] {
  const problems: string[] = [];
  const id = h[H.msgId];
  if (id === undefined) problems.push(`missing header ${H.msgId}`);
  else if (id.length === 0 || id.length > 512) problems.push(`malformed ${H.msgId}`);
  const type = h[H.type];
  if (type === undefined) problems.push(`missing header ${H.type}`);
  else if (!TYPE_RE.test(type)) problems.push(`malformed ${H.type}`);
  for (const k of [H.idempotencyKey, H.correlationId, H.causationId, H.customer]) {
    const v = h[k];
    if (v !== undefined && (v.length === 0 || v.length > 512)) problems.push(`malformed ${k}`);
  }
  if (h[H.budget] !== undefined && !DECIMAL_RE.test(h[H.budget]!)) problems.push(`malformed ${H.budget}`);
  if (h[H.publishedAt] !== undefined && !DIGITS_RE.test(h[H.publishedAt]!)) problems.push(`malformed ${H.publishedAt}`);
  if (h[H.traceparent] !== undefined && !TRACEPARENT_RE.test(h[H.traceparent]!)) problems.push('malformed traceparent');
  if (h[H.tracestate] !== undefined && h[H.tracestate]!.length > 512) problems.push('malformed tracestate');
  return problems;
}

export function buildHeaders(type: string, meta: EnvelopeMeta, trace: Record<string, string>): { hdrs: MsgHdrs; id: string } {
  const id = meta.id ?? randomUUID();
  const h = natsHeaders();
  h.set(H.msgId, id);
  h.set(H.type, type);
  // absent means "the message id" (saves a header on the hot path)
  if (meta.idempotencyKey && meta.idempotencyKey !== id) h.set(H.idempotencyKey, meta.idempotencyKey);
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
  const problems = checkHeaders(raw.headers);
  if (problems.length) throw new InvalidMessageError('missing_headers', problems);
  const hdr = raw.headers;
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
