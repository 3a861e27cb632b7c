/**
 * The marketer's bookkeeping capabilities of the `product-launch` workflow (no model): kick-off
 * (the launch's tasks, each with an owner and a due time), applying the operator's review of an
 * asset (an edit becomes a new version), scheduling, finishing, blocking the product on an
 * exception (with a notice to the operator), linking a subscriber's reply to the product, and the
 * periodic sweep for overdue tasks.
 */
import { z } from 'zod';
import { defineCapability, PermanentError, type TaskContext } from '../../runtime/index.ts';
import { CALENDAR_ITEM, CONTENT_ASSET, PRODUCT, TASK, type ProductException } from './entities.ts';
import { launchMailer, parseLaunchMessageId } from './mail.ts';
import {
  SLOTS, advanceLifecycle, approvedVersion, assetIdOf, blockProduct, calendarIdOf, change, finishTask, getAsset, getProduct, setCalendar, taskIdOf,
  type AssetState, type CalendarState, type ProductState, type TaskState,
} from './product.ts';

/** The workflow's steps that are tasks of someone, with their owner. */
export const LAUNCH_TASKS = [
  { step: 'research', title: 'Research the market', owner: 'researcher', due: 'work' },
  { step: 'write-page', title: 'Write the landing page', owner: 'writer', due: 'work' },
  { step: 'write-emails', title: 'Write the launch email sequence', owner: 'writer', due: 'work' },
  { step: 'write-posts', title: 'Write the launch posts', owner: 'writer', due: 'work' },
  { step: 'plan', title: 'Plan channels and calendar', owner: 'marketer', due: 'work' },
  { step: 'review-page', title: 'Review the landing page', owner: 'operator', due: 'review' },
  { step: 'review-email-1', title: 'Review the announcement email', owner: 'operator', due: 'review' },
  { step: 'review-email-2', title: 'Review the follow-up email', owner: 'operator', due: 'review' },
  { step: 'review-posts', title: 'Review the launch posts', owner: 'operator', due: 'review' },
  { step: 'publish-page', title: 'Publish the landing page', owner: 'marketer', due: 'launch' },
  { step: 'send-announcement', title: 'Send the announcement email', owner: 'marketer', due: 'launch' },
  { step: 'publish-posts', title: 'Publish the launch posts', owner: 'marketer', due: 'launch' },
  { step: 'send-follow-up', title: 'Send the follow-up email', owner: 'marketer', due: 'follow-up' },
] as const;
export type LaunchStep = (typeof LAUNCH_TASKS)[number]['step'];

const taskIds = (runId: string) => Object.fromEntries(LAUNCH_TASKS.map((t) => [t.step, taskIdOf(runId, t.step)])) as Record<LaunchStep, string>;

/** Sends the operator a notice (once per task and reason: the effect's key is the mail's idempotency key). */
async function notifyOperator(ctx: TaskContext<unknown>, name: string, subject: string, text: string): Promise<string> {
  const { sender } = launchMailer(ctx.config, ctx.secrets.SMTP_PASSWORD);
  const sent = await ctx.effect(name, (key) => ctx.connector('smtp', () => sender.send({ to: ctx.config.operatorEmail, subject, text, idempotencyKey: key, headers: { 'X-Keel-Notice': 'launch' } })));
  return sent.messageId;
}

// ---- kick-off ----------------------------------------------------------------------------------

export const KickoffInput = z.object({ productId: z.string().min(1), runId: z.string().min(1), at: z.iso.datetime({ offset: true }), followUpMs: z.number().int().min(0), budgetUsd: z.number().positive().optional() });
export const KickoffOutput = z.object({ productId: z.string(), at: z.string(), followUpAt: z.string(), tasks: z.record(z.string(), z.string()) });

