/**
 * No secret in diagnostics: observability's `scrub` (this process's KEEL_SECRET_* values and card
 * numbers), the logger (redacted keys + every written line scrubbed), the span exporter wrapper
 * (attributes, exception events, status) and dead letters (reason and error text; the body kept).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Writable } from 'node:stream';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { createLogger, refreshSecrets, scrub, scrubbingExporter, scrubValue, SpanStatusCode } from '../../observability/index.ts';
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
