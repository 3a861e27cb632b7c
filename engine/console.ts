/**
 * The web console: static files from `console/` at `/` (no build step, no CDN) and the JSON
 * routes its views read under `/v1/` (guarded by engine/auth.ts like every other `/v1` route),
 * plus `GET /v1/stream`, server-sent events that say when state changed. See docs/console.md.
 *
 * ```ts
 * mountConsole(app, { store, workflows, bus, nats, config, processes: () => supervisor.list() });
 * ```
 */
import { readFileSync, readdirSync } from 'node:fs';
import { extname, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import type { Context, Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import { REPO_ROOT, KEEL_VERSION, type KeelConfig } from '../config/index.ts';
import { listAgents, listDeadLetters, getDeadLetter, redriveDeadLetter, type Bus, type NatsConnection, type StoredDeadLetter } from '../bus/index.ts';
import { addCostRecord, emptyCostTotals, roundCostTotals, type CostRecord, type CostTotals, type StateStore, type Approval } from '../shared-state/index.ts';
import { resolveRunId, runCoordinates, type RunState, type WorkflowEngine } from '../workflows/index.ts';
import { createBudgetGuard } from '../models/index.ts';
import { resolveCustomer } from '../agents/index.ts';
import { errorCode, httpError, outageFailure } from './http.ts';
import { operatorOf } from './auth.ts';

export interface ConsoleDeps {
  store: StateStore;
  workflows: WorkflowEngine;
  bus: Bus;
  nats: NatsConnection;
  config: KeelConfig;
  /** the supervised agent processes (restarts), when this engine runs them */
  processes?: () => Array<{ id: string; pid: number | undefined; restarts: number; agents: string[]; host: string | undefined; sandboxed: boolean }>;
  /** where the static files are (default `<repo>/console`) */
  staticDir?: string;
}

const TYPES: Record<string, string> = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.svg': 'image/svg+xml', '.png': 'image/png', '.ico': 'image/x-icon' };
const SECURITY_HEADERS = {
  // everything from Keel itself: no inline script, no third party
  'content-security-policy': "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
};

/** The console's files, read once: name → body, gzipped body, type. */
function loadStatic(dir: string): Map<string, { body: Buffer; gz: Buffer; type: string }> {
  const files = new Map<string, { body: Buffer; gz: Buffer; type: string }>();
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return files;
  }
  for (const name of names) {
    const type = TYPES[extname(name)];
    if (!type) continue;
    const body = readFileSync(join(dir, name));
    files.set(name, { body, gz: gzipSync(body, { level: 9 }), type });
  }
  return files;
}

/** The cost dimensions the explorer groups on: the ledger's, plus `workflow` (from details) and `day` (UTC). */
const COST_DIMS = ['customer', 'workflow', 'agent', 'model', 'day', 'capability', 'ticket', 'run'] as const;
type CostDim = (typeof COST_DIMS)[number];
const round9 = (n: number) => Math.round(n * 1e9) / 1e9;

export function costKey(r: CostRecord, d: CostDim): string | null {
  switch (d) {
    case 'customer':
      return r.customerId;
    case 'workflow':
      return typeof r.details?.workflow === 'string' ? r.details.workflow : null;
    case 'agent':
      return r.agent;
    case 'model':
      return r.model;
    case 'day':
      return r.time.slice(0, 10);
    case 'capability':
      return r.capability;
    case 'ticket':
      return r.entityType === 'ticket' && r.entityId ? r.entityId : null;
    case 'run':
      return r.runId;
  }
}

/** Totals per key, most expensive first (per day: newest first). */
export function groupCosts(records: CostRecord[], by: CostDim, keyOf: (r: CostRecord) => string | null = (r) => costKey(r, by)): Array<{ key: string | null; totals: CostTotals; refusals: number }> {
  const groups = new Map<string | null, { key: string | null; totals: CostTotals; refusals: number }>();
  for (const r of records) {
    const key = keyOf(r);
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { key, totals: emptyCostTotals(), refusals: 0 }));
    addCostRecord(g.totals, r);
    if (r.details?.refused) g.refusals++;
  }
  const out = [...groups.values()].map((g) => ({ ...g, totals: roundCostTotals(g.totals) }));
  return by === 'day' ? out.sort((a, b) => String(b.key).localeCompare(String(a.key))) : out.sort((a, b) => b.totals.costUsd - a.totals.costUsd);
}

