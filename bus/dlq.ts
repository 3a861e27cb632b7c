/**
 * Reading and re-driving dead letters: the `<P>_DLQ` stream holds one JSON {@link DeadLetter} per
 * message a consumer gave up on (`<p>.dlq.<capability>`), with the reason, the error, the
 * original subject, headers and body. `keel dlq list|show|redrive` is built on these.
 */
import { jetstreamManager, type StoredMsg } from '@nats-io/jetstream';
import { headers as natsHeaders } from '@nats-io/nats-core';
import type { Bus } from './bus.ts';
import type { DeadLetter } from './consumer.ts';
import { H } from './envelope.ts';
import { scrub } from '../observability/index.ts';
import { BusError } from './errors.ts';

/** A dead letter as stored: the letter, plus where it is in the DLQ stream. */
export interface StoredDeadLetter extends DeadLetter {
  /** sequence in the DLQ stream (the letter's id for `show` and `redrive`) */
  seq: number;
  /** `<p>.dlq.<capability>` */
  dlqSubject: string;
  /** the capability whose task it was (from the DLQ subject) */
  capability: string;
  /** when the DLQ stream stored it */
  storedAt: string;
}

/** Headers a redriven message carries besides the original's. */
export const REDRIVE_HEADERS = { of: 'Keel-Redrive-Of', at: 'Keel-Redriven-At' } as const;

function toLetter(m: StoredMsg, dlqPrefix: string): StoredDeadLetter | undefined {
  try {
    const letter = m.json<DeadLetter>();
    if (typeof letter !== 'object' || letter === null || typeof letter.reason !== 'string') return undefined;
    return { ...scrubDeadLetter(letter), seq: m.seq, dlqSubject: m.subject, capability: m.subject.slice(dlqPrefix.length), storedAt: m.time.toISOString() };
  } catch {
    return undefined;
  }
}

/**
 * A dead letter whose reason and error text are scrubbed (observability's `scrub`: secrets and card
 * numbers). The consumer scrubs them before it stores a letter; reading scrubs again, for letters
 * stored before. The body is NOT scrubbed: it is the message itself (the data, needed for a
 * re-drive), and the DLQ stream is part of the system's own storage.
 */
export function scrubDeadLetter<L extends Pick<DeadLetter, 'reason' | 'error'>>(letter: L): L {
  const reason = scrub(letter.reason);
  const message = typeof letter.error?.message === 'string' ? scrub(letter.error.message) : letter.error?.message;
  if (reason === letter.reason && message === letter.error?.message) return letter;
  return { ...letter, reason, ...(letter.error ? { error: { ...letter.error, message } } : {}) };
}

/**
 * Dead letters, newest first: every capability's, or one capability's. Reads at most `scan`
 * stream messages (default 10,000) to find `limit` letters (default 50).
 */
export async function listDeadLetters(bus: Bus, o: { capability?: string; limit?: number; scan?: number } = {}): Promise<{ letters: StoredDeadLetter[]; total: number }> {
  const jsm = await jetstreamManager(bus.nc);
  const stream = bus.subjects.streams.dlq;
  const prefix = `${bus.subjects.prefix}.dlq.`;
  const info = await jsm.streams.info(stream);
  const want = o.capability ? bus.subjects.dlq(o.capability) : undefined;
  const total = want ? Number((await jsm.streams.info(stream, { subjects_filter: want })).state.subjects?.[want] ?? 0) : info.state.messages;
  const limit = o.limit ?? 50;
  const letters: StoredDeadLetter[] = [];
  const first = info.state.first_seq;
  const stop = Math.max(first, info.state.last_seq - (o.scan ?? 10_000) + 1);
  for (let seq = info.state.last_seq; seq >= stop && letters.length < limit && info.state.messages > 0; seq--) {
    const m = await jsm.streams.getMessage(stream, { seq });
    if (!m || (want && m.subject !== want)) continue;
    const l = toLetter(m, prefix);
    if (l) letters.push(l);
  }
  return { letters, total };
}

/** One dead letter by its DLQ sequence, or null. */
export async function getDeadLetter(bus: Bus, seq: number): Promise<StoredDeadLetter | null> {
  const jsm = await jetstreamManager(bus.nc);
  const m = await jsm.streams.getMessage(bus.subjects.streams.dlq, { seq });
  return m ? (toLetter(m, `${bus.subjects.prefix}.dlq.`) ?? null) : null;
}

/**
 * Re-drives a dead letter: publishes the original message again (same subject, body and
 * headers) as a new delivery. Its `Nats-Msg-Id` is new (`<original>.redrive-<seq>-<time>`: each
 * re-drive is a delivery of its own) and its idempotency key is the original's, so a task that
 * did complete is not run twice. `Keel-Redrive-Of` names the letter.
 */
export async function redriveDeadLetter(bus: Bus, seq: number): Promise<{ letter: StoredDeadLetter; messageId: string; subject: string; streamSeq: number; duplicate: boolean }> {
  const letter = await getDeadLetter(bus, seq);
  if (!letter) throw new BusError('BUS_DEAD_LETTER_NOT_FOUND', `no dead letter with sequence ${seq} in ${bus.subjects.streams.dlq}`);
  const original = letter.headers[H.msgId] ?? `dlq-${seq}`;
  const messageId = `${original}.redrive-${seq}-${Date.now().toString(36)}`;
  const h = natsHeaders();
  for (const [k, v] of Object.entries(letter.headers)) if (k !== H.msgId && k !== H.publishedAt) h.set(k, v);
  h.set(H.msgId, messageId);
  if (!letter.headers[H.idempotencyKey]) h.set(H.idempotencyKey, original);
  h.set(H.publishedAt, String(Date.now()));
  h.set(REDRIVE_HEADERS.of, `${bus.subjects.streams.dlq}:${seq}`);
  h.set(REDRIVE_HEADERS.at, new Date().toISOString());
  const body = letter.bodyEncoding === 'base64' ? Buffer.from(letter.body, 'base64') : Buffer.from(letter.body, 'utf8');
  try {
    const ack = await bus.js.publish(letter.subject, body, { headers: h });
    return { letter, messageId, subject: letter.subject, streamSeq: ack.seq, duplicate: ack.duplicate };
  } catch (err) {
    throw new BusError('BUS_PUBLISH_FAILED', `re-drive of dead letter ${seq} to ${letter.subject} failed: ${(err as Error).message}`, { cause: err, retryable: true });
  }
}
