/**
 * The launch feature's entity types: products with a lifecycle, their tasks (each with an owner
 * and a due time), content assets kept as versions, and calendar items (what goes out when).
 *
 * Lifecycle of a product: idea → researching → drafting → review → scheduled → launched →
 * follow-up → done, and `blocked` (with the reason) from any of them. Every change is an event
 * on the product, so `keel product show` prints the history from the log.
 */
import { z } from 'zod';
import { defineEntityType, type EntityTypeDef, type State } from '../../shared-state/index.ts';

const tags = z.array(z.string().min(1).max(64)).max(100).default([]);
const isoTime = z.iso.datetime({ offset: true });
const entityRef = z.strictObject({ type: z.string().min(1), id: z.string().min(1) });
const priority = z.enum(['low', 'normal', 'high', 'urgent']).default('normal');

export const PRODUCT = 'product';
export const TASK = 'task';
export const CONTENT_ASSET = 'content_asset';
export const CALENDAR_ITEM = 'calendar_item';

export const LIFECYCLE = ['idea', 'researching', 'drafting', 'review', 'scheduled', 'launched', 'follow-up', 'done', 'blocked'] as const;
export type Lifecycle = (typeof LIFECYCLE)[number];

/** Why a product is blocked: an overdue task, a step that failed after its retries, a budget refusal, a rejected asset. */
export const EXCEPTION_KINDS = ['overdue', 'step_failed', 'budget', 'rejected'] as const;
export const productException = z.strictObject({
  kind: z.enum(EXCEPTION_KINDS),
  reason: z.string().min(1).max(4_000),
  at: isoTime,
  /** the workflow run, step, task or asset it is about */
  runId: z.string().optional(),
  step: z.string().optional(),
  taskId: z.string().optional(),
  assetId: z.string().optional(),
});
export type ProductException = z.infer<typeof productException>;

const document = z.strictObject({ name: z.string().min(1).max(300), text: z.string().max(200_000) });
const source = z.strictObject({ title: z.string().max(500), url: z.string().max(2_000).optional(), snippet: z.string().max(2_000).optional() });
export const research = z.strictObject({
  summary: z.string().max(20_000),
  points: z.array(z.string().max(2_000)).max(50),
  sources: z.array(source).max(50),
  tier: z.number().int().min(0).max(2),
  /** what the research could not use (no search connector configured, no notes …) */
  note: z.string().max(2_000).optional(),
  at: isoTime,
});
export type Research = z.infer<typeof research>;

export const channelPlan = z.strictObject({
  channels: z.array(z.strictObject({ channel: z.enum(['site', 'email', 'social']), why: z.string().max(2_000) })).max(10),
  rationale: z.string().max(10_000),
  tier: z.number().int().min(0).max(2),
  at: isoTime,
});
export type ChannelPlan = z.infer<typeof channelPlan>;

const followUp = z.strictObject({ ticketId: z.string().min(1), from: z.string().max(320), messageId: z.string().max(1_000).optional(), subject: z.string().max(500).optional(), at: isoTime });
const publication = z.strictObject({ what: z.enum(['page', 'emails', 'posts']), assetId: z.string().optional(), path: z.string().max(2_000).optional(), count: z.number().int().nonnegative().optional(), at: isoTime });

