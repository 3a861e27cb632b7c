import type { Context, Hono } from 'hono';
import { z } from 'zod';
import type { StateStore } from '../shared-state/index.ts';
import type { DiskGuard } from '../channels/index.ts';
import { resolveRunId, type WorkflowEngine, type WorkflowError } from '../workflows/index.ts';
import { errorCode, httpError, outageFailure } from './http.ts';
import { operatorOf } from './auth.ts';
import { mountConsole, type ConsoleDeps } from './console.ts';

/** `GET /v1/approvals?state=` values. */
const APPROVAL_STATES = ['pending', 'approved', 'rejected', 'expired', 'superseded'] as const;
const issuesOf = (e: z.ZodError) => e.issues.map((i) => ({ path: i.path.join('.'), message: i.message }));
const invalid = (issues: { path: string }[]) => `invalid fields: ${[...new Set(issues.map((i) => i.path || '(body)'))].join(', ')}`;

const StartRun = z.strictObject({ workflow: z.string().min(1), input: z.unknown().optional(), runId: z.string().regex(/^[A-Za-z0-9_-]{1,128}$/).optional(), customer: z.string().optional() });
/**
 * The decider is the authenticated operator (engine/auth.ts), recorded as actor
 * `human:<operator>`. A body naming `by` is refused (422) so nobody believes it is taken.
 */
const Decide = z.strictObject({
  decision: z.enum(['approved', 'rejected']),
  text: z.string().max(100_000).optional(),
  reason: z.string().max(2_000).optional(),
});

/**
 * A workflow error as an HTTP answer: bad input 422 (fields in `issues`), superseded 409 (naming
 * `current`), ambiguous id 400 (`candidates`), a full disk 507 `STORAGE_FULL`, the store
 * unreachable 503 `STATE_UNAVAILABLE`.
 */
function workflowFailure(c: Context, err: unknown, notFound: string, fieldPrefix = ''): Response {
  const outage = outageFailure(c, err);
  if (outage) return outage;
  const code = errorCode(err);
  const e = err as Partial<WorkflowError> & Error;
  if (code === 'WORKFLOW_INVALID_INPUT') return httpError(c, 422, code, e.message, (e.issues ?? []).map((i) => ({ path: `${fieldPrefix}${i.path}`, message: i.message })));
  if (code === 'WORKFLOW_APPROVAL_SUPERSEDED') return c.json({ error: code, message: e.message, current: e.current ?? null }, 409);
  if (code === 'WORKFLOW_AMBIGUOUS_ID') return c.json({ error: code, message: e.message, candidates: e.candidates ?? [] }, 400);
  return httpError(c, code === notFound ? 404 : 500, code, e.message);
}

/**
 * Operator API over HTTP: runs and approvals (the same operations as the CLI). With `disk`, a new
 * run is refused with 507 `STORAGE_FULL` while free space is below KEEL_MIN_FREE_MB; decisions on
 * approvals are still taken (they finish work already accepted).
 */
export function mountApi(app: Hono, o: { store: StateStore; workflows: WorkflowEngine; disk?: DiskGuard; console?: Omit<ConsoleDeps, 'store' | 'workflows'> }): void {
  // the web console's files at `/` and the routes its views read (docs/console.md)
  if (o.console) mountConsole(app, { ...o.console, store: o.store, workflows: o.workflows });
  const body = async (c: { req: { json(): Promise<unknown> } }) => {
    try {
      return { ok: true as const, value: await c.req.json() };
    } catch {
      return { ok: false as const };
    }
  };
  app.post('/v1/runs', async (c) => {
    const b = await body(c);
    if (!b.ok) return httpError(c, 400, 'INVALID_JSON', 'the body is not JSON');
    const p = StartRun.safeParse(b.value);
    if (!p.success) return httpError(c, 422, 'INVALID_REQUEST', invalid(issuesOf(p.error)), issuesOf(p.error));
    try {
      await o.disk?.admit();
      const r = await o.workflows.start(p.data.workflow, p.data.input ?? {}, { runId: p.data.runId, customer: p.data.customer });
      // the run's events carry the engine as their actor (WorkflowEngine.start takes none): the audit log names the operator
      if (r.created) await o.store.appendAudit({ actor: { kind: 'human', id: operatorOf(c).operator }, action: 'run.started', subject: `run/${r.runId}`, details: { workflow: p.data.workflow, runId: r.runId, traceId: r.traceId || null, via: 'http' } });
      return c.json(r, r.created ? 201 : 200);
    } catch (err) {
      return workflowFailure(c, err, 'WORKFLOW_NOT_FOUND', 'input.');
    }
  });
  app.get('/v1/runs/:id', async (c) => {
    let id: string;
    try {
      id = await resolveRunId(o.store, c.req.param('id')); // a unique prefix is enough
    } catch (err) {
      return workflowFailure(c, err, 'WORKFLOW_RUN_NOT_FOUND');
    }
    const r = await o.workflows.get(id);
    if (!r) return httpError(c, 404, 'WORKFLOW_RUN_NOT_FOUND', `no workflow run '${c.req.param('id')}'`);
    const { definition: _d, ...state } = r.state;
    return c.json({ id, ...state });
  });
  app.get('/v1/approvals', async (c) => {
    const state = c.req.query('state') ?? 'pending';
    if (!(APPROVAL_STATES as readonly string[]).includes(state)) {
      return httpError(c, 422, 'INVALID_REQUEST', `state takes ${APPROVAL_STATES.join(', ')}; got '${state}'`, [{ path: 'state', message: `one of ${APPROVAL_STATES.join(', ')}` }]);
    }
    return c.json({ approvals: await o.store.listApprovals({ state: state as 'pending' }) });
  });
  app.post('/v1/approvals/:id', async (c) => {
    const b = await body(c);
    if (!b.ok) return httpError(c, 400, 'INVALID_JSON', 'the body is not JSON');
    if (b.value && typeof b.value === 'object' && 'by' in b.value) {
      return httpError(c, 422, 'INVALID_REQUEST', 'invalid fields: by', [{ path: 'by', message: 'not accepted: the decider is the authenticated operator (the token or session of this request)' }]);
    }
    const p = Decide.safeParse(b.value);
    if (!p.success) return httpError(c, 422, 'INVALID_REQUEST', invalid(issuesOf(p.error)), issuesOf(p.error));
    try {
      const r = await o.workflows.decideApproval(c.req.param('id'), p.data.decision, { kind: 'human', id: operatorOf(c).operator }, p.data.text, p.data.reason);
      return c.json({ decision: p.data.decision, ...r }, r.applied ? 200 : 409);
    } catch (err) {
      return workflowFailure(c, err, 'WORKFLOW_APPROVAL_NOT_FOUND');
    }
  });
}