export const kickoff = defineCapability({
  name: 'launch.kickoff',
  version: '1',
  description: 'Starts a launch: the product moves to researching; every task of the launch is created with its owner and due time.',
  input: KickoffInput,
  output: KickoffOutput,
  permissions: { entityTypes: [PRODUCT, TASK, 'workflow_run'] },
  costClass: 'none',
  async handler(ctx) {
    const { productId, runId, at, followUpMs, budgetUsd } = ctx.input;
    const p = await getProduct(ctx, productId);
    // one launch at a time: an earlier run still going refuses this one (a failed or cancelled one does not)
    const earlier = p.state.launch && p.state.launch.runId !== runId ? await ctx.state.get<{ status: string }>('workflow_run', p.state.launch.runId) : null;
    if (earlier && (earlier.state.status === 'running' || earlier.state.status === 'compensating')) {
      throw new PermanentError(`product '${productId}' is already being launched by run ${p.state.launch!.runId} (${p.state.lifecycle})`, { code: 'LAUNCH_IN_PROGRESS' });
    }
    const launchAt = new Date(at).getTime();
    const followUpAt = new Date(launchAt + followUpMs).toISOString();
    const now = Date.now();
    const { dueMs, reviewDueMs } = ctx.config.launch;
    const due = { work: now + dueMs, review: Math.max(launchAt, now + reviewDueMs), launch: launchAt + dueMs, 'follow-up': launchAt + followUpMs + dueMs };
    const ids = taskIds(runId);
    for (const t of LAUNCH_TASKS) {
      await change<TaskState>(ctx, TASK, ids[t.step], (cur) =>
        cur ? undefined : [{ type: 'created', data: { title: `${t.title} (${p.state.name})`, owner: t.owner, dueAt: new Date(due[t.due]).toISOString(), productId, runId, step: t.step, related: { type: PRODUCT, id: productId } } }],
      );
    }
    await change<ProductState>(ctx, PRODUCT, productId, (cur) =>
      cur?.state.launch?.runId === runId ? undefined : [{ type: 'launch_started', data: { runId, at: new Date(launchAt).toISOString(), ...(budgetUsd ? { budgetUsd } : {}), startedAt: new Date(now).toISOString() } }],
    );
    await advanceLifecycle(ctx, productId, 'researching', `launch ${runId} started`);
    return { productId, at: new Date(launchAt).toISOString(), followUpAt, tasks: ids };
  },
});

// ---- the operator's review ---------------------------------------------------------------------

export const ApplyReviewInput = z.object({
  productId: z.string().min(1),
  slot: z.string().min(1),
  decision: z.enum(['approved', 'rejected']),
  /** the operator's edited text: a new version of the asset */
  text: z.string().min(1).max(500_000).optional(),
  by: z.string().optional(),
  reason: z.string().optional(),
  taskId: z.string().optional(),
});
export const ApplyReviewOutput = z.object({ assetId: z.string(), decision: z.enum(['approved', 'rejected']), version: z.number().int(), edited: z.boolean() });

export const applyReview = defineCapability({
  name: 'launch.apply-review',
  version: '1',
  description: "Applies the operator's decision on an asset: approved (an edited text becomes a new version) or rejected (the launch stops, blocked with the reason).",
  input: ApplyReviewInput,
  output: ApplyReviewOutput,
  permissions: { entityTypes: [PRODUCT, TASK, CONTENT_ASSET] },
  costClass: 'none',
  async handler(ctx) {
    const { productId, slot, decision, text, by = 'operator', reason, taskId } = ctx.input;
    const assetId = assetIdOf(productId, slot);
    const asset = await getAsset(ctx, assetId);
    const current = asset.state.versions.find((v) => v.version === asset.state.current)!;
    if (decision === 'rejected') {
      await change<AssetState>(ctx, CONTENT_ASSET, assetId, (a) => (a?.state.status === 'rejected' ? undefined : [{ type: 'status_changed', data: { to: 'rejected', by, ...(reason ? { reason } : {}), version: current.version } }]));
      throw new PermanentError(`asset '${slot}' (${assetId}) rejected by ${by}${reason ? `: ${reason}` : ''}`, { code: 'LAUNCH_ASSET_REJECTED' });
    }
    const edited = text !== undefined && text.trim() !== current.body.trim();
    let version = current.version;
    await change<AssetState>(ctx, CONTENT_ASSET, assetId, (a) => {
      if (!a) return undefined;
      if (a.state.status === 'approved' || a.state.status === 'scheduled' || a.state.status === 'published') {
        version = a.state.approvedVersion ?? a.state.current;
        return undefined; // applied by an earlier delivery
      }
      version = edited ? a.state.current + 1 : a.state.current;
      return [
        ...(edited ? [{ type: 'version_added', data: { version, title: a.state.title, body: text, by, at: new Date().toISOString(), note: 'edited by the operator at review' } }] : []),
        { type: 'status_changed', data: { to: 'approved', by, version } },
      ];
    });
    if (taskId) await finishTask(ctx, taskId);
    await advanceLifecycle(ctx, productId, 'review', `asset '${slot}' approved by ${by}`);
    return { assetId, decision, version, edited };
  },
});

// ---- schedule ----------------------------------------------------------------------------------

export const ScheduleInput = z.object({ productId: z.string().min(1) });
export const ScheduleOutput = z.object({ pageAt: z.string(), announceAt: z.string(), postsAt: z.string(), followUpAt: z.string() });

