import type { Hono } from 'hono';
import { z } from 'zod';
import type { StateStore } from '../shared-state/index.ts';
import type { WorkflowEngine } from '../workflows/index.ts';

const StartRun = z.strictObject({ workflow: z.string().min(1), input: z.unknown().optional(), runId: z.string().regex(/^[A-Za-z0-9_-]{1,128}$/).optional(), customer: z.string().optional() });
const Decide = z.strictObject({ decision: z.enum(['approved', 'rejected']), text: z.string().max(100_000).optional(), reason: z.string().max(2_000).optional(), by: z.string().max(200).optional() });

/** Operator API over HTTP: runs and approvals (the same operations as the CLI). */
export function mountApi(app: Hono, o: { store: StateStore; workflows: WorkflowEngine }): void {
  const body = async (c: { req: { json(): Promise<unknown> } }) => {
    try {
      return { ok: true as const, value: await c.req.json() };
    } catch {
      return { ok: false as const };
    }
  };
  app.post('/v1/runs', async (c) => {
    const b = await body(c);
    if (!b.ok) return c.json({ error: 'invalid_json' }, 400);
    const p = StartRun.safeParse(b.value);
    if (!p.success) return c.json({ error: 'invalid_request', issues: p.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message })) }, 422);
    try {
      const r = await o.workflows.start(p.data.workflow, p.data.input ?? {}, { runId: p.data.runId, customer: p.data.customer });
      return c.json(r, r.created ? 201 : 200);
    } catch (err) {
      const e = err as { code?: string; message: string };
      return c.json({ error: e.code ?? 'error', message: e.message }, e.code === 'WORKFLOW_NOT_FOUND' ? 404 : 500);
    }
  });
  app.get('/v1/runs/:id', async (c) => {
    const r = await o.workflows.get(c.req.param('id'));
    if (!r) return c.json({ error: 'not_found' }, 404);
    const { definition: _d, ...state } = r.state;
    return c.json({ id: c.req.param('id'), ...state });
  });
  app.get('/v1/approvals', async (c) => c.json({ approvals: await o.store.listApprovals({ state: (c.req.query('state') ?? 'pending') as 'pending' }) }));
  app.post('/v1/approvals/:id', async (c) => {
    const b = await body(c);
    if (!b.ok) return c.json({ error: 'invalid_json' }, 400);
    const p = Decide.safeParse(b.value);
    if (!p.success) return c.json({ error: 'invalid_request', issues: p.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message })) }, 422);
    try {
      const r = await o.workflows.decideApproval(c.req.param('id'), p.data.decision, { kind: 'human', id: p.data.by ?? 'operator' }, p.data.text, p.data.reason);
      return c.json({ id: c.req.param('id'), decision: p.data.decision, ...r }, r.applied ? 200 : 409);
    } catch (err) {
      const e = err as { code?: string; message: string };
      return c.json({ error: e.code ?? 'error', message: e.message }, e.code === 'WORKFLOW_APPROVAL_NOT_FOUND' ? 404 : 500);
    }
  });
}
