/**
 * The inbound-customers scenario, run against the engine as processes (`keel start`), a real SMTP
 * client (swaks), HTTP chat, the CLI for approvals and cost, and Jaeger for the trace. One body,
 * several layouts: scenario.int.test.ts (every agent in its own process) and
 * scenario-cohosted.int.test.ts (KEEL_AGENT_HOSTS=all: every agent in one host process).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { REPO_ROOT } from '../../../config/index.ts';
import { connectBus } from '../../../bus/index.ts';
import { startEngineProcess, startJaeger, getTrace, waitFor, type EngineProcess, type JaegerHandle } from '../../helpers/index.ts';

export interface ScenarioLayout {
  /** for the describe block: `one process per agent`, `co-hosted` */
  name: string;
  /** extra engine environment (KEEL_AGENT_HOSTS) */
  env: Record<string, string>;
  /** how many OS processes run the ten default agents (six inbound, three launch, the memorizer) */
  agentProcesses: number;
  /** the service names the run's trace must cross (agents co-hosted in one process share one) */
  traceServices: string[];
}

/** Every test of the scenario, against an engine started with the layout's environment. */
export function describeInboundScenario(layout: ScenarioLayout): void {
  const hasSwaks = spawnSync('swaks', ['--version']).status === 0;
  let engine: EngineProcess | undefined;
  let jaeger: JaegerHandle | undefined;
  let skip = '';

  function keel(args: string[]): { status: number | null; stdout: string; stderr: string; json: () => unknown } {
    const r = spawnSync(process.execPath, [join(REPO_ROOT, 'cli', 'keel.ts'), ...args], {
      env: { ...process.env, KEEL_DATA_DIR: engine!.dataDir, KEEL_NATS_PORT: String(engine!.natsPort), KEEL_LOG_LEVEL: 'silent', ...(jaeger ? { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: jaeger.otlpTracesUrl } : {}) },
      encoding: 'utf8',
    });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr, json: () => JSON.parse(r.stdout) };
  }

  function swaks(args: string[]): string {
    const r = spawnSync('swaks', ['--server', `127.0.0.1:${engine!.smtpPort}`, '--to', 'support@keel.local', ...args], { encoding: 'utf8' });
    return r.stdout + r.stderr;
  }

  interface Ticket { entityId: string; state: { customerId: string; customerEmail?: string; customerHandle?: string; messages: Array<{ direction: string; text: string; messageId?: string }>; triage?: { intent: string; urgency: string }; summary?: string; suggestion?: { text: string }; status: string } }
  const tickets = () => (keel(['entity', 'list', '--type', 'ticket', '--json']).json() as { items: Ticket[] }).items;
  const approvals = () => (keel(['approvals', '--json']).json() as { approvals: Array<{ id: string; subject: string; payload: { ticketId: string; text: string } }> }).approvals;

  beforeAll(async () => {
    if (!hasSwaks) {
      skip = 'swaks (Debian package) is not installed';
      return;
    }
    const j = await startJaeger();
    if (j.ok) jaeger = j.server;
    engine = await startEngineProcess({ KEEL_AGENTS: '', KEEL_LOG_LEVEL: 'warn', KEEL_WORKFLOW_SWEEP_MS: '500', ...layout.env, ...(jaeger ? { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: jaeger.otlpTracesUrl } : {}) });
    // every agent announces itself before the first message
    await waitFor(() => ((keel(['agents', '--json']).json() as { agents: unknown[] }).agents.length >= 10), { timeoutMs: 90_000, intervalMs: 500, what: 'ten agents (six inbound, three launch, the memorizer)' });
  }, 180_000);

  afterAll(async () => {
    if (engine) {
      await engine.stop('SIGINT');
      engine.cleanup();
    }
    await jaeger?.stop();
  });

  describe(`inbound customers end to end (${layout.name})`, () => {
    let emailTicket: Ticket | undefined;

    it(`\`keel agents --json\` and the engine's /metrics report each process's RSS and CPU (${layout.agentProcesses} agent process(es))`, async (ctx) => {
      if (!engine) return ctx.skip(skip);
      // every agent has written its footprint into the registry on its first heartbeat
      const r = keel(['agents', '--json']).json() as { agents: Array<{ agent: string; process?: { rssBytes: number; cpu: number; agents: string[] } }>; processes: Array<{ pid: number; name: string; agents: string[]; rssMb: number; cpuPct: number }> };
      expect(r.processes).toHaveLength(layout.agentProcesses);
      expect(r.processes.flatMap((p) => p.agents).sort()).toEqual(['escalation', 'intake', 'marketer', 'memorizer', 'reply-suggester', 'researcher', 'sender', 'summarizer', 'triage', 'writer']);
      for (const p of r.processes) {
        expect(p.rssMb).toBeGreaterThan(20);
        expect(p.rssMb).toBeLessThan(1024);
        expect(p.cpuPct).toBeGreaterThanOrEqual(0);
      }
      for (const a of r.agents) expect(a.process?.rssBytes).toBeGreaterThan(0);
      const table = keel(['agents']).stdout;
      expect(table).toMatch(/RSS\s+CPU/);
      const metrics = await (await fetch(`${engine.httpUrl}/metrics`)).text();
      const rss = metrics.split('\n').filter((l) => l.startsWith('keel_process_resident_memory_bytes{'));
      expect(rss.some((l) => l.includes('process="keel-engine"'))).toBe(true);
      expect(rss.some((l) => l.includes('process="nats-server"'))).toBe(true);
      expect(rss.filter((l) => !/process="(keel-engine|nats-server)"/.test(l))).toHaveLength(layout.agentProcesses);
      expect(metrics).toMatch(/^keel_process_cpu_ratio\{/m);
    });

    it('an email sent with swaks becomes a ticket for the right customer with triage, summary and a suggested reply, and an approval waits', async (ctx) => {
      if (!engine) return ctx.skip(skip);
      const out = swaks(['--from', 'alice@example.com', '--header', 'Subject: Refund for order 1234', '--header', 'Message-Id: <first-1234@example.com>', '--body', 'Hello, I was charged twice for order 1234. Please refund the second charge.']);
      expect(out).toMatch(/250 OK/);
      await waitFor(() => approvals().some((a) => tickets().find((t) => t.entityId === a.payload.ticketId)?.state.customerEmail === 'alice@example.com'), { timeoutMs: 60_000, intervalMs: 500, what: 'an approval for alice' });
      emailTicket = tickets().find((t) => t.state.customerEmail === 'alice@example.com')!;
      expect(emailTicket.state.messages[0]).toMatchObject({ direction: 'in', messageId: '<first-1234@example.com>' });
      expect(emailTicket.state.triage).toMatchObject({ intent: 'refund' });
      expect(emailTicket.state.summary).toBeTruthy();
      expect(emailTicket.state.suggestion?.text).toBeTruthy();
      const customer = keel(['entity', 'show', emailTicket.state.customerId, '--type', 'customer', '--json']).json() as { state: { email: string } };
      expect(customer.state.email).toBe('alice@example.com');
      // the raw signal is kept on keel.in.email
      const admin = (JSON.parse(readFileSync(join(engine.dataDir, 'credentials.json'), 'utf8')) as { admin: { user: string; password: string } }).admin;
      const nc = await connectBus({ servers: `nats://127.0.0.1:${engine.natsPort}`, user: admin.user, pass: admin.password });
      try {
        const m = await (await jetstreamManager(nc)).streams.getMessage('KEEL_IN', { last_by_subj: 'keel.in.email' });
        expect(m?.json<{ customer: { email: string }; messageId: string }>()).toMatchObject({ customer: { email: 'alice@example.com' }, messageId: '<first-1234@example.com>' });
      } finally {
        await nc.close();
      }
    });

    it('a chat message posted over HTTP becomes a ticket for its customer, with an approval waiting', async (ctx) => {
      if (!engine) return ctx.skip(skip);
      const r = await fetch(`${engine.httpUrl}/v1/chat/messages`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ customer: { handle: 'bob42', name: 'Bob' }, text: 'Hi! How do I export my invoices as PDF?' }) });
      expect(r.status).toBe(202);
      const { conversationId } = (await r.json()) as { conversationId: string };
      await waitFor(() => tickets().some((t) => t.state.customerHandle === 'bob42' && approvals().some((a) => a.payload.ticketId === t.entityId)), { timeoutMs: 60_000, intervalMs: 500, what: 'a chat ticket with an approval' });
      const t = tickets().find((x) => x.state.customerHandle === 'bob42')!;
      expect(t.state.customerId).not.toBe(emailTicket?.state.customerId);
      expect(t.state.triage).toBeTruthy();
      expect(conversationId).toBeTruthy();
      const junk = await fetch(`${engine.httpUrl}/v1/chat/messages`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"customer": ' });
      expect(junk.status).toBe(400);
    });

    it('`keel approve` produces exactly one outbound message with the right recipient and threading headers', async (ctx) => {
      if (!engine || !emailTicket) return ctx.skip(skip || 'needs the email ticket');
      const a = approvals().find((x) => x.payload.ticketId === emailTicket!.entityId)!;
      const r = keel(['approve', a.id, '--json']);
      expect(r.status).toBe(0);
      const outbox = join(engine.dataDir, 'outbox');
      await waitFor(() => readdirSync(outbox).filter((f) => f.endsWith('.eml')).length === 1, { timeoutMs: 30_000, what: 'one .eml in the outbox' });
      // approving again changes nothing
      expect(keel(['approve', a.id]).status).toBe(1);
      await new Promise((r2) => setTimeout(r2, 1_000));
      const files = readdirSync(outbox).filter((f) => f.endsWith('.eml'));
      expect(files).toHaveLength(1);
      const eml = readFileSync(join(outbox, files[0]!), 'utf8');
      expect(eml).toMatch(/^To: alice@example\.com$/m);
      expect(eml).toMatch(/^In-Reply-To: <first-1234@example\.com>$/m);
      expect(eml).toMatch(/^References: <first-1234@example\.com>$/m);
      expect(eml).toMatch(/^Subject: Re: Refund for order 1234$/m);
    });

    it('`keel ticket show` and `keel why` explain the ticket: messages, triage, summary, suggestion, approval, cost, trace, causal chain', async (ctx) => {
      if (!engine || !emailTicket) return ctx.skip(skip || 'needs the email ticket');
      await waitFor(() => (keel(['runs', '--status', 'completed', '--json']).json() as { runs: unknown[] }).runs.length >= 1, { what: 'a completed run' });
      const t = keel(['ticket', 'show', emailTicket.entityId, '--json']).json() as { messages: Array<{ direction: string }>; triage: unknown; summary: string; suggestion: unknown; approvals: Array<{ state: string }>; runs: Array<{ traceId: string }>; cost: { records: number; computeMs: number } };
      expect(t.messages.map((m) => m.direction)).toEqual(['in', 'out']);
      expect(t.triage && t.summary && t.suggestion).toBeTruthy();
      expect(t.approvals[0]!.state).toBe('approved');
      expect(t.runs[0]!.traceId).toMatch(/^[0-9a-f]{32}$/);
      expect(t.cost.records).toBeGreaterThanOrEqual(5);
      const why = keel(['why', emailTicket.entityId, '--json']).json() as { chain: Array<{ cause: { channel: string }; steps: Array<{ step: string; by: string; event: string }> }> };
      const steps = why.chain[0]!.steps;
      expect(why.chain[0]!.cause.channel).toBe('email');
      expect(steps.find((s) => s.step === 'triage' && s.event === 'step_completed')!.by).toBe('agent:triage');
      expect(steps.find((s) => s.step === 'approve' && s.event === 'approval_decided')!.by).toMatch(/^human:/);
      expect(steps.find((s) => s.step === 'send' && s.event === 'step_completed')!.by).toBe('agent:sender');
      expect(keel(['why', emailTicket.entityId]).stdout).toMatch(/email message <first-1234@example\.com> from alice@example\.com/);
    });

    it('a live chat over the WebSocket gets its approved reply pushed back', async (ctx) => {
      if (!engine) return ctx.skip(skip);
      const { WebSocket } = await import('ws');
      const ws = new WebSocket(`${engine.httpUrl.replace('http', 'ws')}/v1/chat/ws`);
      const frames: Array<{ type: string; conversationId?: string; payload?: { kind: string; message: { text: string } } }> = [];
      ws.on('message', (d) => frames.push(JSON.parse(String(d))));
      await new Promise((r, j) => (ws.once('open', r), ws.once('error', j)));
      ws.send(JSON.stringify({ type: 'message', customer: { handle: 'carol7', name: 'Carol' }, text: 'Is there a student discount?', clientMessageId: 'c-1' }));
      await waitFor(() => frames.some((f) => f.type === 'ack'), { what: 'the ack' });
      const conversationId = frames.find((f) => f.type === 'ack')!.conversationId!;
      let approval: { id: string } | undefined;
      await waitFor(() => !!(approval = approvals().find((a) => tickets().find((t) => t.entityId === a.payload.ticketId)?.state.customerHandle === 'carol7')), { timeoutMs: 60_000, intervalMs: 500, what: 'the chat approval' });
      expect(keel(['approve', approval!.id, '--text', 'Yes: 20% off with a student email.']).status).toBe(0);
      await waitFor(() => frames.some((f) => f.type === 'push'), { timeoutMs: 30_000, what: 'the pushed reply' });
      const push = frames.find((f) => f.type === 'push')!;
      expect(push.conversationId).toBe(conversationId);
      expect(push.payload!.message.text).toBe('Yes: 20% off with a student email.');
      ws.close();
    });

    it('a follow-up email in the same thread lands in the same ticket', async (ctx) => {
      if (!engine || !emailTicket) return ctx.skip(skip || 'needs the email ticket');
      const out = swaks(['--from', 'alice@example.com', '--header', 'Subject: Re: Refund for order 1234', '--header', 'Message-Id: <second-1234@example.com>', '--header', 'In-Reply-To: <first-1234@example.com>', '--header', 'References: <first-1234@example.com>', '--body', 'Any update on this? Thanks.']);
      expect(out).toMatch(/250 OK/);
      await waitFor(() => (tickets().find((t) => t.entityId === emailTicket!.entityId)?.state.messages.filter((m) => m.direction === 'in').length ?? 0) === 2, { timeoutMs: 60_000, intervalMs: 500, what: 'the follow-up on the same ticket' });
      expect(tickets().filter((t) => t.state.customerEmail === 'alice@example.com')).toHaveLength(1);
    });

    it('mail loops and junk are quarantined with the reason, and the listener carries on', async (ctx) => {
      if (!engine) return ctx.skip(skip);
      expect(swaks(['--from', 'robot@example.com', '--header', 'Auto-Submitted: auto-replied', '--header', 'Subject: Out of office', '--body', 'I am away.'])).toMatch(/250 OK/);
      const raw = join(engine.dataDir, 'junk.eml');
      writeFileSync(raw, 'this is not\x00 a mime message\r\n\r\n--');
      expect(swaks(['--from', 'x@example.com', '--data', raw])).toMatch(/250|5\d\d/);
      const q = join(engine.dataDir, 'quarantine');
      await waitFor(() => readdirSync(q).filter((f) => f.endsWith('.json')).length >= 1, { what: 'quarantine records' });
      const reasons = readdirSync(q).filter((f) => f.endsWith('.json')).map((f) => (JSON.parse(readFileSync(join(q, f), 'utf8')) as { reason: string }).reason);
      expect(reasons).toContain('auto_reply');
      expect((await fetch(`${engine.httpUrl}/healthz`)).status).toBe(200);
    });

    it('`keel cost --by customer --json` attributes the run\'s tasks to the customer, with zero model spend and compute time', async (ctx) => {
      if (!engine || !emailTicket) return ctx.skip(skip || 'needs the email ticket');
      const r = keel(['cost', '--by', 'customer', '--json']).json() as { groups: Array<{ key: { customerId: string }; totals: { count: number; costUsd: number; computeMs: number }; records: Array<{ agent: string; capability: string }> }> };
      const g = r.groups.find((x) => x.key.customerId === emailTicket!.state.customerId)!;
      expect(g.totals.costUsd).toBe(0);
      expect(g.totals.computeMs).toBeGreaterThan(0);
      const caps = new Set(g.records.map((x) => x.capability));
      for (const c of ['inbound.intake', 'ticket.triage', 'ticket.summarize', 'ticket.suggest-reply', 'message.send']) expect(caps).toContain(c);
    });

    it(`one trace in Jaeger runs from SMTP ingress through the agent processes (${layout.traceServices.join(', ')}) to the send`, async (ctx) => {
      if (!engine || !emailTicket) return ctx.skip(skip || 'needs the email ticket');
      if (!jaeger) return ctx.skip('no trace backend (Jaeger) available');
      // the first email's run (approved and sent)
      const run = (keel(['ticket', 'show', emailTicket.entityId, '--json']).json() as { runs: Array<{ id: string; traceId: string; status: string }> }).runs.find((x) => x.status === 'completed')!;
      expect(run).toBeTruthy();
      let services = new Set<string>();
      let ops: string[] = [];
      await waitFor(async () => {
        const t = await getTrace(jaeger!.queryUrl, run.traceId);
        if (!t) return false;
        services = new Set(t.spans.map((s) => t.processes[s.processID]!.serviceName));
        ops = t.spans.map((s) => s.operationName);
        return ops.some((o) => o.includes('task.message.send')) && layout.traceServices.every((s) => services.has(s));
      }, { timeoutMs: 30_000, intervalMs: 1_000, what: 'the whole run in one trace' });
      expect(ops).toContain('email.receive');
      for (const s of layout.traceServices) expect(services).toContain(s);
    });
  });
}