export const schedule = defineCapability({
  name: 'launch.schedule',
  version: '1',
  description: 'Schedules the approved assets at their calendar times (the times the publishing steps wait for).',
  input: ScheduleInput,
  output: ScheduleOutput,
  permissions: { entityTypes: [PRODUCT, CONTENT_ASSET, CALENDAR_ITEM] },
  costClass: 'none',
  async handler(ctx) {
    const { productId } = ctx.input;
    const when: Record<string, string> = {};
    for (const slot of Object.values(SLOTS)) {
      const cal = await ctx.state.get<CalendarState>(CALENDAR_ITEM, calendarIdOf(productId, slot));
      if (!cal) throw new PermanentError(`no calendar item for '${slot}' of product '${productId}' (the plan step makes them)`, { code: 'LAUNCH_NO_CALENDAR' });
      when[slot] = cal.state.startsAt;
      await setCalendar(ctx, cal.entityId, { status: 'scheduled' });
      await change<AssetState>(ctx, CONTENT_ASSET, assetIdOf(productId, slot), (a) => (!a || a.state.status !== 'approved' ? undefined : [{ type: 'status_changed', data: { to: 'scheduled', at: cal.state.startsAt, version: a.state.approvedVersion } }]));
    }
    await advanceLifecycle(ctx, productId, 'scheduled', `scheduled: page ${when[SLOTS.page]}, follow-up ${when[SLOTS.email2]}`);
    return { pageAt: when[SLOTS.page]!, announceAt: when[SLOTS.email1]!, postsAt: when[SLOTS.posts]!, followUpAt: when[SLOTS.email2]! };
  },
});

// ---- finish ------------------------------------------------------------------------------------

export const FinishInput = z.object({ productId: z.string().min(1) });
export const FinishOutput = z.object({ productId: z.string(), lifecycle: z.string() });

export const finish = defineCapability({
  name: 'launch.finish',
  version: '1',
  description: 'Ends a launch: the product is done (replies keep arriving as tickets linked to it).',
  input: FinishInput,
  output: FinishOutput,
  permissions: { entityTypes: [PRODUCT] },
  costClass: 'none',
  async handler(ctx) {
    await advanceLifecycle(ctx, ctx.input.productId, 'done', 'the launch and its follow-up went out');
    return { productId: ctx.input.productId, lifecycle: 'done' };
  },
});

// ---- exceptions --------------------------------------------------------------------------------

export const BlockInput = z.object({ productId: z.string().min(1), runId: z.string().optional(), reason: z.string().min(1) });
export const BlockOutput = z.object({ productId: z.string(), kind: z.string(), blocked: z.boolean() });

/** The step that writes each slot's asset (a rejected asset is written again from there). */
const WRITE_STEP_OF: Record<string, string> = { page: 'write-page', 'email-1': 'write-emails', 'email-2': 'write-emails', posts: 'write-posts' };

/** What kind of exception a run's failure is, from its reason. */
export function exceptionKind(reason: string): ProductException['kind'] {
  if (/budget (refused|exceeded)/i.test(reason)) return 'budget';
  if (/rejected by/i.test(reason)) return 'rejected';
  return 'step_failed';
}

export const block = defineCapability({
  name: 'launch.block',
  version: '1',
  description: 'A launch run failed (a step past its retries, a budget refusal, a rejected asset): the product is blocked with the reason and the operator notified.',
  input: BlockInput,
  output: BlockOutput,
  permissions: { entityTypes: [PRODUCT], secrets: ['SMTP_PASSWORD'] },
  costClass: 'none',
  async handler(ctx) {
    const { productId, runId, reason } = ctx.input;
    const kind = exceptionKind(reason);
    const step = /step '([^']+)'/.exec(reason)?.[1];
    // where to resume: the failed step, or for a rejected asset the step that writes it again
    const resumeFrom = kind === 'rejected' && step?.startsWith('apply-') ? WRITE_STEP_OF[step.slice('apply-'.length)] ?? step : step;
    const blocked = await blockProduct(ctx, productId, { kind, reason: reason.slice(0, 4_000), at: new Date().toISOString(), ...(runId ? { runId } : {}), ...(step ? { step } : {}) });
    const p = await getProduct(ctx, productId);
    if (blocked) await notifyOperator(ctx, 'notify', `[Keel] Launch of ${p.state.name} blocked (${kind})`, `The launch of ${p.state.name} (${productId}) is blocked.\n\nReason: ${reason}\n${runId ? `\nRun: ${runId}\nResume it with: keel run retry ${runId}${resumeFrom ? ` --from ${resumeFrom}` : ''}${kind === 'rejected' ? ' (the asset is written again and comes back for review)' : ''}\n` : ''}`);
    ctx.logger.warn({ productId, runId, kind, reason }, 'launch blocked');
    return { productId, kind, blocked };
  },
});

