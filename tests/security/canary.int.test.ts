/**
 * Data stays home (issue 14): a canary run of the inbound scenario with a CLOUD model.
 *
 * `keel start` as a process (agents co-hosted), real SMTP (swaks), Jaeger for the traces, and the
 * fake OpenAI server (testkit/openai.ts: a real HTTP server recording every request) configured as
 * `openai:` small and large models. Planted: a secret (KEEL_SECRET_SMTP_PASSWORD, which the
 * sender, escalation and the fixture `leaky` agent receive), a card number and the customer's
 * phone in the email. The `leaky` agent (fixtures/leaky/) logs, traces and throws the secret and
 * the card. Then every place data could leak to is searched: all engine and agent output, every
 * span of every trace in Jaeger (tags, events, process tags), the DLQ stream as stored, the cost
 * ledger, and every prompt the provider received: no card number (in any spacing), no secret, no
 * phone. And the model's answer, which echoes the phone's placeholder, is stored with the phone.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { jetstreamManager } from '@nats-io/jetstream';
import { REPO_ROOT, findTool } from '../../config/index.ts';
import { connectBus } from '../../bus/index.ts';
import { reportSkip, startEngineProcess, startJaeger, startOpenAiServer, waitFor, type EngineProcess, type JaegerHandle, type OpenAiServer } from '../helpers/index.ts';

const FEATURE = join(REPO_ROOT, 'tests', 'security', 'fixtures', 'leaky', 'index.ts');
const SECRET = 'canary-Pw-7f3e9a1c5b';
const CARD = '4111 1111 1111 1111';
const PHONE = '+49 176 5550123';
const BODY = `Hello,\n\nI was charged twice on my card ${CARD} for order 2024-000123. Please call me back on ${PHONE} as soon as you can.\n\nThanks, Ada`;

/** A pattern for a number in any spacing (separators allowed between its digits, not other digits around it). */
const anySpacing = (digits: string, prefix = '') => new RegExp(`(?<!\\d)${prefix}${digits.split('').join('[\\s\\-().\\/]*')}(?!\\d)`);
const CARD_RE = anySpacing('4111111111111111');
// the phone with or without its country code and trunk zero: +49 176…, 0049 176…, 0176…, 176…
const PHONE_RE = anySpacing('1765550123', '(?:(?:\\+|00)?\\s*4\\s*9[\\s\\-().\\/]*)?(?:0[\\s\\-().\\/]*)?');

/** Every place a canary was found in `text`, with some context, for the failure message. */
function hits(text: string): string[] {
  const out: string[] = [];
  for (const [what, re] of [['secret', new RegExp(SECRET.replace(/[-]/g, '\\-'))], ['card', CARD_RE], ['phone', PHONE_RE]] as const) {
    const g = new RegExp(re.source, 'g');
    for (const m of text.matchAll(g)) out.push(`${what}: …${text.slice(Math.max(0, m.index - 120), m.index + m[0].length + 60)}…`);
  }
  return out;
}

type Ticket = { entityId: string; state: { customerEmail?: string; messages: Array<{ text: string }>; summary?: string; suggestion?: { text: string; tier: number } } };