function sumTotals(records: CostRecord[]): CostTotals {
  const t = emptyCostTotals();
  for (const r of records) addCostRecord(t, r);
  return roundCostTotals(t);
}

const SINCE_RE = /^(\d+(?:\.\d+)?)([smhdw])$/;
const UNIT: Record<string, number> = { s: 1e3, m: 6e4, h: 3.6e6, d: 8.64e7, w: 6.048e8 };
/** `7d`, `24h`, an ISO time, or `all` → an ISO time (undefined: everything). */
function sinceOf(text: string | undefined): string | undefined {
  const t = (text ?? '30d').trim();
  if (t === 'all') return undefined;
  const m = SINCE_RE.exec(t);
  if (m) return new Date(Date.now() - Number(m[1]) * UNIT[m[2]!]!).toISOString();
  const at = Date.parse(t);
  return Number.isFinite(at) ? new Date(at).toISOString() : new Date(Date.now() - 30 * UNIT.d!).toISOString();
}

interface CustomerName {
  id: string;
  email?: string;
  handle?: string;
  name?: string;
}
async function nameCustomer(store: StateStore, id: string): Promise<CustomerName> {
  const e = await store.get<{ email?: string; name?: string; tags?: string[] }>('customer', id).catch(() => null);
  if (!e) return { id };
  const handle = e.state.tags?.find((t) => t.startsWith('handle:'))?.slice('handle:'.length);
  return { id, ...(e.state.email ? { email: e.state.email } : {}), ...(handle ? { handle: `@${handle}` } : {}), ...(e.state.name ? { name: e.state.name } : {}) };
}

interface TicketLike {
  subject?: string;
  status?: string;
  priority?: string;
  channel?: string;
  customerId?: string;
  customerEmail?: string;
  customerHandle?: string;
  triage?: Record<string, unknown>;
  summary?: string;
  messages?: Array<{ direction: string; from: string; text: string; at: string; subject?: string }>;
}

/** What the inbox shows for one approval: the ticket (triage, summary, the messages) and the reply. */
async function inboxItem(store: StateStore, a: Approval) {
  const p = (a.payload && typeof a.payload === 'object' ? a.payload : {}) as { ticketId?: string; text?: string; customer?: string; subject?: string; summary?: string; channel?: string };
  const t = p.ticketId ? await store.get<TicketLike>('ticket', p.ticketId).catch(() => null) : null;
  const ts = t?.state;
  return {
    id: a.id,
    state: a.state,
    action: a.action,
    subject: p.subject ?? a.subject,
    customer: p.customer ?? ts?.customerEmail ?? ts?.customerHandle ?? null,
    channel: p.channel ?? ts?.channel ?? null,
    createdAt: a.createdAt,
    deadline: a.deadline,
    runId: a.correlationId,
    reply: p.text ?? null,
    text: a.text,
    reason: a.reason,
    decidedAt: a.decidedAt,
    decidedBy: a.decidedBy ? `${a.decidedBy.kind}:${a.decidedBy.id}` : null,
    ticket: t
      ? {
          id: t.entityId,
          subject: ts!.subject ?? null,
          status: ts!.status ?? null,
          priority: ts!.priority ?? null,
          triage: ts!.triage ?? null,
          summary: ts!.summary ?? p.summary ?? null,
          messages: (ts!.messages ?? []).slice(-5).map((m) => ({ direction: m.direction, from: m.from, text: m.text, at: m.at })),
        }
      : null,
  };
}