export const CheckOverdueInput = z.object({}).loose();
export const CheckOverdueOutput = z.object({ checked: z.number().int(), overdue: z.array(z.string()) });

export const checkOverdue = defineCapability({
  name: 'launch.check-overdue',
  version: '1',
  description: 'Finds launch tasks past their due time: each blocks its product once, with the task, its owner and due time, and notifies the operator.',
  input: CheckOverdueInput,
  output: CheckOverdueOutput,
  permissions: { entityTypes: [PRODUCT, TASK], enqueue: ['launch.check-overdue'], secrets: ['SMTP_PASSWORD'] },
  costClass: 'none',
  async handler(ctx) {
    const now = new Date();
    const overdue: string[] = [];
    let checked = 0;
    for (const status of ['todo', 'in_progress'] as const) {
      for (let offset: number | null = 0; offset !== null; ) {
        const page: Awaited<ReturnType<typeof ctx.state.query<TaskState>>> = await ctx.state.query<TaskState>(TASK, { filter: { status, dueAt: { $lt: now.toISOString() } }, limit: 200, offset });
        offset = page.nextOffset;
        for (const t of page.items) {
          checked++;
          if (t.state.overdueAt || !t.state.productId) continue;
          const marked = await change<TaskState>(ctx, TASK, t.entityId, (cur) => (!cur || cur.state.overdueAt || cur.state.status === 'done' ? undefined : [{ type: 'updated', data: { overdueAt: now.toISOString() } }]));
          if (!marked?.state.overdueAt || marked.state.overdueAt !== now.toISOString()) continue;
          const p = await ctx.state.get<ProductState>(PRODUCT, t.state.productId);
          if (!p || p.state.lifecycle === 'done') continue;
          overdue.push(t.entityId);
          const reason = `task '${t.state.title}' (owner ${t.state.owner}) is overdue: it was due ${t.state.dueAt}`;
          await blockProduct(ctx, t.state.productId, { kind: 'overdue', reason, at: now.toISOString(), taskId: t.entityId, ...(t.state.runId ? { runId: t.state.runId } : {}), ...(t.state.step ? { step: t.state.step } : {}) });
          await notifyOperator(ctx, `notify-${t.entityId}`, `[Keel] Launch of ${p.state.name}: task overdue`, `${reason}.\n\nProduct: ${p.state.name} (${t.state.productId})\n`);
        }
      }
    }
    if (overdue.length) ctx.logger.warn({ overdue }, 'overdue launch tasks');
    return { checked, overdue };
  },
});

// ---- follow-ups --------------------------------------------------------------------------------

export const LinkReplyInput = z.object({ event: z.object({ entityType: z.string(), entityId: z.string(), type: z.string(), data: z.object({ inReplyTo: z.string().optional(), references: z.array(z.string()).optional(), from: z.string().optional(), messageId: z.string().optional(), subject: z.string().optional(), at: z.string().optional() }).loose() }).loose() });
export const LinkReplyOutput = z.object({ ticketId: z.string(), productId: z.string().optional(), linked: z.boolean() });

export const linkReply = defineCapability({
  name: 'launch.link-reply',
  version: '1',
  description: "Links a ticket whose message answers a launch email to the launch's product (the product view counts them).",
  input: LinkReplyInput,
  output: LinkReplyOutput,
  permissions: { entityTypes: [PRODUCT] },
  costClass: 'none',
  async handler(ctx) {
    const { event } = ctx.input;
    const ids = [event.data.inReplyTo, ...(event.data.references ?? [])];
    const found = ids.map(parseLaunchMessageId).find(Boolean);
    if (!found) return { ticketId: event.entityId, linked: false };
    const p = await ctx.state.get<ProductState>(PRODUCT, found.productId);
    if (!p) return { ticketId: event.entityId, productId: found.productId, linked: false };
    await change<ProductState>(ctx, PRODUCT, found.productId, (cur) =>
      cur?.state.followUps.some((f) => f.ticketId === event.entityId)
        ? undefined
        : [{ type: 'follow_up_received', data: { ticketId: event.entityId, from: String(event.data.from ?? 'unknown').slice(0, 320), ...(event.data.messageId ? { messageId: event.data.messageId.slice(0, 1_000) } : {}), ...(event.data.subject ? { subject: event.data.subject.slice(0, 500) } : {}), at: event.data.at ?? new Date().toISOString() } }],
    );
    ctx.logger.info({ productId: found.productId, ticketId: event.entityId, slot: found.slot }, 'reply to a launch email linked to its product');
    return { ticketId: event.entityId, productId: found.productId, linked: true };
  },
});

export { approvedVersion };
