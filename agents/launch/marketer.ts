/**
 * `marketer` — the channel plan and the calendar (`launch.plan`, a LangGraph graph: channels →
 * calendar → save), and the launch's bookkeeping and publishing (operations.ts, publishing.ts).
 * The plan: the site always, email when the product has subscribers, social posts; tier 0 says
 * why from the product's fields, a small model (when configured) writes the rationale. The
 * calendar: the page, the announcement and the posts at the launch time, the follow-up email
 * `KEEL_LAUNCH_FOLLOW_UP_MS` later. Every `KEEL_LAUNCH_SWEEP_MS` it looks for overdue tasks.
 */
import { z } from 'zod';
import { loadConfig } from '../../config/index.ts';
import { defineAgent, defineGraphCapability, graphTask } from '../../runtime/index.ts';
import { CALENDAR_ITEM, LAUNCH_ENTITY_TYPES, PRODUCT, TASK } from './entities.ts';
import { SLOTS, TIER_NAME, assetIdOf, bestTier, calendarIdOf, callModel, change, finishTask, getProduct, setCalendar, startTask, type ProductState } from './product.ts';
import { templatePlan } from './templates.ts';
import { applyReview, block, checkOverdue, finish, kickoff, linkReply, schedule } from './operations.ts';
import { publishPage, publishPosts, recallEmails, sendEmails, unpublishPage, unpublishPosts } from './publishing.ts';

export const PlanInput = z.object({ productId: z.string().min(1), at: z.string().min(1), followUpAt: z.string().min(1), taskId: z.string().optional() });
export const PlanOutput = z.object({
  productId: z.string(),
  channels: z.array(z.object({ channel: z.string(), why: z.string() })),
  rationale: z.string(),
  tier: z.number().int().min(0).max(2),
  calendar: z.array(z.object({ slot: z.string(), calendarId: z.string(), channel: z.string(), at: z.string() })),
});
export type PlanOutput = z.infer<typeof PlanOutput>;

/** The graph's state (its channels). */
interface S {
  productId: string;
  at: string;
  followUpAt: string;
  taskId: string | undefined;
  channels: { channel: 'site' | 'email' | 'social'; why: string }[];
  rationale: string;
  tier: number;
  calendar: PlanOutput['calendar'];
  result: PlanOutput;
}

export const plan = defineGraphCapability({
  name: 'launch.plan',
  version: '1',
  description: 'The launch channel plan and calendar (what goes out when).',
  input: PlanInput,
  output: PlanOutput,
  permissions: { entityTypes: [PRODUCT, TASK, CALENDAR_ITEM] },
  costClass: 'small-model',
  timeoutMs: 180_000,
  toInput: (i) => ({ productId: i.productId, at: i.at, followUpAt: i.followUpAt, taskId: i.taskId }),
  toOutput: (v) => (v as unknown as S).result,
  // LangGraph loads with the first task, not in every idle process
  graph: async (checkpointer) => {
    const { Annotation, StateGraph, START, END } = await import('@langchain/langgraph');
    const State = Annotation.Root({
      productId: Annotation<string>(),
      at: Annotation<string>(),
      followUpAt: Annotation<string>(),
      taskId: Annotation<string | undefined>(),
      channels: Annotation<{ channel: 'site' | 'email' | 'social'; why: string }[]>(),
      rationale: Annotation<string>(),
      tier: Annotation<number>(),
      calendar: Annotation<PlanOutput['calendar']>(),
      result: Annotation<PlanOutput>(),
    });
    return new StateGraph(State)
      .addNode('pick-channels', async (s: S) => {
        const ctx = graphTask();
        if (s.taskId) await startTask(ctx, s.taskId);
        const p = (await getProduct(ctx, s.productId)).state;
        const t0 = templatePlan(p);
        const best = await bestTier(ctx, 'small');
        if (best === 0) return { channels: t0.channels, rationale: t0.rationale, tier: 0 };
        const text = await callModel(ctx, TIER_NAME[best], [
          { role: 'system', content: 'You plan the launch of a niche product for a one-person company. In at most 5 sentences, say how to use the channels given (and in which order) for this audience. Plain text.' },
          { role: 'user', content: `Product: ${p.name}\nPitch: ${p.pitch}\nAudience: ${p.audience}\nSubscribers: ${p.subscribers.length}\nChannels: ${t0.channels.map((c) => c.channel).join(', ')}\n${p.research ? `Research: ${p.research.summary}` : ''}` },
        ], 'plan');
        return { channels: t0.channels, rationale: text || t0.rationale, tier: text ? best : 0 };
      })
      .addNode('make-calendar', async (s: S) => {
        const ctx = graphTask();
        const p = (await getProduct(ctx, s.productId)).state;
        const items = [
          { slot: SLOTS.page, channel: 'site' as const, at: s.at, title: `Publish the landing page of ${p.name}` },
          { slot: SLOTS.email1, channel: 'email' as const, at: s.at, title: `Announcement email of ${p.name} to ${p.subscribers.length} subscriber(s)` },
          { slot: SLOTS.posts, channel: 'social' as const, at: s.at, title: `Launch posts of ${p.name}` },
          { slot: SLOTS.email2, channel: 'email' as const, at: s.followUpAt, title: `Follow-up email of ${p.name}` },
        ];
        const calendar: PlanOutput['calendar'] = [];
        for (const it of items) {
          const id = calendarIdOf(s.productId, it.slot);
          await setCalendar(ctx, id, { startsAt: it.at, title: it.title }, { title: it.title, startsAt: it.at, productId: s.productId, assetId: assetIdOf(s.productId, it.slot), channel: it.channel, status: 'planned' });
          calendar.push({ slot: it.slot, calendarId: id, channel: it.channel, at: it.at });
        }
        return { calendar };
      })
      .addNode('save', async (s: S) => {
        const ctx = graphTask();
        await change<ProductState>(ctx, PRODUCT, s.productId, (e) => (e?.state.plan?.rationale === s.rationale ? undefined : [{ type: 'planned', data: { channels: s.channels, rationale: s.rationale, tier: s.tier, at: new Date().toISOString() } }]));
        if (s.taskId) await finishTask(ctx, s.taskId);
        return { result: { productId: s.productId, channels: s.channels, rationale: s.rationale, tier: s.tier, calendar: s.calendar } };
      })
      .addEdge(START, 'pick-channels')
      .addEdge('pick-channels', 'make-calendar')
      .addEdge('make-calendar', 'save')
      .addEdge('save', END)
      .compile({ checkpointer });
  },
});

export default defineAgent({
  name: 'marketer',
  version: '1.0.0',
  description: 'Launch channel plan and calendar; kicks off, schedules and publishes launches; blocks a product on an exception; links replies.',
  entities: [...LAUNCH_ENTITY_TYPES],
  capabilities: [plan, kickoff, applyReview, schedule, finish, block, checkOverdue, linkReply, publishPage, unpublishPage, sendEmails, recallEmails, publishPosts, unpublishPosts],
  connectors: { smtp: { failureThreshold: 5, resetMs: 30_000 } },
  schedules: [{ capability: 'launch.check-overdue', everyMs: loadConfig().launch.sweepMs }],
});