async function describeLetter(store: StateStore, l: StoredDeadLetter) {
  const rc = runCoordinates(l.headers);
  const redriven = (await store.exportAudit({ limit: 100_000 })).filter((r) => r.action === 'dlq.redriven' && Number(r.details.seq) === l.seq).map((r) => ({ at: r.time, by: `${r.actor.kind}:${r.actor.id}` }));
  return { seq: l.seq, capability: l.capability, reason: l.reason, error: l.error, deadAt: l.deadAt, deliveries: l.deliveries, subject: l.subject, run: rc ? { id: rc.runId, step: rc.step, attempt: rc.attempt, role: rc.role } : null, redriven };
}

function failure(c: Context, err: unknown, notFound: string[] = []): Response {
  const outage = outageFailure(c, err);
  if (outage) return outage;
  const code = errorCode(err);
  const status = notFound.includes(code) || code.endsWith('_NOT_FOUND') ? 404 : code === 'WORKFLOW_AMBIGUOUS_ID' ? 400 : code === 'WORKFLOW_INVALID_INPUT' ? 422 : code === 'INTERNAL' ? 500 : 409;
  return httpError(c, status, code, (err as Error).message);
}

const jsonBody = async (c: Context): Promise<Record<string, unknown>> => {
  try {
    const v = await c.req.json();
    return v && typeof v === 'object' ? (v as Record<string, unknown>) : {};
  } catch {
    return {};
  }
};