export const productType = defineEntityType({
  name: PRODUCT,
  schemaVersion: 2,
  schema: z.strictObject({
    name: z.string().min(1).max(200),
    pitch: z.string().min(1).max(2_000),
    audience: z.string().min(1).max(2_000),
    description: z.string().max(20_000).optional(),
    price: z.strictObject({ amount: z.number().nonnegative(), currency: z.string().length(3) }).optional(),
    /** the operator's notes the researcher reads */
    notes: z.string().max(100_000).optional(),
    /** the operator's documents (name and text) the researcher reads */
    documents: z.array(document).max(50).default([]),
    /** who receives the launch emails */
    subscribers: z.array(z.email()).max(10_000).default([]),
    lifecycle: z.enum(LIFECYCLE).default('idea'),
    /** the lifecycle before it was blocked (where a resumed launch carries on) */
    resumeTo: z.enum(LIFECYCLE).optional(),
    blocked: productException.optional(),
    /** every exception the launch met, oldest first (kept after it is resolved) */
    exceptions: z.array(productException).max(1_000).default([]),
    launch: z.strictObject({ runId: z.string(), at: isoTime, budgetUsd: z.number().positive().optional(), startedAt: isoTime }).optional(),
    research: research.optional(),
    plan: channelPlan.optional(),
    publications: z.array(publication).max(1_000).default([]),
    /** replies to launch emails: tickets of the inbound flow linked to this product */
    followUps: z.array(followUp).max(10_000).default([]),
    owner: z.string().optional(),
    tags,
  }),
  searchFields: ['name', 'pitch', 'audience', 'description', 'tags'],
  events: {
    /** data: the new lifecycle and why; leaving `blocked` clears the block */
    lifecycle_changed: z.strictObject({ to: z.enum(LIFECYCLE), reason: z.string().max(4_000).optional() }),
    /** data: the exception; the product is blocked until a step moves it on */
    blocked: productException,
    launch_started: z.strictObject({ runId: z.string(), at: isoTime, budgetUsd: z.number().positive().optional(), startedAt: isoTime }),
    researched: research,
    planned: channelPlan,
    published: publication,
    unpublished: publication,
    follow_up_received: followUp,
  },
  reduce: (state, e) => {
    switch (e.type) {
      case 'lifecycle_changed': {
        const d = e.data as { to: Lifecycle };
        if (d.to === 'blocked') return { ...state, lifecycle: 'blocked' };
        const { blocked: _b, resumeTo: _r, ...rest } = state;
        return { ...rest, lifecycle: d.to };
      }
      case 'blocked': {
        const x = e.data as ProductException;
        const exceptions = [...((state.exceptions as ProductException[] | undefined) ?? []), x].slice(-1_000);
        const resumeTo = state.lifecycle === 'blocked' ? state.resumeTo : state.lifecycle;
        return { ...state, lifecycle: 'blocked', blocked: x, exceptions, ...(resumeTo ? { resumeTo } : {}) };
      }
      case 'launch_started':
        return { ...state, launch: e.data };
      case 'researched':
        return { ...state, research: e.data };
      case 'planned':
        return { ...state, plan: e.data };
      case 'published':
      case 'unpublished': {
        const p = e.data as z.infer<typeof publication>;
        const list = ((state.publications as z.infer<typeof publication>[] | undefined) ?? []).filter((x) => !(x.what === p.what && x.assetId === p.assetId));
        return { ...state, publications: e.type === 'published' ? [...list, p] : list };
      }
      case 'follow_up_received': {
        const f = e.data as z.infer<typeof followUp>;
        const list = (state.followUps as z.infer<typeof followUp>[] | undefined) ?? [];
        if (list.some((x) => x.ticketId === f.ticketId)) return state; // one link per ticket
        return { ...state, followUps: [...list, f] };
      }
      default:
        return state;
    }
  },
});

export const taskType = defineEntityType({
  name: TASK,
  schemaVersion: 2,
  schema: z.strictObject({
    title: z.string().min(1).max(500),
    description: z.string().max(20_000).optional(),
    status: z.enum(['todo', 'in_progress', 'blocked', 'done', 'cancelled']).default('todo'),
    priority,
    /** who does it: an agent's name (`researcher`, `writer`, `marketer`) or `operator` */
    owner: z.string().min(1).max(200).default('operator'),
    dueAt: isoTime.optional(),
    productId: z.string().optional(),
    /** the workflow run and step that do it */
    runId: z.string().optional(),
    step: z.string().optional(),
    related: entityRef.optional(),
    /** set once an overdue task has been reported (reported once) */
    overdueAt: isoTime.optional(),
    doneAt: isoTime.optional(),
    tags,
  }),
  searchFields: ['title', 'description', 'owner', 'tags'],
});

export const ASSET_KINDS = ['landing_page', 'email', 'post'] as const;
export type AssetKind = (typeof ASSET_KINDS)[number];
export const ASSET_STATUSES = ['draft', 'review', 'approved', 'rejected', 'scheduled', 'published', 'recalled'] as const;

