/**
 * The Grafana dashboard shows data: `keel start` with the inbound agents and a priced "cloud"
 * model (an OpenAI-compatible server on loopback), the inbound scenario (an email with swaks, two
 * chat tickets asking the same thing, an approval), a real Prometheus (Debian's) running the
 * shipped deploy/prometheus-local.yml (the engine, and every agent process through the engine's
 * GET /metrics/targets), then every panel's PromQL answered with series, and the trace panel's
 * search answered by Jaeger.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../../config/index.ts';
import { freePort, reportSkip, startEngineProcess, startJaeger, startOpenAiServer, tempDir, waitFor, type EngineProcess, type JaegerHandle, type OpenAiServer } from '../helpers/index.ts';

const hasPrometheus = spawnSync('prometheus', ['--version']).status === 0;
const hasSwaks = spawnSync('swaks', ['--version']).status === 0;
const AGENTS = ['intake', 'triage', 'summarizer', 'reply-suggester', 'sender', 'escalation', 'memorizer'];
const ENGINE_BUDGET_USD = 5;
// Grafana's variables, as the dashboard's time range (the last hour) and a rate window that spans the scenario would set them
const GRAFANA_VARS: Record<string, string> = { $__range: '1h', $__rate_interval: '5m', $__interval: '15s' };

interface Panel {
  id: number;
  title: string;
  type: string;
  datasource?: { type: string; uid: string };
  targets?: Array<{ refId: string; expr?: string; queryType?: string; service?: string; limit?: number }>;
  options?: { content?: string };
}
interface PromResult {
  status: string;
  error?: string;
  data?: { resultType: string; result: Array<{ metric: Record<string, string>; value: [number, string] }> };
}

const dashboard = JSON.parse(readFileSync(join(REPO_ROOT, 'deploy', 'grafana', 'dashboards', 'keel-overview.json'), 'utf8')) as { panels: Panel[] };
const promPanels = dashboard.panels.filter((p) => p.datasource?.type === 'prometheus');

describe('the Grafana dashboard (fast checks)', () => {
  it('has the panels the operator needs, each with a PromQL target, one Jaeger trace panel, and the per-customer note', () => {
    const titles = dashboard.panels.map((p) => p.title.toLowerCase());
    for (const want of ['cost by workflow', 'cost by agent', 'cost by model', 'tokens in / out / cached', 'savings', 'budget remaining', 'task rate', 'latency p95', 'failures and retries', 'dlq depth', 'restarts', 'nats']) {
      expect(titles.some((t) => t.includes(want)), want).toBe(true);
    }
    for (const p of promPanels) {
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
      for (const t of p.targets!) expect(t.expr, p.title).toMatch(/keel_/);
    }
    expect(dashboard.panels.filter((p) => p.datasource?.type === 'jaeger')).toHaveLength(1);
    const note = dashboard.panels.find((p) => p.type === 'text')?.options?.content ?? '';
    expect(note).toMatch(/customer/i);
    expect(note).toMatch(/cardinality/);
    expect(new Set(dashboard.panels.map((p) => p.id)).size).toBe(dashboard.panels.length);
  });

  it('the shipped Prometheus configurations scrape agents: compose by DNS (every agent service), the embedded engine by http_sd', () => {
    const compose = readFileSync(join(REPO_ROOT, 'deploy', 'prometheus.yml'), 'utf8');
    expect(compose).not.toMatch(/metrics_path: \/varz/);
    const services = spawnSync('docker-compose', ['--env-file', 'deploy/keel.env.example', 'config', '--services'], { cwd: REPO_ROOT, encoding: 'utf8' });
    if (services.status === 0) {
      const agents = services.stdout.trim().split('\n').filter((s) => !['nats-1', 'nats-2', 'nats-3', 'mongo', 'qdrant', 'otel-collector', 'jaeger', 'prometheus', 'grafana', 'keel'].includes(s));
      expect(agents.length).toBeGreaterThanOrEqual(10);
      const names = /names: \[([^\]]+)\]/.exec(compose)![1]!.split(',').map((s) => s.trim());
      expect(names.sort()).toEqual(agents.sort());
    }
    const local = readFileSync(join(REPO_ROOT, 'deploy', 'prometheus-local.yml'), 'utf8');
    expect(local).toMatch(/http_sd_configs:\n\s+- url: http:\/\/127\.0\.0\.1:8080\/metrics\/targets/);
  });
});

describe('the Grafana dashboard against a real Prometheus after the inbound scenario', () => {
  let skip = '';
  let engine: EngineProcess | undefined;
  let jaeger: JaegerHandle | undefined;
  let jaegerSkip = '';
  let ai: OpenAiServer | undefined;
  let prom: ChildProcess | undefined;
  let promDir: ReturnType<typeof tempDir> | undefined;
  let promUrl = '';

  const keel = (args: string[]) => {
    const r = spawnSync(process.execPath, [join(REPO_ROOT, 'cli', 'keel.ts'), ...args], { env: { ...process.env, KEEL_DATA_DIR: engine!.dataDir, KEEL_NATS_PORT: String(engine!.natsPort), KEEL_LOG_LEVEL: 'silent' }, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`keel ${args.join(' ')} exited with ${r.status}: ${r.stderr}`);
    return JSON.parse(r.stdout) as unknown;
  };
  const query = async (expr: string): Promise<PromResult> => (await (await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(expr)}`)).json()) as PromResult;
  const scalar = async (expr: string) => Number((await query(expr)).data?.result[0]?.value[1] ?? NaN);
  const grafana = (expr: string) => expr.replace(/\$__\w+/g, (v) => GRAFANA_VARS[v] ?? v);

  beforeAll(async () => {
    if (!hasPrometheus) skip = 'prometheus (Debian package) is not installed';
    else if (!hasSwaks) skip = 'swaks (Debian package) is not installed';
    if (skip) return reportSkip('dashboard', skip);
    const j = await startJaeger();
    if (j.ok) jaeger = j.server;
    else jaegerSkip = j.reason;
    // the "cloud" model, priced (gpt-4o-mini / gpt-4o built-in prices): triage gets JSON, the others text
    ai = await startOpenAiServer({
      usage: { prompt_tokens: 600, completion_tokens: 80, cached_tokens: 200 },
      reply: (body) => {
        const text = JSON.stringify(body.messages ?? []);
        if (text.includes('You triage customer support')) return '{"intent":"how_to","urgency":"normal","sentiment":"neutral","entities":[],"confidence":0.9,"escalate":false,"reasons":["question"]}';
        if (text.includes('You draft replies')) return 'Hi,\n\nyou can export your invoices as PDF from Billing > Invoices > Export.\n\nThe support team';
        return 'The customer asks a question about their account.';
      },
    });
    engine = await startEngineProcess({
      KEEL_AGENTS: AGENTS.join(','),
      KEEL_LOG_LEVEL: 'warn',
      KEEL_WORKFLOW_SWEEP_MS: '500',
      KEEL_MODEL_SMALL: 'openai:gpt-4o-mini',
      KEEL_MODEL_LARGE: 'openai:gpt-4o',
      KEEL_OPENAI_BASE_URL: ai.url,
      OPENAI_API_KEY: 'sk-dashboard-test',
      KEEL_MODEL_MAX_RETRIES: '0',
      ...(jaeger ? { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: jaeger.otlpTracesUrl } : {}),
    });
    await waitFor(() => ((keel(['agents', '--json']) as { agents: unknown[] }).agents.length >= AGENTS.length), { timeoutMs: 120_000, intervalMs: 500, what: `${AGENTS.length} agents` });
    keel(['budget', 'set', '--engine', '--usd', String(ENGINE_BUDGET_USD), '--period', 'month', '--json']);

    // Prometheus runs the shipped embedded configuration, pointed at this engine, every second
    promDir = tempDir('keel-prom-');
    const port = await freePort();
    promUrl = `http://127.0.0.1:${port}`;
    const cfg = readFileSync(join(REPO_ROOT, 'deploy', 'prometheus-local.yml'), 'utf8').replaceAll('127.0.0.1:8080', new URL(engine.httpUrl).host).replace(/(scrape_interval|refresh_interval): 15s/g, '$1: 1s');
    writeFileSync(join(promDir.path, 'prometheus.yml'), cfg);
    prom = spawn('prometheus', [`--config.file=${join(promDir.path, 'prometheus.yml')}`, `--storage.tsdb.path=${join(promDir.path, 'data')}`, `--web.listen-address=127.0.0.1:${port}`], { stdio: 'ignore' });
  }, 240_000);

  afterAll(async () => {
    prom?.kill('SIGKILL');
    if (engine) {
      await engine.stop('SIGINT');
      engine.cleanup();
    }
    await jaeger?.stop();
    await ai?.stop();
    promDir?.remove();
  });

  it('GET /metrics/targets lists every agent process\'s /metrics, and Prometheus scrapes each of them', async (ctx) => {
    if (skip) return ctx.skip(skip);
    const targets = (await (await fetch(`${engine!.httpUrl}/metrics/targets`)).json()) as Array<{ targets: string[]; labels: Record<string, string> }>;
    expect(targets.map((t) => t.labels.keel_process).sort()).toEqual([...AGENTS].sort());
    for (const t of targets) {
      expect(t.targets).toHaveLength(1);
      const text = await (await fetch(`http://${t.targets[0]}${t.labels.__metrics_path__}`)).text();
      expect(text).toMatch(/^keel_process_resident_memory_bytes\{/m);
    }
    await waitFor(async () => (await query('up{job="keel-agents"} == 1').catch(() => undefined))?.data?.result.length === AGENTS.length, { timeoutMs: 60_000, intervalMs: 500, what: `Prometheus scraping ${AGENTS.length} agent processes` });
    // the engine's own job is scraped on its own schedule: it may not have been scraped yet (CI: NaN, no series)
    await waitFor(async () => (await scalar('sum(up{job="keel"})').catch(() => Number.NaN)) === 1, { timeoutMs: 60_000, intervalMs: 500, what: 'Prometheus scraping the engine' });
  }, 120_000);

  it('after the inbound scenario, every panel\'s query returns series with values, and the figures match the ledger', async (ctx) => {
    if (skip) return ctx.skip(skip);
    // an email with swaks, and two chat tickets asking the same thing (the second is served by the intent cache)
    const out = spawnSync('swaks', ['--server', `127.0.0.1:${engine!.smtpPort}`, '--to', 'support@keel.local', '--from', 'alice@example.com', '--header', 'Subject: Refund for order 1234', '--header', 'Message-Id: <dash-1234@example.com>', '--body', 'Hello, I was charged twice for order 1234. Please refund the second charge.'], { encoding: 'utf8' });
    expect(out.stdout + out.stderr).toMatch(/250 OK/);
    // an escalated ticket is high-value: its reply is drafted by the large model
    const urgent = spawnSync('swaks', ['--server', `127.0.0.1:${engine!.smtpPort}`, '--to', 'support@keel.local', '--from', 'carol@example.com', '--header', 'Subject: URGENT: production is down', '--header', 'Message-Id: <dash-urgent@example.com>', '--body', 'Our production is down since this morning and we are losing money. This is urgent, fix it now or we will talk to our lawyer.'], { encoding: 'utf8' });
    expect(urgent.stdout + urgent.stderr).toMatch(/250 OK/);
    type Ticket = { entityId: string; state: { customerEmail?: string; customerHandle?: string; suggestion?: { text: string } } };
    const tickets = () => (keel(['entity', 'list', '--type', 'ticket', '--json']) as { items: Ticket[] }).items;
    const chat = async () => {
      const r = await fetch(`${engine!.httpUrl}/v1/chat/messages`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ customer: { handle: 'bob42', name: 'Bob' }, text: 'Hi! How do I export my invoices as PDF?' }) });
      expect(r.status).toBe(202);
    };
    await chat();
    await waitFor(() => tickets().filter((t) => t.state.suggestion).length >= 3, { timeoutMs: 90_000, intervalMs: 500, what: 'three tickets with a suggested reply' });
    await chat();
    await waitFor(() => tickets().filter((t) => t.state.suggestion).length >= 4, { timeoutMs: 90_000, intervalMs: 500, what: 'four tickets with a suggested reply' });
    // approving alice's reply runs the sender
    const approvals = (keel(['approvals', '--json']) as { approvals: Array<{ id: string; payload: { ticketId: string } }> }).approvals;
    const alice = tickets().find((t) => t.state.customerEmail === 'alice@example.com')!;
    keel(['approve', approvals.find((a) => a.payload.ticketId === alice.entityId)!.id, '--json']);
    await waitFor(async () => (await scalar('sum(keel_tasks_total{capability=~".*send.*", outcome="ack"})')) >= 1, { timeoutMs: 60_000, intervalMs: 500, what: 'the sender\'s task, scraped' });

    // Prometheus has caught up when its model spend equals the ledger's
    const ledger = keel(['cost', '--json']) as { totals: { costUsd: number; tokensIn: number; tokensOut: number; tokensCached: number } };
    expect(ledger.totals.costUsd).toBeGreaterThan(0);
    await waitFor(async () => Math.abs((await scalar('sum(keel_cost_usd_total)')) - ledger.totals.costUsd) < 1e-9, { timeoutMs: 30_000, intervalMs: 500, what: `Prometheus's spend to reach the ledger's $${ledger.totals.costUsd}` });
    expect(await scalar('sum(keel_model_tokens_total{kind="input"})')).toBe(ledger.totals.tokensIn);
    expect(await scalar('sum(keel_model_tokens_total{kind="output"})')).toBe(ledger.totals.tokensOut);
    expect(await scalar('sum(keel_model_tokens_total{kind="cached"})')).toBe(ledger.totals.tokensCached);
    // the engine budget's remainder is the limit less what the ledger says was spent
    await waitFor(async () => Math.abs((await scalar('keel_budget_remaining_usd{scope="engine"}')) - (ENGINE_BUDGET_USD - ledger.totals.costUsd)) < 1e-6, { timeoutMs: 15_000, intervalMs: 500, what: 'the engine budget\'s remainder' });
    // one scrape more, so the rates see the last increase
    await new Promise((r) => setTimeout(r, 2_500));

    const counts: string[] = [];
    for (const p of promPanels) {
      for (const t of p.targets!) {
        const expr = grafana(t.expr!);
        const r = await query(expr);
        expect(r.status, `${p.title}: ${expr}: ${r.error ?? ''}`).toBe('success');
        const values = r.data!.result.map((s) => Number(s.value[1]));
        counts.push(`${p.title} [${t.refId}]: ${r.data!.result.length} series`);
        expect(r.data!.result.length, `${p.title} [${t.refId}] ${expr} returned no series`).toBeGreaterThan(0);
        expect(values.some((v) => Number.isFinite(v)), `${p.title} [${t.refId}] ${expr}: no finite value (${values.join(', ')})`).toBe(true);
      }
    }
    console.log(`dashboard panels against Prometheus:\n  ${counts.join('\n  ')}`);

    // what the panels say, checked against what happened
    const by = async (expr: string, label: string) => Object.fromEntries((await query(grafana(expr))).data!.result.map((s) => [s.metric[label] ?? '', Number(s.value[1])]));
    const costByAgent = await by(promPanels.find((p) => /cost by agent/i.test(p.title))!.targets![0]!.expr!, 'agent');
    expect(Object.keys(costByAgent)).toContain('reply-suggester');
    const costByModel = await by(promPanels.find((p) => /cost by model/i.test(p.title))!.targets![0]!.expr!, 'model');
    expect(Object.keys(costByModel).sort()).toEqual(['gpt-4o', 'gpt-4o-mini']);
    const byWorkflow = await by(promPanels.find((p) => /cost by workflow/i.test(p.title))!.targets![0]!.expr!, 'workflow');
    expect(Object.keys(byWorkflow).some((w) => w.length > 0)).toBe(true);
    const tokens = await by(promPanels.find((p) => /tokens in/i.test(p.title))!.targets![0]!.expr!, 'kind');
    expect(Object.keys(tokens).sort()).toEqual(['cached', 'input', 'output']);
    const calls = await by('sum by (source) (keel_model_calls_total)', 'source');
    expect(calls.provider).toBeGreaterThan(0);
    expect(calls.cache, 'the second chat ticket was answered from the intent cache').toBeGreaterThan(0);
    const saved = await by('sum by (source) (keel_model_saved_usd_total)', 'source');
    expect(saved.cache).toBeGreaterThan(0);
    const restarts = await by('max by (agent) (keel_agent_process_restarts)', 'agent');
    expect(Object.keys(restarts).sort()).toEqual([...AGENTS].sort());
    const dlq = await by('sum by (capability) (keel_dlq_messages)', 'capability');
    expect(Object.values(dlq).every((v) => v === 0)).toBe(true);
    expect(Object.keys(dlq).length).toBeGreaterThanOrEqual(AGENTS.length);
  }, 300_000);

  it('the trace panel\'s search (the Jaeger datasource\'s /api/traces) finds the runs\' traces, across the engine and the agents', async (ctx) => {
    if (skip) return ctx.skip(skip);
    if (!jaeger) return ctx.skip(jaegerSkip);
    const panel = dashboard.panels.find((p) => p.datasource?.type === 'jaeger')!;
    const t = panel.targets![0]!;
    expect(t.queryType).toBe('search');
    // as Grafana's Jaeger datasource searches: service, limit and the time range in microseconds
    const end = Date.now() * 1000;
    const url = `${jaeger.queryUrl}/api/traces?service=${encodeURIComponent(t.service!)}&limit=${t.limit ?? 20}&start=${end - 3_600_000_000}&end=${end}`;
    let traces: Array<{ traceID: string; spans: unknown[]; processes: Record<string, { serviceName: string }> }> = [];
    await waitFor(
      async () => {
        traces = ((await (await fetch(url)).json()) as { data: typeof traces }).data ?? [];
        return traces.some((x) => Object.values(x.processes).some((p) => AGENTS.includes(p.serviceName)));
      },
      { timeoutMs: 30_000, intervalMs: 1_000, what: 'a trace of the engine that crosses an agent' },
    );
    expect(traces.length).toBeGreaterThan(0);
    expect(traces.length).toBeLessThanOrEqual(t.limit ?? 20);
  });
});