/** Mounts the console's files and routes. Register after mountAuth (its `/v1` routes need an operator). */
export function mountConsole(app: Hono, d: ConsoleDeps): void {
  const files = loadStatic(d.staticDir ?? join(REPO_ROOT, 'console'));
  const serveFile = (c: Context, name: string) => {
    const f = files.get(name);
    if (!f) return httpError(c, 404, 'NOT_FOUND', `no console file ${name}`);
    const gz = /\bgzip\b/.test(c.req.header('accept-encoding') ?? '');
    const headers: Record<string, string> = { ...SECURITY_HEADERS, 'content-type': f.type, 'cache-control': 'no-cache', vary: 'accept-encoding' };
    if (gz) headers['content-encoding'] = 'gzip';
    return c.body(new Uint8Array(gz ? f.gz : f.body), 200, headers);
  };
  app.get('/', (c) => serveFile(c, 'index.html'));
  app.get('/console/:file{[a-z0-9-]+\\.(?:js|css|svg|png|ico)}', (c) => serveFile(c, c.req.param('file')));

  const { store, workflows } = d;

  app.get('/v1/console', (c) => c.json({ operator: operatorOf(c).operator, version: KEEL_VERSION, tracesUi: d.config.tracesUi ?? null }));

  // live: an event whenever the change log moves or the approval queue changes (polled each second,
  // once for all open consoles: agents write from their own processes)
  const watcher = stateWatcher(store);
  app.get('/v1/stream', (c) =>
    streamSSE(c, async (s) => {
      let id = 0;
      let lastSent = Date.now();
      const send = (event: string, data: unknown) => {
        lastSent = Date.now();
        return s.writeSSE({ event, id: String(++id), data: JSON.stringify(data) }).catch(() => undefined);
      };
      const off = watcher.subscribe((e) => void (e instanceof Error ? send('error', { message: 'the state store did not answer; retrying' }) : send('change', e)));
      try {
        while (!s.aborted && !s.closed) {
          await s.sleep(1000);
          if (Date.now() - lastSent >= 15_000) await send('ping', {});
        }
      } finally {
        off();
      }
    }),
  );

  // ---- inbox ---------------------------------------------------------------------------------
  app.get('/v1/inbox', async (c) => {
    const state = (c.req.query('state') ?? 'pending') as 'pending';
    const approvals = await store.listApprovals({ state, limit: 200 });
    return c.json({ items: await Promise.all(approvals.map((a) => inboxItem(store, a))) });
  });

  // ---- cost ----------------------------------------------------------------------------------
  const costRecords = async (c: Context) => {
    const since = sinceOf(c.req.query('since'));
    const q = c.req.query();
    let customer: CustomerName | undefined;
    if (q.customer) customer = await nameCustomer(store, (await resolveCustomer(store, q.customer)).id);
    let records = (await store.costs({ ...(since ? { since } : {}), ...(customer ? { customerId: customer.id } : {}), ...(q.agent ? { agent: q.agent } : {}), ...(q.model ? { model: q.model } : {}), ...(q.capability ? { capability: q.capability } : {}), ...(q.run ? { runId: q.run } : {}), records: Number.MAX_SAFE_INTEGER })).records;
    if (q.workflow) records = records.filter((r) => costKey(r, 'workflow') === q.workflow);
    if (q.day) records = records.filter((r) => r.time.startsWith(q.day!));
    // a ticket's calls: those attributed to it, and those of the runs that worked on it (the
    // inbound run's intake names the ticket), as `keel ticket show` counts them
    const ticketOfRun = new Map<string, string | null>();
    if (q.ticket || c.req.query('by') === 'ticket') {
      for (const runId of new Set(records.map((r) => r.runId).filter((x): x is string => !!x))) {
        const run = await store.get<RunState>('workflow_run', runId).catch(() => null);
        const t = (run?.state.steps.intake?.output as { ticketId?: unknown } | undefined)?.ticketId;
        ticketOfRun.set(runId, typeof t === 'string' ? t : null);
      }
    }
    const ticketOf = (r: CostRecord) => costKey(r, 'ticket') ?? (r.runId ? (ticketOfRun.get(r.runId) ?? null) : null);
    if (q.ticket) records = records.filter((r) => ticketOf(r) === q.ticket);
    const filters: Record<string, string> = {};
    for (const k of ['customer', 'workflow', 'agent', 'model', 'day', 'capability', 'ticket', 'run']) if (q[k]) filters[k] = k === 'customer' && customer ? customer.id : q[k]!;
    return { since: since ?? null, records, customer, filters, ticketOf };
  };
  app.get('/v1/cost', async (c) => {
    const by = (c.req.query('by') ?? 'customer') as CostDim;
    if (!COST_DIMS.includes(by)) return httpError(c, 422, 'INVALID_REQUEST', `by takes ${COST_DIMS.join(', ')}; got '${by}'`, [{ path: 'by', message: `one of ${COST_DIMS.join(', ')}` }]);
    const r = await costRecords(c);
    const groups = groupCosts(r.records, by, by === 'ticket' ? r.ticketOf : undefined);
    const named = by === 'customer' ? await Promise.all(groups.map(async (g) => ({ ...g, customer: g.key ? await nameCustomer(store, g.key) : null }))) : groups;
    // a ticket's subject, so the operator recognises it
    const withSubjects =
      by === 'ticket'
        ? await Promise.all(
            named.map(async (g) => {
              const e = g.key ? await store.get<TicketLike>('ticket', g.key).catch(() => null) : null;
              return { ...g, subject: e?.state.subject ?? null };
            }),
          )
        : named;
    return c.json({ since: r.since, by, filters: r.filters, customer: r.customer ?? null, totals: sumTotals(r.records), groups: withSubjects });
  });
  app.get('/v1/cost/records', async (c) => {
    const r = await costRecords(c);
    const limit = Math.min(Number(c.req.query('limit') ?? 200) || 200, 5000);
    return c.json({ since: r.since, filters: r.filters, customer: r.customer ?? null, totals: sumTotals(r.records), records: r.records.slice(0, limit), omitted: Math.max(0, r.records.length - limit), tracesUi: d.config.tracesUi ?? null });
  });
  app.get('/v1/budgets', async (c) => c.json({ budgets: await createBudgetGuard(store).list() }));

  // ---- runs ----------------------------------------------------------------------------------
  app.get('/v1/runs', async (c) => {
    const q = c.req.query();
    const filter: Record<string, string> = {};
    if (q.status) filter.status = q.status;
    if (q.workflow) filter.workflow = q.workflow;
    if (q.customer) filter.customer = (await resolveCustomer(store, q.customer)).id;
    const page = await store.query<RunState>('workflow_run', { filter, sort: { startedAt: 'desc' }, limit: Math.min(Number(q.limit ?? 50) || 50, 500) });
    return c.json({
      total: page.total,
      runs: page.items.map((e) => ({ id: e.entityId, workflow: e.state.workflow, version: e.state.version, status: e.state.status, startedAt: e.state.startedAt, finishedAt: e.state.finishedAt ?? null, spentUsd: e.state.spentUsd, customer: e.state.customer ?? null, traceId: e.state.traceId ?? null, error: e.state.error ?? null })),
    });
  });
  app.get('/v1/runs/:id/timeline', async (c) => {
    let id: string;
    try {
      id = await resolveRunId(store, c.req.param('id'));
    } catch (err) {
      return failure(c, err, ['WORKFLOW_RUN_NOT_FOUND']);
    }
    const e = await store.get<RunState>('workflow_run', id);
    if (!e) return httpError(c, 404, 'WORKFLOW_RUN_NOT_FOUND', `no workflow run '${id}'`);
    const { definition: _d, ...run } = e.state;
    const history = (await store.history('workflow_run', id)).map((h) => ({ version: h.version, type: h.type, time: h.time, actor: `${h.meta.actor.kind}:${h.meta.actor.id}`, step: (h.data as { step?: string } | null)?.step ?? null, attempt: (h.data as { attempt?: number } | null)?.attempt ?? null, error: (h.data as { error?: string } | null)?.error ?? null }));
    const costs = (await store.costs({ runId: id, records: 10_000 })).records;
    const steps = Object.entries(e.state.steps).map(([step, s]) => {
      const out = (s.output ?? {}) as { tier?: unknown; memories?: unknown };
      const mine = costs.filter((r) => (r.details?.step ?? null) === step || (s.agent && r.agent === s.agent));
      return {
        id: step,
        status: s.status,
        attempt: s.attempt,
        agent: s.agent ?? null,
        scheduledAt: s.scheduledAt ?? null,
        completedAt: s.completedAt ?? null,
        durationMs: s.durationMs ?? null,
        costUsd: s.costUsd ?? round9(mine.reduce((n, r) => n + r.costUsd, 0)),
        models: [...new Set(mine.map((r) => r.model).filter((m): m is string => !!m))],
        tier: typeof out.tier === 'number' ? out.tier : null,
        memories: Array.isArray(out.memories) ? out.memories.map(String) : [],
        error: s.error ?? null,
        errors: s.errors ?? [],
        approvalId: s.approvalId ?? null,
        deadLetter: s.deadLetter ?? null,
        events: history.filter((h) => h.step === step),
      };
    });
    return c.json({ run: { id, ...run }, steps, history, costs, tracesUi: d.config.tracesUi ?? null });
  });
  app.post('/v1/runs/:id/retry', async (c) => {
    const b = await jsonBody(c);
    if (typeof b.from !== 'string' || !b.from) return httpError(c, 422, 'INVALID_REQUEST', 'invalid fields: from', [{ path: 'from', message: 'the step to re-drive from' }]);
    try {
      const id = await resolveRunId(store, c.req.param('id'));
      await workflows.retryFrom(id, b.from, b.input);
      await store.appendAudit({ actor: { kind: 'human', id: operatorOf(c).operator }, action: 'run.retried', subject: `run/${id}`, details: { from: b.from, via: 'console' } });
      return c.json({ runId: id, from: b.from, retried: true });
    } catch (err) {
      return failure(c, err, ['WORKFLOW_RUN_NOT_FOUND']);
    }
  });
  app.post('/v1/runs/:id/cancel', async (c) => {
    try {
      const id = await resolveRunId(store, c.req.param('id'));
      const did = await workflows.cancel(id, operatorOf(c).operator);
      return c.json({ runId: id, cancelled: did }, did ? 200 : 409);
    } catch (err) {
      return failure(c, err, ['WORKFLOW_RUN_NOT_FOUND']);
    }
  });

  // ---- agents and dead letters -----------------------------------------------------------------
  app.get('/v1/agents', async (c) => {
    const agents = await listAgents(d.nats, d.bus.subjects.registryBucket).catch(() => []);
    const now = Date.now();
    return c.json({
      agents: agents.map((a) => ({ ...a, heartbeatAgeS: Math.round((now - Date.parse(a.heartbeatAt)) / 1000), health: now - Date.parse(a.heartbeatAt) < 30_000 ? 'ok' : 'stale' })),
      processes: d.processes?.() ?? [],
    });
  });
  app.get('/v1/dlq', async (c) => {
    const r = await listDeadLetters(d.bus, { limit: Math.min(Number(c.req.query('limit') ?? 50) || 50, 500), ...(c.req.query('capability') ? { capability: c.req.query('capability') } : {}) });
    return c.json({ total: r.total, letters: await Promise.all(r.letters.map((l) => describeLetter(store, l))) });
  });
  app.get('/v1/dlq/:seq{[0-9]+}', async (c) => {
    const l = await getDeadLetter(d.bus, Number(c.req.param('seq')));
    if (!l) return httpError(c, 404, 'NOT_FOUND', `no dead letter ${c.req.param('seq')}`);
    let body: unknown = l.body;
    if (l.bodyEncoding === 'utf8') {
      try {
        body = JSON.parse(l.body);
      } catch {
        /* shown as text */
      }
    }
    return c.json({ ...(await describeLetter(store, l)), headers: l.headers, body, bodyEncoding: l.bodyEncoding, stream: l.stream, streamSeq: l.streamSeq });
  });
  // the same steps as `keel dlq redrive`: reopen the run's step (refused when it moved on, unless force), re-send, audit
  app.post('/v1/dlq/:seq{[0-9]+}/redrive', async (c) => {
    const seq = Number(c.req.param('seq'));
    const b = await jsonBody(c);
    const actor = { kind: 'human' as const, id: operatorOf(c).operator };
    try {
      const l = await getDeadLetter(d.bus, seq);
      if (!l) return httpError(c, 404, 'NOT_FOUND', `no dead letter ${seq}`);
      const rc = runCoordinates(l.headers);
      let reopened = false;
      if (rc && rc.role === 'step') {
        reopened = await workflows.redrive(rc.runId, rc.step, rc.attempt, { stream: l.stream, seq }, actor);
        if (!reopened && b.force !== true) {
          const st = (await store.get<RunState>('workflow_run', rc.runId))?.state;
          return httpError(c, 409, 'DLQ_STEP_MOVED_ON', `run ${rc.runId} step ${rc.step} is ${st?.steps[rc.step]?.status ?? 'gone'}, not the failed attempt ${rc.attempt} of this letter: re-driving could do the work twice. Retry the run from the step instead, or force.`);
        }
      }
      const r = await redriveDeadLetter(d.bus, seq);
      await store.appendAudit({ actor, action: 'dlq.redriven', subject: `dlq/${seq}`, details: { seq, stream: l.stream, subject: r.subject, messageId: r.messageId, streamSeq: r.streamSeq, reason: l.reason, via: 'console', ...(rc ? { runId: rc.runId, step: rc.step, attempt: rc.attempt, reopened } : {}) } });
      return c.json({ seq, messageId: r.messageId, subject: r.subject, duplicate: r.duplicate, run: rc ? { id: rc.runId, step: rc.step, reopened } : null });
    } catch (err) {
      return failure(c, err);
    }
  });

  // ---- audit, memory, products ---------------------------------------------------------------
  app.get('/v1/audit', async (c) => {
    const all = await store.exportAudit({ limit: 100_000 });
    const limit = Math.min(Number(c.req.query('limit') ?? 100) || 100, 1000);
    return c.json({ total: all.length, records: all.slice(-limit).reverse() });
  });
  app.get('/v1/audit/verify', async (c) => c.json(await store.verifyAudit()));
  app.get('/v1/memory/search', async (c) => {
    const text = (c.req.query('q') ?? '').trim();
    if (!text) return httpError(c, 422, 'INVALID_REQUEST', 'invalid fields: q', [{ path: 'q', message: 'what to recall, in words' }]);
    const { openMemory, createEmbeddings } = await import('../memory/index.ts');
    const cfg = d.config;
    let memory: Awaited<ReturnType<typeof openMemory>> | undefined;
    try {
      memory = await openMemory(cfg.memory, { embeddings: createEmbeddings({ spec: cfg.embeddings, modelsDir: cfg.modelsDir, modelEnv: cfg.modelEnv }), weights: cfg.memoryWeights, prefix: cfg.subjectPrefix });
      const hits = await memory.search({ text, limit: 20 });
      return c.json({ hits: hits.map((h) => ({ id: h.memory.id, text: h.memory.text, score: Math.round(h.score * 10_000) / 10_000, kind: h.memory.kind, customerId: h.memory.customerId ?? null, entityId: h.memory.entityId ?? null, createdAt: h.memory.createdAt })) });
    } catch (err) {
      return httpError(c, 503, errorCode(err) === 'INTERNAL' ? 'MEMORY_UNAVAILABLE' : errorCode(err), `memory search is unavailable: ${(err as Error).message}`);
    } finally {
      await memory?.close().catch(() => undefined);
    }
  });
  app.get('/v1/products', async (c) => {
    const page = await store.query<{ name?: string; lifecycle?: string; subscribers?: unknown[]; launch?: { runId?: string }; blocked?: unknown }>('product', { limit: 500 }).catch(() => ({ items: [], total: 0 }));
    const launches = await store.query<RunState>('workflow_run', { filter: { workflow: 'product-launch' }, sort: { startedAt: 'desc' }, limit: 100 }).catch(() => ({ items: [], total: 0 }));
    return c.json({
      products: page.items.map((e) => ({ id: e.entityId, name: e.state.name ?? null, lifecycle: e.state.lifecycle ?? null, subscribers: (e.state.subscribers ?? []).length, launchRunId: e.state.launch?.runId ?? null, blocked: e.state.blocked ?? null })),
      launches: launches.items.map((e) => ({ runId: e.entityId, status: e.state.status, startedAt: e.state.startedAt, spentUsd: e.state.spentUsd, productId: (e.state.input as { productId?: string } | undefined)?.productId ?? null })),
    });
  });
}

