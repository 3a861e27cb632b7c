/**
 * `writer` — capability `launch.write`, a LangGraph graph (draft → self-review → revise → save)
 * for one kind of launch asset: the landing page (`page`), the email sequence (`emails`: the
 * announcement and the follow-up) or the launch posts (`posts`).
 * - draft: tier 0 fills templates from the product's fields and the research; with a model (the
 *   large one when configured, else the small one) the model writes it, under the launch's budget;
 * - self-review: the same checks for every draft (the name, the price, a call to action, no
 *   placeholder, posts under 280 characters) and, with a model, the model's own review;
 * - revise (once, when the review found problems): the model rewrites, or tier 0 repairs;
 * - save: each asset gets a new version (status `review`) for the operator's approval.
 * A model that fails past its retries fails the step (the launch blocks with the reason); a
 * budget refusal does too (`budget refused: …`).
 */
import { z } from 'zod';
import { defineAgent, defineGraphCapability, graphTask } from '../../runtime/index.ts';
import { CONTENT_ASSET, LAUNCH_ENTITY_TYPES, PRODUCT, TASK } from './entities.ts';
import { addVersion, advanceLifecycle, bestTier, callModel, finishTask, getProduct, startTask, TIER_NAME, type ProductState, type TaskState } from './product.ts';
import { fixDraft, reviewDraft, splitPosts, templateDrafts, type Draft } from './templates.ts';
import type { TaskContext } from '../../runtime/index.ts';

export const WRITE_KINDS = ['page', 'emails', 'posts'] as const;
export const WriteInput = z.object({ productId: z.string().min(1), kind: z.enum(WRITE_KINDS), taskId: z.string().min(1).optional() });
export const WriteOutput = z.object({
  productId: z.string(),
  kind: z.enum(WRITE_KINDS),
  assets: z.array(z.object({ assetId: z.string(), slot: z.string(), version: z.number().int(), title: z.string(), body: z.string() })),
  tier: z.number().int().min(0).max(2),
  /** what the self-review found in the first draft (fixed before saving) */
  review: z.array(z.string()),
  revised: z.boolean(),
});
export type WriteOutput = z.infer<typeof WriteOutput>;

/** The graph's state (its channels). */
interface S {
  productId: string;
  kind: (typeof WRITE_KINDS)[number];
  taskId: string | undefined;
  drafts: Draft[];
  tier: number;
  problems: string[];
  revised: boolean;
  result: WriteOutput;
}

const INSTRUCTIONS = {
  page: 'Write the landing page in Markdown: a "# " heading with the product name, a "## " subheading with the promise, a short paragraph, a "### " section of 3 bullets on why it matters to the audience, the price when there is one, and a bold call to action. No HTML.',
  emails: 'Write two launch emails. Format exactly:\nSubject: <subject of the announcement>\n\n<body of the announcement>\n\n=====\n\nSubject: <subject of the follow-up>\n\n<body of the follow-up>\nEach body invites the reader to reply. Plain text.',
  posts: 'Write three short social posts announcing the launch, each under 280 characters, separated by a line with only ---. No hashtags spam, no emojis.',
} as const;

function brief(p: ProductState): string {
  return [
    `Product: ${p.name}`,
    `Pitch: ${p.pitch}`,
    `Audience: ${p.audience}`,
    p.description ? `Description: ${p.description}` : '',
    p.price ? `Price: ${p.price.amount} ${p.price.currency}` : '',
    p.research ? `Research summary: ${p.research.summary}` : '',
    p.research?.points.length ? `Evidence:\n${p.research.points.map((x) => `- ${x}`).join('\n')}` : '',
  ].filter(Boolean).join('\n');
}

/** The model's text as drafts of the kind (undefined when it does not have the expected shape). */
export function parseModelDrafts(kind: S['kind'], text: string, p: ProductState): Draft[] | undefined {
  const t = text.trim();
  if (!t) return undefined;
  if (kind === 'page') return [{ slot: 'page', kind: 'landing_page', title: `${p.name}: ${p.pitch}`.slice(0, 200), body: t }];
  if (kind === 'posts') {
    const posts = splitPosts(t);
    return posts.length ? [{ slot: 'posts', kind: 'post', title: `${p.name}: launch posts`, body: posts.join('\n\n---\n\n') }] : undefined;
  }
  const parts = t.split(/\n\s*={3,}\s*\n/).map((x) => x.trim());
  if (parts.length < 2) return undefined;
  const out: Draft[] = [];
  for (const [i, part] of parts.slice(0, 2).entries()) {
    const m = /^subject:\s*(.+)\n+([\s\S]+)$/i.exec(part);
    if (!m) return undefined;
    out.push({ slot: `email-${i + 1}`, kind: 'email', title: m[1]!.trim().slice(0, 300), body: m[2]!.trim() });
  }
  return out;
}

const asText = (kind: S['kind'], drafts: Draft[]) => (kind === 'emails' ? drafts.map((d) => `Subject: ${d.title}\n\n${d.body}`).join('\n\n=====\n\n') : drafts.map((d) => d.body).join('\n\n'));

async function ask(ctx: TaskContext<unknown>, tier: 1 | 2, key: string, system: string, user: string): Promise<string> {
  return callModel(ctx, TIER_NAME[tier], [{ role: 'system', content: system }, { role: 'user', content: user }], key);
}