describe('canary: no secret, card number or phone leaves home (cloud model, logs, traces, DLQ, ledger)', () => {
  const hasSwaks = spawnSync('swaks', ['--version']).status === 0;
  let engine: EngineProcess | undefined;
  let jaeger: JaegerHandle | undefined;
  let ai: OpenAiServer | undefined;
  let skip = '';

  const keel = (args: string[]) => {
    const r = spawnSync(process.execPath, [join(REPO_ROOT, 'cli', 'keel.ts'), ...args], {
      env: { ...process.env, KEEL_FEATURES: FEATURE, KEEL_DATA_DIR: engine!.dataDir, KEEL_NATS_PORT: String(engine!.natsPort), KEEL_LOG_LEVEL: 'silent' },
      encoding: 'utf8',
    });
    if (r.status !== 0) throw new Error(`keel ${args.join(' ')} exited with ${r.status}:\n${r.stderr}`);
    return JSON.parse(r.stdout) as unknown;
  };
  const tickets = () => (keel(['entity', 'list', '--type', 'ticket', '--json']) as { items: Ticket[] }).items;

  beforeAll(async () => {
    if (!hasSwaks) skip = 'swaks (Debian package) is not installed';
    else if (!findTool('nats-server')) skip = 'no nats-server binary: run `npm run provision`';
    if (skip) {
      reportSkip('canary', skip);
      return;
    }
    const j = await startJaeger();
    if (j.ok) jaeger = j.server;
    // the "cloud" model: triage gets JSON, the summarizer a summary, the reply suggester a draft that
    // uses the phone's placeholder (as a model that was told "[PHONE_1]" would)
    ai = await startOpenAiServer({
      usage: { prompt_tokens: 400, completion_tokens: 60 },
      reply: (body) => {
        const text = JSON.stringify(body.messages ?? []);
        if (text.includes('You triage customer support')) return '{"intent":"billing","urgency":"normal","sentiment":"negative","entities":[],"confidence":0.9,"escalate":false,"reasons":["double charge"]}';
        const phone = /\[PHONE_\d+\]/.exec(text)?.[0] ?? 'your number';
        if (text.includes('You draft replies')) return `Hi Ada,\n\nsorry about the double charge. We will call you back on ${phone} today.\n\nThe support team`;
        return 'The customer was charged twice for one order and asks for a call back.';
      },
    });
    engine = await startEngineProcess({
      KEEL_FEATURES: FEATURE,
      KEEL_AGENTS: 'intake,triage,summarizer,reply-suggester,sender,escalation,leaky',
      KEEL_AGENT_HOSTS: 'all',
      KEEL_LOG_LEVEL: 'debug',
      KEEL_WORKFLOW_SWEEP_MS: '500',
      KEEL_SECRET_SMTP_PASSWORD: SECRET,
      KEEL_MODEL_SMALL: 'openai:gpt-4o-mini',
      KEEL_MODEL_LARGE: 'openai:gpt-4o',
      KEEL_OPENAI_BASE_URL: ai.url,
      OPENAI_API_KEY: 'sk-canary-not-a-real-key',
      ...(jaeger ? { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: jaeger.otlpTracesUrl } : {}),
    });
    await waitFor(() => (keel(['agents', '--json']) as { agents: unknown[] }).agents.length >= 7, { timeoutMs: 60_000, intervalMs: 500, what: 'seven agents' });
  }, 120_000);

  afterAll(async () => {
    if (engine) {
      await engine.stop('SIGINT');
      engine.cleanup();
    }
    await jaeger?.stop();
    await ai?.stop();
  });

  it('an email with a card number and a phone goes through triage, summary and a cloud-drafted reply; the leaky agent fails; nothing sensitive is found anywhere but home', async (ctx) => {
    if (!engine || !ai) return ctx.skip(skip);
    const swaks = spawnSync('swaks', ['--server', `127.0.0.1:${engine.smtpPort}`, '--to', 'support@keel.local', '--from', 'ada@example.com', '--header', 'Subject: Charged twice', '--header', 'Message-Id: <canary-1@example.com>', '--body', BODY], { encoding: 'utf8' });
    expect(swaks.stdout + swaks.stderr).toMatch(/250 OK/);

    // the ticket gets its summary and suggested reply: the models were called
    let ticket: Ticket | undefined;
    await waitFor(() => !!(ticket = tickets().find((t) => t.state.customerEmail === 'ada@example.com' && t.state.summary && t.state.suggestion)), { timeoutMs: 60_000, intervalMs: 500, what: 'the ticket with summary and suggestion' });
    const chats = ai.requests.filter((r) => r.path === '/v1/chat/completions');
    expect(chats.length).toBeGreaterThanOrEqual(1);
    // the data is at home: the ticket keeps the customer's words as written
    expect(ticket!.state.messages[0]!.text).toContain(CARD);
    expect(ticket!.state.messages[0]!.text).toContain(PHONE);
    // the answer is restored: the draft (tier 1, from the cloud model) has the real phone, no placeholder
    expect(ticket!.state.suggestion!.tier).toBeGreaterThanOrEqual(1);
    expect(ticket!.state.suggestion!.text).toMatch(PHONE_RE);
    expect(ticket!.state.suggestion!.text).not.toMatch(/\[(PHONE|CARD|EMAIL|SECRET|VALUE)_\d+\]/);

    // the careless agent: logs, traces and throws the secret and the card, and fails for good
    keel(['run', 'start', 'leaky-login', '--input', JSON.stringify({ ticketId: ticket!.entityId }), '--id', 'run-leaky', '--json']);
    let run: { run: { status: string } } | undefined;
    await waitFor(() => (run = keel(['run', 'show', 'run-leaky', '--json']) as { run: { status: string } }).run.status === 'failed', { timeoutMs: 30_000, intervalMs: 300, what: 'the leaky run to fail' });
    // the run's recorded failure is the dead letter's error: scrubbed
    expect(JSON.stringify(run)).toContain('[SECRET]');
    expect.soft(hits(JSON.stringify(run)), 'run').toEqual([]);
    type Letters = { letters: Array<{ capability: string; error: { code: string; message: string } }> };
    await waitFor(() => (keel(['dlq', 'list', '--json']) as Letters).letters.some((l) => l.capability === 'leaky.login'), { timeoutMs: 10_000, what: 'the dead letter' });
    // the agent's log line is out (its output reaches the engine's between polls)
    await waitFor(() => engine!.output().includes('SMTP login with [SECRET] failed'), { timeoutMs: 10_000, what: 'the leaky log line, scrubbed' });

    // 1. every prompt the cloud provider received: placeholders, not the values
    const prompts = JSON.stringify(chats.map((r) => r.body));
    expect(prompts).toMatch(/\[CARD_\d+\]/);
    expect(prompts).toMatch(/\[PHONE_\d+\]/);
    expect.soft(hits(prompts), 'prompts').toEqual([]);

    // 2. all engine and agent output (agents inherit the engine's stdout/stderr)
    const logs = engine.output();
    expect(logs).toMatch(/"err":\{[^\n]*"message":"535 authentication failed for support@keel.local with password \[SECRET\] \(card on file \[CARD\]\)"/);
    expect.soft(hits(logs), 'logs').toEqual([]);

    // 3. the DLQ stream as stored (reason and error scrubbed; the body is the task message: only a ticket id)
    const admin = (JSON.parse(readFileSync(join(engine.dataDir, 'credentials.json'), 'utf8')) as { admin: { user: string; password: string } }).admin;
    const nc = await connectBus({ servers: `nats://127.0.0.1:${engine.natsPort}`, user: admin.user, pass: admin.password });
    let dlq = '';
    try {
      const jsm = await jetstreamManager(nc);
      const name = (await jsm.streams.names().next()).find((n) => n.endsWith('_DLQ'))!;
      const info = await jsm.streams.info(name);
      for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
        const m = await jsm.streams.getMessage(name, { seq }).catch(() => null);
        if (m) dlq += `${m.subject} ${JSON.stringify(m.header ? Object.fromEntries([...m.header.keys()].map((k) => [k, m.header!.get(k)])) : {})} ${m.string()}\n`;
      }
    } finally {
      await nc.close();
    }
    expect(dlq).toContain('CANARY_LOGIN_FAILED');
    expect(dlq).toContain('login as support with password [SECRET] refused; card [CARD]');
    expect.soft(hits(dlq), 'dlq').toEqual([]);

    // 4. the cost ledger: every record, every column
    const db = new DatabaseSync(join(engine.dataDir, 'keel.db'), { readOnly: true });
    const costs = JSON.stringify(db.prepare('SELECT * FROM costs').all());
    db.close();
    expect(costs).toContain('gpt-4o-mini');
    expect.soft(hits(costs), 'costs').toEqual([]);

    // 5. every span of every trace in Jaeger: tags, events (exceptions), process tags
    if (!jaeger) return ctx.skip('no trace backend (Jaeger) available: prompts, logs, DLQ and ledger were checked');
    let traces = '';
    await waitFor(async () => {
      const services = ((await (await fetch(`${jaeger!.queryUrl}/api/services`)).json()) as { data: string[] | null }).data ?? [];
      const all = await Promise.all(services.map(async (s) => (await fetch(`${jaeger!.queryUrl}/api/traces?service=${encodeURIComponent(s)}&limit=500&lookback=1h`)).text()));
      traces = all.join('\n');
      // the leaky span (with its scrubbed attribute and exception) and a model call are exported
      return traces.includes('support:[SECRET]') && traces.includes('chat gpt-4o-mini');
    }, { timeoutMs: 30_000, intervalMs: 1_000, what: 'the leaky span and a model call in Jaeger' });
    expect(traces).toContain('CANARY_LOGIN_FAILED');
    expect(traces).toContain('keel.redact.count');
    expect.soft(hits(traces), 'traces').toEqual([]);
  }, 150_000);
});
