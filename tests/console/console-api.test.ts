/**
 * The console's server side in-process: its files (gzipped, with a CSP) and the cost routes over
 * a real SQLite store, with the operator set as engine/auth.ts would.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gunzipSync } from 'node:zlib';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Hono } from 'hono';
import { REPO_ROOT, loadConfig } from '../../config/index.ts';
import { openStore, type StateStore } from '../../shared-state/index.ts';
import { mountConsole, groupCosts, type ConsoleDeps } from '../../engine/console.ts';
import { tempDir } from '../helpers/index.ts';
import { ALL_ENTITY_TYPES } from '../helpers/types.ts';

let dir: ReturnType<typeof tempDir>;
let store: StateStore;
let app: Hono;

const day = (d: number, h = 12) => new Date(Date.UTC(2026, 10, d, h)).toISOString();
const SEED = [
  { agent: 'triage', model: 'small-a', customerId: 'cus-a', costUsd: 0.001, tokensIn: 100, tokensOut: 10, time: day(1), details: { workflow: 'inbound-message' } },
  { agent: 'reply-suggester', model: 'small-a', customerId: 'cus-a', costUsd: 0.004, tokensIn: 400, tokensOut: 40, time: day(2), entityType: 'ticket', entityId: 'tkt-1', details: { workflow: 'inbound-message' } },
  { agent: 'writer', model: 'large-b', customerId: 'cus-b', costUsd: 0.02, tokensIn: 900, tokensOut: 300, time: day(2, 18), details: { workflow: 'product-launch' } },
  { agent: 'writer', model: 'large-b', customerId: null, costUsd: 0, tokensIn: 0, tokensOut: 0, time: day(3), details: { refused: true } },
];

beforeAll(async () => {
  dir = tempDir();
  store = await openStore(`sqlite:${dir.path}/s.db`, { types: ALL_ENTITY_TYPES });
  for (const r of SEED) await store.recordCost({ ...r, customerId: r.customerId ?? undefined });
  app = new Hono();
  app.use('/v1/*', async (c, next) => {
    c.set('keelOperator', { operator: 'ada', tokenId: 'env', via: 'bearer' });
    await next();
  });
  const cfg = loadConfig({ KEEL_DATA_DIR: dir.path, KEEL_TRACES_UI: 'http://jaeger.local:16686/' });
  mountConsole(app, { store, config: cfg, workflows: {} as ConsoleDeps['workflows'], bus: {} as ConsoleDeps['bus'], nats: {} as ConsoleDeps['nats'] });
});
afterAll(async () => {
  await store.close();
  dir.remove();
});

const get = async <T,>(path: string) => {
  const r = await app.request(path);
  return { status: r.status, body: (await r.json()) as T };
};
interface Totals { count: number; costUsd: number; tokensIn: number }

describe('the console server', () => {
  it('serves its files gzipped with a strict CSP, and nothing else from that folder', async () => {
    const r = await app.request('/', { headers: { 'accept-encoding': 'gzip, br' } });
    expect(r.status).toBe(200);
    expect(r.headers.get('content-encoding')).toBe('gzip');
    expect(r.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect(gunzipSync(Buffer.from(await r.arrayBuffer())).toString()).toBe(readFileSync(join(REPO_ROOT, 'console', 'index.html'), 'utf8'));
    const js = await app.request('/console/app.js');
    expect(js.headers.get('content-type')).toMatch(/^text\/javascript/);
    expect(await js.text()).toBe(readFileSync(join(REPO_ROOT, 'console', 'app.js'), 'utf8'));
    expect((await app.request('/console/nope.js')).status).toBe(404);
    expect((await app.request('/console/..%2Fpackage.json')).status).toBe(404);
  });

  it('groups the ledger by customer, workflow, agent, model and day, and lists the records behind a total', async () => {
    const sum = (rs: typeof SEED) => Math.round(rs.reduce((n, r) => n + r.costUsd, 0) * 1e9) / 1e9;
    const byModel = await get<{ totals: Totals; groups: Array<{ key: string; totals: Totals }> }>('/v1/cost?by=model&since=all');
    expect(byModel.status).toBe(200);
    expect(byModel.body.totals.costUsd).toBe(sum(SEED));
    expect(byModel.body.groups.map((g) => [g.key, g.totals.count, g.totals.costUsd])).toEqual([
      ['large-b', 2, sum(SEED.filter((r) => r.model === 'large-b'))],
      ['small-a', 2, sum(SEED.filter((r) => r.model === 'small-a'))],
    ]);
    const byWorkflow = await get<{ groups: Array<{ key: string | null; totals: Totals }> }>('/v1/cost?by=workflow&since=all');
    expect(Object.fromEntries(byWorkflow.body.groups.map((g) => [String(g.key), g.totals.count]))).toEqual({ 'inbound-message': 2, 'product-launch': 1, null: 1 });
    const byDay = await get<{ groups: Array<{ key: string; totals: Totals }> }>('/v1/cost?by=day&since=all');
    expect(byDay.body.groups.map((g) => g.key)).toEqual(['2026-11-03', '2026-11-02', '2026-11-01']); // newest first
    const byCustomer = await get<{ groups: Array<{ key: string | null; customer: { id: string } | null; refusals: number }> }>('/v1/cost?by=customer&since=all');
    expect(byCustomer.body.groups.find((g) => g.key === 'cus-a')?.customer).toEqual({ id: 'cus-a' });
    expect(byCustomer.body.groups.find((g) => g.key === null)?.refusals).toBe(1);
    const byTicket = await get<{ groups: Array<{ key: string | null; totals: Totals }> }>('/v1/cost?by=ticket&since=all&customer=cus-a');
    expect(byTicket.body.groups.map((g) => [g.key, g.totals.costUsd])).toEqual([['tkt-1', 0.004], [null, 0.001]]);

    const records = await get<{ totals: Totals; records: Array<{ agent: string; customerId: string }>; tracesUi: string }>('/v1/cost/records?since=all&model=small-a&day=2026-11-02');
    expect(records.body.records.map((r) => r.agent)).toEqual(['reply-suggester']);
    expect(records.body.totals).toMatchObject({ count: 1, costUsd: 0.004, tokensIn: 400 });
    expect(records.body.tracesUi).toBe('http://jaeger.local:16686');
    // the window: nothing in SEED is from the last 24 hours
    expect((await get<{ totals: Totals }>('/v1/cost?by=agent&since=24h')).body.totals.count).toBe(0);
  });

  it('refuses an unknown grouping with 422 naming the choices', async () => {
    const r = await get<{ error: string; issues: Array<{ path: string }> }>('/v1/cost?by=planet');
    expect(r.status).toBe(422);
    expect(r.body).toMatchObject({ error: 'INVALID_REQUEST', issues: [{ path: 'by' }] });
  });

  it('groupCosts totals exactly and sorts by cost', () => {
    const g = groupCosts(
      [0.1, 0.2, 0.3].map((costUsd, i) => ({ id: String(i), time: day(1), agent: i ? 'b' : 'a', capability: null, runId: null, customerId: null, entityType: null, entityId: null, model: null, traceId: null, details: null, tokensIn: 1, tokensOut: 1, tokensCached: 0, costUsd, computeMs: 1 })),
      'agent',
    );
    expect(g.map((x) => [x.key, x.totals.costUsd, x.totals.count])).toEqual([['b', 0.5, 2], ['a', 0.1, 1]]);
  });

  it('GET /v1/stream: two open consoles share one poll of the store each second, and both hear of a change', async () => {
    let polls = 0;
    const counted = new Proxy(store, {
      get(target, prop, receiver) {
        if (prop === 'headCursor') return () => (polls++, target.headCursor());
        const v = Reflect.get(target, prop, receiver) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    const live = new Hono();
    live.use('/v1/*', async (c, next) => {
      c.set('keelOperator', { operator: 'ada', tokenId: 'env', via: 'bearer' });
      await next();
    });
    mountConsole(live, { store: counted, config: loadConfig({ KEEL_DATA_DIR: dir.path }), workflows: {} as ConsoleDeps['workflows'], bus: {} as ConsoleDeps['bus'], nats: {} as ConsoleDeps['nats'] });
    const open = async () => {
      const ac = new AbortController();
      const r = await live.request('/v1/stream', { signal: ac.signal });
      const reader = r.body!.getReader();
      let text = '';
      const changes = async (n: number) => {
        while ((text.match(/event: change/g) ?? []).length < n) text += new TextDecoder().decode((await reader.read()).value);
        // server-sent events: blocks of `field: value` lines, one blank line between them
        return text
          .split('\n\n')
          .filter((block) => /^event: change$/m.test(block))
          .map((block) => JSON.parse(/^data: (.*)$/m.exec(block)![1]!) as { cursor: number; types: string[] });
      };
      return { changes, close: () => ac.abort() };
    };
    const a = await open();
    const b = await open();
    const [a0] = await a.changes(1);
    const [b0] = await b.changes(1);
    expect(b0!.cursor).toBe(a0!.cursor);
    await store.append('customer', 'cus-live', 0, [{ type: 'created', data: { name: 'Live' } }], { actor: { kind: 'system', id: 'test' } });
    const t0 = polls;
    const [, a1] = await a.changes(2);
    const [, b1] = await b.changes(2);
    expect(a1!.cursor).toBeGreaterThan(a0!.cursor);
    expect(b1).toEqual(a1);
    expect(a1!.types).toEqual(['customer']);
    // one poll a second for both: over 3.2 s at most 4 polls (one loop per console would make about 6)
    const t1 = polls;
    expect(t1).toBeGreaterThan(t0);
    await new Promise((r) => setTimeout(r, 3_200));
    expect(polls - t1).toBeGreaterThanOrEqual(2);
    expect(polls - t1).toBeLessThanOrEqual(4);
    a.close();
    b.close();
  });
});