export const write = defineGraphCapability({
  name: 'launch.write',
  version: '1',
  description: 'Drafts launch content (landing page, email sequence, posts), self-reviewed, saved as new versions for approval.',
  input: WriteInput,
  output: WriteOutput,
  permissions: { entityTypes: [PRODUCT, TASK, CONTENT_ASSET] },
  costClass: 'large-model',
  timeoutMs: 300_000,
  // a model that keeps failing fails the attempt soon; the step's retry policy decides what next
  maxDeliver: 3,
  ackWaitMs: 60_000,
  toInput: (i) => ({ productId: i.productId, kind: i.kind, taskId: i.taskId }),
  toOutput: (v) => (v as unknown as S).result,
  // LangGraph loads with the first task, not in every idle process
  graph: async (checkpointer) => {
    const { Annotation, StateGraph, START, END } = await import('@langchain/langgraph');
    const State = Annotation.Root({
      productId: Annotation<string>(),
      kind: Annotation<(typeof WRITE_KINDS)[number]>(),
      taskId: Annotation<string | undefined>(),
      drafts: Annotation<Draft[]>(),
      tier: Annotation<number>(),
      problems: Annotation<string[]>(),
      revised: Annotation<boolean>(),
      result: Annotation<WriteOutput>(),
    });
    return new StateGraph(State)
      .addNode('draft', async (s: S) => {
        const ctx = graphTask();
        if (s.taskId) await startTask(ctx, s.taskId);
        await advanceLifecycle(ctx, s.productId, 'drafting', `writing the ${s.kind}`);
        const p = (await getProduct(ctx, s.productId)).state;
        const tier = await bestTier(ctx, 'large');
        if (tier === 0) return { drafts: templateDrafts(s.kind, p, p.research?.points ?? []), tier: 0 };
        const text = await ask(ctx, tier, 'draft', `You write launch content for a one-person company. ${INSTRUCTIONS[s.kind]}`, brief(p));
        const drafts = parseModelDrafts(s.kind, text, p);
        // a model answer without the expected shape: the templates, said as much in the review
        return drafts ? { drafts, tier } : { drafts: templateDrafts(s.kind, p, p.research?.points ?? []), tier: 0, problems: [`the tier ${tier} answer did not have the expected shape; used the template`] };
      })
      .addNode('review', async (s: S) => {
        const ctx = graphTask();
        const p = (await getProduct(ctx, s.productId)).state;
        const problems = [...(s.problems ?? []), ...s.drafts.flatMap((d) => reviewDraft(d, p).map((x) => (s.drafts.length > 1 ? `${d.slot}: ${x}` : x)))];
        if (s.tier > 0) {
          const verdict = await ask(ctx, s.tier as 1 | 2, 'review', 'You review launch content before the founder sees it. Reply with OK if it is ready, else list its problems, one per line, starting with "- ".', `${brief(p)}\n\nDraft:\n${asText(s.kind, s.drafts)}`);
          if (!/^\s*ok\b/i.test(verdict)) problems.push(...verdict.split('\n').map((x) => x.replace(/^\s*[-*]\s*/, '').trim()).filter(Boolean).slice(0, 10));
        }
        return { problems };
      })
      .addNode('revise', async (s: S) => {
        const ctx = graphTask();
        const p = (await getProduct(ctx, s.productId)).state;
        let drafts = s.drafts;
        if (s.tier > 0) {
          const text = await ask(ctx, s.tier as 1 | 2, 'revise', `You revise launch content. Fix every problem listed, keep what works. ${INSTRUCTIONS[s.kind]}`, `${brief(p)}\n\nDraft:\n${asText(s.kind, s.drafts)}\n\nProblems:\n${s.problems.map((x) => `- ${x}`).join('\n')}`);
          drafts = parseModelDrafts(s.kind, text, p) ?? drafts;
        }
        // whatever wrote it, the checks a template can repair are repaired
        drafts = drafts.map((d) => fixDraft(d, p, reviewDraft(d, p)));
        return { drafts, revised: true };
      })
      .addNode('save', async (s: S) => {
        const ctx = graphTask();
        const at = new Date().toISOString();
        const assets: WriteOutput['assets'] = [];
        for (const d of s.drafts) {
          const v = await addVersion(ctx, { productId: s.productId, kind: d.kind, slot: d.slot }, { title: d.title, body: d.body, by: 'agent:writer', at, tier: s.tier, ...(s.problems.length ? { review: s.problems.slice(0, 50).map((x) => x.slice(0, 1_000)) } : {}) });
          assets.push({ ...v, slot: d.slot, title: d.title, body: d.body });
        }
        if (s.taskId) await finishTask(ctx, s.taskId);
        // the last draft of the launch done: the operator's review begins
        const runId = ctx.envelope.correlationId;
        if (runId) {
          const tasks = (await ctx.state.query<TaskState>(TASK, { filter: { runId, owner: 'writer' }, limit: 100 })).items;
          if (tasks.length && tasks.every((t) => t.state.status === 'done')) await advanceLifecycle(ctx, s.productId, 'review', 'every draft is ready for the operator');
        }
        ctx.logger.info({ productId: s.productId, kind: s.kind, tier: s.tier, assets: assets.map((a) => `${a.assetId}@${a.version}`), problems: s.problems.length, revised: !!s.revised }, 'launch content drafted');
        return { result: { productId: s.productId, kind: s.kind, assets, tier: s.tier, review: s.problems, revised: !!s.revised } };
      })
      .addEdge(START, 'draft')
      .addEdge('draft', 'review')
      .addConditionalEdges('review', (s: S) => (s.problems.length && !s.revised ? 'revise' : 'save'), ['revise', 'save'])
      .addEdge('revise', 'save')
      .addEdge('save', END)
      .compile({ checkpointer });
  },
});

export default defineAgent({
  name: 'writer',
  version: '1.0.0',
  description: 'Launch content: landing page, email sequence and posts, self-reviewed (templates at tier 0).',
  entities: [...LAUNCH_ENTITY_TYPES],
  capabilities: [write],
});
