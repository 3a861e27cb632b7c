/**
 * `researcher` — capability `launch.research`, a LangGraph graph (gather → search → synthesize):
 * - gather: the product's fields, the operator's notes and documents, and earlier customer
 *   messages from long-term memory that match the pitch and audience;
 * - search: the web-search connector (`KEEL_LAUNCH_SEARCH_URL`, a URL with `{query}` answering
 *   `{ results: [{ title, url, snippet }] }`) through its circuit breaker, recorded as a side
 *   effect; with none configured the research works from the notes alone and says so;
 * - synthesize: tier 0 picks the sentences closest to the pitch and audience; with a small model
 *   configured, the model writes the summary from them (under the launch's budget).
 * The research is written to the product (`researched`) and the task is marked done.
 */
import { z } from 'zod';
import { defineAgent, defineGraphCapability, graphTask, RetryableError } from '../../runtime/index.ts';
import { LAUNCH_ENTITY_TYPES, PRODUCT, TASK } from './entities.ts';
import { TIER_NAME, advanceLifecycle, bestTier, callModel, change, finishTask, getProduct, startTask, type ProductState } from './product.ts';
import { researchPoints, researchSummary, type Source } from './templates.ts';

export const ResearchInput = z.object({ productId: z.string().min(1), taskId: z.string().min(1).optional() });
export const ResearchOutput = z.object({
  productId: z.string(),
  summary: z.string(),
  points: z.array(z.string()),
  sources: z.array(z.object({ title: z.string(), url: z.string().optional(), snippet: z.string().optional() })),
  memories: z.number().int(),
  tier: z.number().int().min(0).max(2),
  note: z.string().optional(),
});
export type ResearchOutput = z.infer<typeof ResearchOutput>;

/** The graph's state (its channels). */
interface S {
  productId: string;
  taskId: string | undefined;
  memories: string[];
  sources: Source[];
  notes: string[];
  result: ResearchOutput;
}

/** The connector's answer, as `{ results: [{ title, url, snippet }] }` (a few common shapes accepted). */
export async function webSearch(urlTemplate: string, query: string, signal: AbortSignal): Promise<Source[]> {
  const url = urlTemplate.includes('{query}') ? urlTemplate.replace('{query}', encodeURIComponent(query)) : `${urlTemplate}${urlTemplate.includes('?') ? '&' : '?'}q=${encodeURIComponent(query)}`;
  const r = await fetch(url, { signal: AbortSignal.any([signal, AbortSignal.timeout(15_000)]), headers: { accept: 'application/json' } });
  if (r.status === 429 || r.status >= 500) throw new RetryableError(`search connector answered ${r.status}`);
  if (!r.ok) throw new Error(`search connector answered ${r.status}`);
  const body = (await r.json()) as { results?: unknown; items?: unknown };
  const list = (Array.isArray(body.results) ? body.results : Array.isArray(body.items) ? body.items : []) as Record<string, unknown>[];
  return list.slice(0, 10).map((x) => ({
    title: String(x.title ?? x.name ?? '').slice(0, 500),
    ...(x.url ?? x.link ? { url: String(x.url ?? x.link).slice(0, 2_000) } : {}),
    ...(x.snippet ?? x.description ?? x.content ? { snippet: String(x.snippet ?? x.description ?? x.content).slice(0, 2_000) } : {}),
  })).filter((x) => x.title || x.snippet);
}

const product = async (id: string) => (await getProduct(graphTask(), id)).state as ProductState;