export const assetVersion = z.strictObject({
  version: z.number().int().min(1),
  title: z.string().min(1).max(500),
  body: z.string().max(500_000),
  /** `agent:writer` or `human:<operator>` */
  by: z.string().min(1).max(200),
  at: isoTime,
  /** tier 0 (template), 1 or 2 (model); absent for an operator's edit */
  tier: z.number().int().min(0).max(2).optional(),
  note: z.string().max(4_000).optional(),
  /** what the writer's self-review found (and fixed) before handing it over */
  review: z.array(z.string().max(1_000)).max(50).optional(),
});
export type AssetVersion = z.infer<typeof assetVersion>;

export const contentAssetType = defineEntityType({
  name: CONTENT_ASSET,
  schemaVersion: 2,
  schema: z.strictObject({
    productId: z.string().min(1),
    kind: z.enum(ASSET_KINDS),
    /** `page`, `email-1`, `email-2`, `posts`: the asset's place in the launch */
    slot: z.string().min(1).max(64),
    title: z.string().min(1).max(500),
    status: z.enum(ASSET_STATUSES).default('draft'),
    versions: z.array(assetVersion).max(1_000).default([]),
    /** the latest version's number */
    current: z.number().int().min(0).default(0),
    /** the version the operator approved (what is published) */
    approvedVersion: z.number().int().min(1).optional(),
    approvedBy: z.string().optional(),
    rejectedReason: z.string().max(4_000).optional(),
    scheduledAt: isoTime.optional(),
    publishedAt: isoTime.optional(),
    tags,
  }),
  searchFields: ['title', 'slot', 'kind', 'tags'],
  events: {
    /** data: a new version (the writer's draft, or the operator's edit); it becomes `current` */
    version_added: assetVersion,
    /** data: the new status, by whom, why */
    status_changed: z.strictObject({ to: z.enum(ASSET_STATUSES), by: z.string().max(200).optional(), reason: z.string().max(4_000).optional(), version: z.number().int().min(1).optional(), at: isoTime.optional() }),
  },
  reduce: (state: State, e) => {
    switch (e.type) {
      case 'version_added': {
        const v = e.data as AssetVersion;
        const versions = (state.versions as AssetVersion[] | undefined) ?? [];
        if (versions.some((x) => x.version === v.version)) return state; // a redelivered task adds a version once
        return { ...state, versions: [...versions, v], current: v.version, title: v.title };
      }
      case 'status_changed': {
        const d = e.data as { to: (typeof ASSET_STATUSES)[number]; by?: string; reason?: string; version?: number; at?: string };
        const next: State = { ...state, status: d.to };
        if (d.to === 'approved') Object.assign(next, { approvedVersion: d.version ?? state.current, ...(d.by ? { approvedBy: d.by } : {}) });
        if (d.to === 'rejected' && d.reason) next.rejectedReason = d.reason;
        if (d.to === 'scheduled' && d.at) next.scheduledAt = d.at;
        if (d.to === 'published' && d.at) next.publishedAt = d.at;
        return next;
      }
      default:
        return state;
    }
  },
});

export const calendarItemType = defineEntityType({
  name: CALENDAR_ITEM,
  schemaVersion: 2,
  schema: z.strictObject({
    title: z.string().min(1).max(500),
    startsAt: isoTime,
    endsAt: isoTime.optional(),
    location: z.string().max(500).optional(),
    attendees: z.array(z.string()).default([]),
    productId: z.string().optional(),
    assetId: z.string().optional(),
    channel: z.enum(['site', 'email', 'social', 'other']).default('other'),
    status: z.enum(['planned', 'scheduled', 'published', 'cancelled']).default('planned'),
    publishedAt: isoTime.optional(),
    related: entityRef.optional(),
  }),
  searchFields: ['title', 'location', 'attendees', 'channel'],
});

/** Every entity type the launch feature owns. */
export const LAUNCH_ENTITY_TYPES: readonly EntityTypeDef[] = [productType, taskType, contentAssetType, calendarItemType];