interface StateChange {
  cursor: number;
  pendingApprovals: number;
  /** entity types changed since the previous change (empty on the first) */
  types: string[];
}

/**
 * One poller of the change log's head and the approval queue, shared by every open console:
 * it runs while someone listens, and a new listener gets the last state at once.
 */
function stateWatcher(store: StateStore, everyMs = 1000): { subscribe(fn: (c: StateChange | Error) => void): () => void } {
  const listeners = new Set<(c: StateChange | Error) => void>();
  let last: StateChange | undefined;
  let timer: NodeJS.Timeout | undefined;
  // a poll in flight or one scheduled: at most one loop
  let active = false;
  const poll = async () => {
    try {
      const head = await store.headCursor();
      const pending = (await store.listApprovals({ state: 'pending', limit: 1000 })).length;
      if (last && head === last.cursor && pending === last.pendingApprovals) return;
      const types = last && head > last.cursor ? [...new Set((await store.changes({ since: last.cursor, limit: 500 })).events.map((e) => e.entityType))] : [];
      last = { cursor: head, pendingApprovals: pending, types };
      for (const fn of listeners) fn(last);
    } catch (err) {
      for (const fn of listeners) fn(err instanceof Error ? err : new Error(String(err)));
    }
  };
  const loop = async () => {
    await poll();
    timer = undefined;
    if (listeners.size > 0) timer = setTimeout(() => void loop(), everyMs);
    else active = false;
  };
  return {
    subscribe(fn) {
      listeners.add(fn);
      if (last) fn(last);
      if (!active) {
        active = true;
        void loop();
      }
      return () => {
        listeners.delete(fn);
        if (listeners.size === 0 && timer) {
          clearTimeout(timer);
          timer = undefined;
          active = false;
        }
      };
    },
  };
}
