/**
 * Log formats: readable lines for people (KEEL_LOG_FORMAT=pretty, or `auto` on a terminal), JSON
 * lines otherwise; scrubbing holds in both.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { PassThrough } from 'node:stream';
import { createLogger, envLogFormat, lazyChild, prettyLine, refreshSecrets, usePretty } from '../../observability/index.ts';

const SECRET = 'dash-secret-value-4242';
const ESC = String.fromCharCode(27);
const CARD = '4111 1111 1111 1111';

function sink(tty = false): { stream: PassThrough & { isTTY?: boolean }; lines: () => string[] } {
  const stream = new PassThrough() as PassThrough & { isTTY?: boolean };
  if (tty) stream.isTTY = true;
  let out = '';
  stream.on('data', (d: Buffer) => (out += d.toString()));
  return { stream, lines: () => out.split('\n').filter(Boolean) };
}
const settle = () => new Promise((r) => setTimeout(r, 20));

afterEach(() => {
  delete process.env.KEEL_SECRET_DASH;
  refreshSecrets();
});

describe('log formats', () => {
  it('pretty: one readable line per record (time, level, service, message, key fields), scrubbed and redacted', async () => {
    process.env.KEEL_SECRET_DASH = SECRET;
    refreshSecrets();
    const s = sink();
    const log = createLogger('keel', { format: 'pretty', destination: s.stream });
    log.info({ url: 'http://127.0.0.1:8080', agents: 7, token: 'abc', note: `has ${SECRET} and ${CARD}` }, 'keel engine ready');
    log.warn(`plain ${SECRET}`);
    await settle();
    const [ready, plain] = s.lines();
    expect(ready).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: keel +keel engine ready {2}url=http:\/\/127\.0\.0\.1:8080 agents=7 token=\[REDACTED\] note="has \[SECRET\] and \[CARD\]"$/);
    expect(plain).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] WARN: keel +plain \[SECRET\]$/);
    expect(s.lines().join('\n')).not.toContain(SECRET);
    // no colours when the destination is not a terminal
    expect(s.lines().join('\n')).not.toContain(`${ESC}[`);
  });

  it('pretty on a terminal is coloured; an error at error level shows its message and stack', async () => {
    const s = sink(true);
    const log = createLogger('intake', { format: 'pretty', destination: s.stream });
    log.error({ err: Object.assign(new Error('disk full'), { code: 'ENOSPC' }) }, 'write failed');
    await settle();
    const text = s.lines().join('\n');
    expect(text).toContain(`${ESC}[31mERROR${ESC}[39m`);
    expect(text).toContain('intake          write failed  err="disk full (ENOSPC)"');
    expect(s.lines()[1]).toMatch(/^ {4}at /);
  });

  it('json (and auto off a terminal): every line is JSON with the scrubbed values', async () => {
    process.env.KEEL_SECRET_DASH = SECRET;
    refreshSecrets();
    for (const format of ['json', 'auto'] as const) {
      const s = sink();
      createLogger('keel', { format, destination: s.stream }).info({ n: 1, note: SECRET }, `ready ${SECRET}`);
      await settle();
      const rec = JSON.parse(s.lines()[0]!) as Record<string, unknown>;
      expect(rec).toMatchObject({ level: 30, service: 'keel', n: 1, note: '[SECRET]', msg: 'ready [SECRET]' });
    }
  });

  it('auto picks pretty on a terminal; KEEL_LOG_FORMAT chooses, an unknown value means auto', async () => {
    const s = sink(true);
    createLogger('keel', { format: 'auto', destination: s.stream }).info('hello');
    await settle();
    expect(s.lines()[0]).toMatch(/INFO.*keel +hello/);
    expect(usePretty('auto', s.stream)).toBe(true);
    expect(usePretty('auto', new PassThrough())).toBe(false);
    expect(usePretty('pretty', new PassThrough())).toBe(true);
    expect(usePretty('json', s.stream)).toBe(false);
    expect(envLogFormat({ KEEL_LOG_FORMAT: 'json' })).toBe('json');
    expect(envLogFormat({ KEEL_LOG_FORMAT: 'pretty' })).toBe('pretty');
    expect(envLogFormat({ KEEL_LOG_FORMAT: 'loud' })).toBe('auto');
    expect(envLogFormat({})).toBe('auto');
  });

  it('prettyLine leaves out what a person does not read (pid, hostname, span id) and keeps the trace id', () => {
    const line = prettyLine({ level: 30, time: 1, pid: 9, hostname: 'h', name: 'keel', service: 'triage', msg: 'task completed', span_id: 'abc', trace_id: 'f00d', computeMs: 12.5, agent: 'triage' });
    expect(line).toBe('triage          task completed  trace_id=f00d computeMs=12.5 agent=triage');
  });
});

describe('lazyChild', () => {
  it('makes the child on the first enabled call only; its lines carry the bindings, redacted', async () => {
    const s = sink();
    const log = createLogger('keel', { format: 'json', level: 'warn', destination: s.stream });
    let made = 0;
    const child = log.child;
    log.child = function (this: typeof log, ...a: Parameters<typeof log.child>) {
      made++;
      return child.apply(this, a);
    } as typeof log.child;
    const task = lazyChild(log, { task: 't-1', token: 'abc' });
    task.info('not written');
    task.debug({ x: 1 }, 'not written');
    expect(made).toBe(0);
    expect(task.isLevelEnabled('info')).toBe(false);
    task.warn({ n: 2 }, 'written');
    task.error('again');
    expect(made).toBe(1); // (the grandchild below is made from it: a second child)
    task.child({ sub: 'y' }).error('from a grandchild');
    await settle();
    const [warn, again, err] = s.lines().map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(warn).toMatchObject({ task: 't-1', token: '[REDACTED]', n: 2, msg: 'written' });
    expect(again).toMatchObject({ task: 't-1', msg: 'again' });
    expect(err).toMatchObject({ task: 't-1', sub: 'y', msg: 'from a grandchild' });
    expect(s.lines()).toHaveLength(3);
  });
});