export const research = defineGraphCapability({
  name: 'launch.research',
  version: '1',
  description: 'Research for a product launch: notes, documents, memory and web search (when configured), summarized.',
  input: ResearchInput,
  output: ResearchOutput,
  permissions: { entityTypes: [PRODUCT, TASK], memory: 'read' },
  costClass: 'small-model',
  timeoutMs: 180_000,
  ackWaitMs: 60_000,
  toInput: (i) => ({ productId: i.productId, taskId: i.taskId }),
  toOutput: (v) => (v as unknown as S).result,
  // LangGraph loads with the first task, not in every idle process
  graph: async (checkpointer) => {
    const { Annotation, StateGraph, START, END } = await import('@langchain/langgraph');
    const State = Annotation.Root({
      productId: Annotation<string>(),
      taskId: Annotation<string | undefined>(),
      memories: Annotation<string[]>(),
      sources: Annotation<Source[]>(),
      notes: Annotation<string[]>(),
      result: Annotation<ResearchOutput>(),
    });
    return new StateGraph(State)
      .addNode('gather', async (s: S) => {
        const ctx = graphTask();
        if (s.taskId) await startTask(ctx, s.taskId);
        await advanceLifecycle(ctx, s.productId, 'researching', 'research started');
        const p = await product(s.productId);
        const notes: string[] = [];
        if (!p.notes && !p.documents.length) notes.push('no notes or documents on the product');
        // earlier customer messages on the same need (recorded, so a replay reads them back)
        // recorded whatever it finds (or why it could not look), so a replay reads it back
        const recalled = await ctx.effect('recall', async () => {
          try {
            const mem = await ctx.memory();
            const hits = await mem.search({ text: `${p.pitch} ${p.audience}`, limit: 5 });
            return { texts: hits.filter((h) => h.score >= 0.35).map((h) => h.memory.text.slice(0, 2_000)) };
          } catch (err) {
            return { texts: [] as string[], error: (err as Error).message.slice(0, 200) };
          }
        });
        const memories = recalled.texts;
        if (recalled.error) notes.push(`long-term memory unavailable (${recalled.error})`);
        return { memories, notes };
      })
      .addNode('search', async (s: S) => {
        const ctx = graphTask();
        const p = await product(s.productId);
        const query = `${p.pitch} ${p.audience}`.slice(0, 300);
        // whether a connector is configured is part of the record too: a replay takes the same road
        const found = await ctx.effect('search', async () => {
          const url = ctx.config.launch.searchUrl;
          if (!url) return { configured: false, sources: [] as Source[] };
          return { configured: true, sources: await ctx.connector('search', () => webSearch(url, query, ctx.signal)) };
        });
        if (!found.configured) return { sources: [], notes: [...s.notes, 'no web-search connector configured (KEEL_LAUNCH_SEARCH_URL): research from the notes alone'] };
        return { sources: found.sources, notes: found.sources.length ? s.notes : [...s.notes, `the web search found nothing for "${query}"`] };
      })
      .addNode('synthesize', async (s: S) => {
        const ctx = graphTask();
        const p = await product(s.productId);
        const points = researchPoints(p, { sources: s.sources, memories: s.memories });
        let summary = researchSummary(p, points, { notes: p.notes ? 1 : 0, documents: p.documents.length, sources: s.sources.length, memories: s.memories.length });
        let tier: 0 | 1 | 2 = 0;
        const best = await bestTier(ctx, 'small');
        if (best > 0) {
          const text = await callModel(ctx, TIER_NAME[best as 1 | 2], [
            { role: 'system', content: 'You research a product launch for a one-person company. From the product and the evidence, write a research summary of at most 6 sentences: who the audience is, what they need, what they say, what the launch should stress. Plain text, no preamble.' },
            { role: 'user', content: `Product: ${p.name}\nPitch: ${p.pitch}\nAudience: ${p.audience}\n${p.description ? `Description: ${p.description}\n` : ''}\nEvidence:\n${points.map((x) => `- ${x}`).join('\n') || '(none)'}\n${s.sources.length ? `\nWeb results:\n${s.sources.map((x) => `- ${x.title}${x.snippet ? `: ${x.snippet}` : ''}`).join('\n')}` : ''}` },
          ], 'synthesize');
          if (text) {
            summary = text.slice(0, 20_000);
            tier = best;
          }
        }
        const note = s.notes.length ? s.notes.join('; ') : undefined;
        const result: ResearchOutput = { productId: s.productId, summary, points, sources: s.sources, memories: s.memories.length, tier, ...(note ? { note } : {}) };
        await change<ProductState>(ctx, PRODUCT, s.productId, (e) =>
          e?.state.research?.summary === summary && e.state.research.tier === tier ? undefined : [{ type: 'researched', data: { summary, points, sources: s.sources, tier, ...(note ? { note } : {}), at: new Date().toISOString() } }],
        );
        if (s.taskId) await finishTask(ctx, s.taskId);
        ctx.logger.info({ productId: s.productId, points: points.length, sources: s.sources.length, memories: s.memories.length, tier, note }, 'research done');
        return { result };
      })
      .addEdge(START, 'gather')
      .addEdge('gather', 'search')
      .addEdge('search', 'synthesize')
      .addEdge('synthesize', END)
      .compile({ checkpointer });
  },
});

export default defineAgent({
  name: 'researcher',
  version: '1.0.0',
  description: 'Launch research: the operator\'s notes and documents, memory and web search, summarized (tier 0 without a model).',
  entities: [...LAUNCH_ENTITY_TYPES],
  capabilities: [research],
  connectors: { search: { failureThreshold: 5, resetMs: 30_000 } },
});
