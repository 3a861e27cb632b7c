/**
 * No secret in diagnostics: observability's `scrub` (this process's KEEL_SECRET_* values and card
 * numbers), the logger (redacted keys + every written line scrubbed), the span exporter wrapper
 * (attributes, exception events, status) and dead letters (reason and error text; the body kept).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Writable } from 'node:stream';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { createLogger, MIN_SECRET_LENGTH, refreshSecrets, scrub, scrubbingExporter, scrubJsonLine, scrubValue, SpanStatusCode } from '../../observability/index.ts';
import { scrubDeadLetter } from '../../bus/index.ts';

const SECRET = 'sm7p-"pass"-9z';
beforeAll(() => {
  process.env.KEEL_SECRET_SCRUB_TEST = SECRET;
  refreshSecrets();
});
afterAll(() => {
  delete process.env.KEEL_SECRET_SCRUB_TEST;
  refreshSecrets();
});

describe('scrub', () => {
  it('replaces this process\'s secret values and card numbers, and nothing else', () => {
    expect(scrub(`auth with ${SECRET} failed; card 4111-1111-1111-1111; order 2024-000123 at 1733212345678`)).toBe('auth with [SECRET] failed; card [CARD]; order 2024-000123 at 1733212345678');
    expect(scrub('nothing here')).toBe('nothing here');
  });

  it('scrubValue copies what it changes (errors keep their class) and returns the value itself otherwise', () => {
    class SmtpError extends Error {
      code = 'EAUTH';
    }
    const err = new SmtpError(`login ${SECRET} refused`);
    const s = scrubValue({ err, n: 1, list: ['4111 1111 1111 1111'] });
    expect(s.err).toBeInstanceOf(SmtpError);
    expect(s.err.message).toBe('login [SECRET] refused');
    expect(s.err.stack).not.toContain(SECRET);
    expect(s.err.code).toBe('EAUTH');
    expect(s.list).toEqual(['[CARD]']);
    expect(err.message).toContain(SECRET); // the original is untouched
    const clean = { a: 'b', c: [1, 2] };
    expect(scrubValue(clean)).toBe(clean);
  });
});

describe('logger', () => {
  it('censors secret-bearing keys and scrubs every line: message, fields, error message and stack', () => {
    let out = '';
    const dest = new Writable({ write: (chunk: Buffer, _e, cb) => ((out += chunk.toString()), cb()) });
    const log = createLogger('scrub-test', { destination: dest });
    log.info({ password: 'p4ss', user: { apiKey: 'k3y' }, req: { headers: { authorization: 'Bearer t0k', cookie: 'c00k' } }, config: { smtp: { auth: { pass: 'x1y2' } } } }, 'connecting');
    log.error({ err: new Error(`SMTP login with ${SECRET} failed`), card: '5500 0000 0000 0004' }, `retrying with ${SECRET}`);
    const lines = out.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines[0]).toMatchObject({ password: '[REDACTED]', user: { apiKey: '[REDACTED]' }, req: { headers: { authorization: '[REDACTED]', cookie: '[REDACTED]' } }, config: { smtp: { auth: { pass: '[REDACTED]' } } }, msg: 'connecting' });
    expect(lines[1]).toMatchObject({ msg: 'retrying with [SECRET]', card: '[CARD]', err: { message: 'SMTP login with [SECRET] failed' } });
    expect(out).not.toContain('sm7p');
    expect(out).not.toMatch(/5500|p4ss|k3y|t0k|c00k|x1y2/);
  });
});

describe('logger: every line stays JSON', () => {
  const YEAR = String(new Date().getUTCFullYear());
  const TOKEN = `keel_op_0123456789ab_${'Ab9-_'.repeat(8)}xyz`; // engine/auth.ts's shape: 12 hex, 43 base64url
  beforeAll(() => {
    process.env.KEEL_SECRET_PIN = YEAR; // too short to scrub by value
    process.env.KEEL_SECRET_NUMERIC = '20242024';
    refreshSecrets();
  });
  afterAll(() => {
    delete process.env.KEEL_SECRET_PIN;
    delete process.env.KEEL_SECRET_NUMERIC;
    refreshSecrets();
  });
  const capture = () => {
    let out = '';
    const dest = new Writable({ write: (chunk: Buffer, _e, cb) => ((out += chunk.toString()), cb()) });
    return { log: createLogger('scrub-json', { destination: dest }), lines: () => out.trim().split('\n') };
  };

  it('a numeric secret and a card-like number in number positions become quoted marks; a longer digit run is left alone', () => {
    const { log, lines } = capture();
    log.info({ retry_after_ms: 20242024, orderNo: 4111111111111111, neg: -4111111111111111, ref: 1202420245, year: Number(YEAR), note: `pin ${YEAR}, n=20242024, line\n4111111111111111` }, 'retry');
    const [line] = lines();
    const rec = JSON.parse(line!) as Record<string, unknown>; // throws on an invalid line
    expect(rec).toMatchObject({ retry_after_ms: '[SECRET]', orderNo: '[CARD]', neg: '[CARD]', ref: 1202420245, year: Number(YEAR), note: `pin ${YEAR}, n=[SECRET], line\n[CARD]`, msg: 'retry' });
    // the short secret does not wipe the year out of the timestamp
    expect(rec.time).toMatch(new RegExp(`^${YEAR}-\\d\\d-\\d\\dT`));
    expect(line).not.toMatch(/:20242024[,}]|4111111111111111/);
  });

  it('operator tokens are scrubbed by their pattern, wherever they are, without any variable holding them', () => {
    const { log, lines } = capture();
    log.warn({ header: `Bearer ${TOKEN}`, [TOKEN]: 1 }, `login with ${TOKEN} refused`);
    const rec = JSON.parse(lines()[0]!) as Record<string, unknown>;
    expect(rec).toMatchObject({ header: 'Bearer [SECRET]', '[SECRET]': 1, msg: 'login with [SECRET] refused' });
    expect(scrub(`x ${TOKEN}.`)).toBe('x [SECRET].');
    expect(scrub('keel_op_notatoken')).toBe('keel_op_notatoken');
  });

  it('secrets shorter than MIN_SECRET_LENGTH are not scrubbed by value; a secret inside a longer digit run is not a match', () => {
    expect(MIN_SECRET_LENGTH).toBe(8);
    expect(scrub(`in ${YEAR}`)).toBe(`in ${YEAR}`);
    expect(scrub('a 20242024 b 1202420245 c x20242024y')).toBe('a [SECRET] b 1202420245 c x[SECRET]y');
    // a quote-bearing secret inside a JSON string stays a valid string
    const line = JSON.stringify({ msg: `auth ${SECRET}`, n: 20242024.5 });
    expect(JSON.parse(scrubJsonLine(line))).toEqual({ msg: 'auth [SECRET]', n: '[SECRET]' });
    expect(scrubJsonLine('not json 20242024')).toBe('not json [SECRET]');
  });
});

describe('span exporter', () => {
  it('exports scrubbed copies: attributes, events, exception message and stack, status message', async () => {
    const mem = new InMemorySpanExporter();
    const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(scrubbingExporter(mem))] });
    const span = provider.getTracer('t').startSpan('task leaky.login', { attributes: { 'leaky.login': `support:${SECRET}`, list: ['ok', '4111 1111 1111 1111'], n: 3 } });
    span.addEvent('attempt', { password: SECRET });
    span.recordException(new Error(`refused ${SECRET}`));
    span.setStatus({ code: SpanStatusCode.ERROR, message: `refused ${SECRET}` });
    span.end();
    await provider.forceFlush();
    const [s] = mem.getFinishedSpans();
    expect(s!.attributes).toEqual({ 'leaky.login': 'support:[SECRET]', list: ['ok', '[CARD]'], n: 3 });
    expect(s!.events.map((e) => e.attributes)).toEqual([{ password: '[SECRET]' }, expect.objectContaining({ 'exception.message': 'refused [SECRET]' })]);
    expect(s!.status.message).toBe('refused [SECRET]');
    expect(s!.spanContext().traceId).toBe(span.spanContext().traceId);
    expect(JSON.stringify({ a: s!.attributes, e: s!.events, st: s!.status })).not.toContain('sm7p');
    await provider.shutdown();
  });
});

describe('dead letters', () => {
  it('reason and error text are scrubbed; the body (the message itself) is kept', () => {
    const letter = { reason: 'permanent_error', error: { code: 'X', name: 'PermanentError', message: `login ${SECRET} refused, card 4111 1111 1111 1111` }, body: '{"card":"4111 1111 1111 1111"}' };
    const s = scrubDeadLetter(letter);
    expect(s.error.message).toBe('login [SECRET] refused, card [CARD]');
    expect(s.body).toBe(letter.body);
    const clean = { reason: 'invalid', error: { code: 'X', name: 'E', message: 'bad json' } };
    expect(scrubDeadLetter(clean)).toBe(clean);
  });
});
