/**
 * `memorizer` — writes long-term memory from the change log, and applies the fidelity policy.
 *
 * - `memory.record` (a step of the `memory-<entity>-<event>` workflows, one run per event): asks
 *   the owning feature's memory rule what to remember about the event, and writes it with its
 *   provenance (source entity, the event's id, the customer, when, `memorizer`). Ids derive from
 *   the event id, so a retried or replayed task writes nothing twice. Nothing is written for an
 *   entity type whose policy opts out, or for what is already past its retention.
 * - `memory.sweep` (scheduled hourly by the runtime, one task per hour however many replicas):
 *   raw memories past the raw window become one summary per entity (tier 0 extractive; the small
 *   model when one is configured), memories past retention are forgotten.
 *
 * It knows no domain types: the rules come from the features (`Feature.memory`).
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { loadConfig } from '../../config/index.ts';
import { defineAgent, defineCapability, PermanentError, type MemoryRule, type TaskContext } from '../../runtime/index.ts';
import type { CommittedEvent } from '../../shared-state/index.ts';
import { extractiveSummary, sweepMemory, type Memory, type MemoryInput } from '../../memory/index.ts';
import { entityTypesOf, loadFeatures } from '../index.ts';
import { MEMORY_POLICY } from './entities.ts';
import { memoryRuleTypes, policiesOf } from './policies.ts';

const features = await loadFeatures(loadConfig().featureModules);
const RULES = new Map<string, MemoryRule[]>();
for (const f of features) for (const r of f.memory ?? []) RULES.set(r.event, [...(RULES.get(r.event) ?? []), r]);
const TYPES = memoryRuleTypes(features);
const ENTITY_TYPES = entityTypesOf(features);

/** How often the sweep runs. */
export const SWEEP_EVERY_MS = 3_600_000;

const EventSchema = z.looseObject({
  eventId: z.string().min(1),
  entityType: z.string().min(1),
  entityId: z.string().min(1),
  type: z.string().min(1),
  version: z.number().int().min(1),
  time: z.string().min(1),
  data: z.unknown(),
});
export const RecordInput = z.object({ event: EventSchema });
export const RecordOutput = z.object({
  /** ids of the memories written (or already there) */
  written: z.array(z.string()),
  /** earlier memories the new ones superseded */
  superseded: z.number().int().nonnegative(),
  /** why nothing was written */
  skipped: z.string().optional(),
});
export type RecordOutput = z.infer<typeof RecordOutput>;

/** A memory's id: the event and the memory's key within it. */
export const memoryIdFor = (eventId: string, key: string) => `mem-${createHash('sha256').update(`${eventId}\n${key}`).digest('hex').slice(0, 24)}`;

const DAY_MS = 86_400_000;

export const record = defineCapability({
  name: 'memory.record',
  version: '1',
  description: 'Writes the memories an entity event makes (per the owning feature\'s memory rule), with provenance.',
  input: RecordInput,
  output: RecordOutput,
  permissions: { entityTypes: [...TYPES, MEMORY_POLICY], memory: 'write' },
  costClass: 'none',
  timeoutMs: 120_000,
  concurrency: 4, // each record waits mostly on keel.db commits (claim, result); 4 in flight share them (group commit)
  async handler(ctx): Promise<RecordOutput> {
    const e = ctx.input.event as unknown as CommittedEvent;
    const rules = RULES.get(`${e.entityType}.${e.type}`) ?? [];
    if (rules.length === 0) return { written: [], superseded: 0, skipped: `no memory rule for ${e.entityType}.${e.type}` };
    const policy = (await policiesOf((t, id) => ctx.state.get(t, id), [e.entityType]))[e.entityType]!;
    if (policy.optOut) return { written: [], superseded: 0, skipped: `memory policy of '${e.entityType}' opts out (${policy.why.optOut})` };
    // the entity as it was right after the event: a replay writes the same memory
    const entity = await ctx.state.getAt(e.entityType, e.entityId, e.version);
    const history = rules.some((r) => r.needsHistory) ? (await ctx.state.history(e.entityType, e.entityId)).filter((h) => h.version <= e.version) : undefined;
    const horizon = Date.now() - policy.retainDays * DAY_MS;
    const memory = await ctx.memory();
    const inputs: MemoryInput[] = [];
    const replaces: { index: number; kind: string; entityId: string; text: string }[] = [];
    for (const rule of rules) {
      const drafts = rule.toMemory(e, entity, history);
      drafts.forEach((d, i) => {
        const createdAt = d.createdAt ?? e.time;
        if (Date.parse(createdAt) < horizon) return; // already past retention: not worth writing
        const id = memoryIdFor(e.eventId, `${rule.event}:${d.key ?? i}`);
        if (d.replacesPrevious) replaces.push({ index: inputs.length, kind: d.kind, entityId: d.entityId, text: d.text });
        inputs.push({
          id,
          text: d.text,
          kind: d.kind,
          ...(d.customerId ? { customerId: d.customerId } : {}),
          entityType: d.entityType,
          entityId: d.entityId,
          source: { entityType: e.entityType, entityId: e.entityId, eventIds: [e.eventId] },
          writtenBy: ctx.agent,
          importance: d.importance ?? 0.5,
          createdAt,
          meta: { ...(d.meta ?? {}), event: `${e.entityType}.${e.type}`, eventVersion: e.version },
        });
      });
    }
    if (inputs.length === 0) return { written: [], superseded: 0, skipped: 'the rule had nothing to remember' };
    // a new summary or history replaces the entity's earlier active one of its kind
    let superseded = 0;
    for (const r of replaces) {
      const input = inputs[r.index]!;
      const earlier = await memory.search({ text: r.text, entityId: r.entityId, kind: r.kind, limit: 50 });
      const ids = earlier.map((h) => h.memory.id).filter((id) => id !== input.id);
      if (ids.length) {
        input.supersedes = ids;
        superseded += ids.length;
      }
    }
    const written = await memory.put(inputs);
    ctx.span.setAttributes({ 'gen_ai.operation.name': 'create_memory', 'gen_ai.memory.store.id': memory.info.url, 'gen_ai.memory.record.count': written.length });
    ctx.logger.info({ event: `${e.entityType}.${e.type}`, entity: e.entityId, written: written.map((m) => m.id), superseded }, 'memories written');
    return { written: written.map((m) => m.id), superseded };
  },
});

export const SweepInput = z.object({ now: z.iso.datetime({ offset: true }).optional() });
export const SweepOutput = z.object({
  at: z.string(),
  summarized: z.number().int(),
  superseded: z.number().int(),
  expired: z.number().int(),
  /** tier of the summaries: 0 extractive, 1 the small model */
  tier: z.number().int().min(0).max(1),
  types: z.array(z.object({ entityType: z.string(), summarized: z.number().int(), superseded: z.number().int(), expired: z.number().int(), summaryIds: z.array(z.string()) })),
});
export type SweepOutput = z.infer<typeof SweepOutput>;

/** Tier 1 when the small model is there (and answers), else tier 0 (extractive). */
function summarizer(ctx: TaskContext<unknown>): { summarize: (m: Memory[]) => Promise<string>; tier: () => 0 | 1 } {
  let tier: 0 | 1 = 0;
  return {
    tier: () => tier,
    summarize: async (group) => {
      const fallback = extractiveSummary(group);
      if (!ctx.hasModel('small')) return fallback;
      try {
        const text = group
          .sort((a, b) => a.createdAt.localeCompare(b.createdAt))
          .map((m) => `[${m.createdAt.slice(0, 10)}] ${m.text}`)
          .join('\n\n')
          .slice(0, 16_000);
        const r = await ctx.llm('small', [
          { role: 'system', content: 'Summarize these messages from one customer conversation in at most 3 sentences for long-term memory: what was asked, what happened, dates that matter. Plain text only.' },
          { role: 'user', content: text },
        ], { urgency: 'low' }); // memory summaries can wait for a batch (KEEL_BATCH_WINDOW_MS)
        const out = r.text.trim();
        if (!out) return fallback;
        tier = 1;
        return out;
      } catch (err) {
        ctx.logger.warn({ err }, 'model summary failed: extractive summary instead');
        return fallback;
      }
    },
  };
}

export const sweep = defineCapability({
  name: 'memory.sweep',
  version: '1',
  description: 'Applies the fidelity policy: raw memories past the raw window become summaries; memories past retention are forgotten.',
  input: SweepInput,
  output: SweepOutput,
  permissions: { entityTypes: [MEMORY_POLICY], memory: 'write', enqueue: ['memory.sweep'] },
  costClass: 'small-model',
  timeoutMs: 600_000,
  ackWaitMs: 60_000,
  concurrency: 1,
  async handler(ctx): Promise<SweepOutput> {
    const now = ctx.input.now ? new Date(ctx.input.now) : new Date();
    if (!Number.isFinite(now.getTime())) throw new PermanentError(`bad 'now': ${ctx.input.now}`);
    const policies = await policiesOf((t, id) => ctx.state.get(t, id), TYPES);
    const s = summarizer(ctx);
    const memory = await ctx.memory();
    const timer = setInterval(() => ctx.working(), 20_000);
    try {
      const r = await sweepMemory(memory, policies, { now, summarize: s.summarize, writtenBy: ctx.agent, signal: ctx.signal });
      ctx.logger.info({ summarized: r.summarized, superseded: r.superseded, expired: r.expired }, 'memory swept');
      return { at: r.at, summarized: r.summarized, superseded: r.superseded, expired: r.expired, tier: s.tier(), types: r.types.map((t) => ({ entityType: t.entityType, summarized: t.summarized, superseded: t.superseded, expired: t.expired, summaryIds: t.summaryIds })) };
    } finally {
      clearInterval(timer);
    }
  },
});

export default defineAgent({
  name: 'memorizer',
  version: '1.0.0',
  description: 'Long-term memory from the change log (per each feature\'s memory rules), summarized and expired by the fidelity policy.',
  entities: ENTITY_TYPES,
  capabilities: [record, sweep],
  schedules: [{ capability: 'memory.sweep', everyMs: SWEEP_EVERY_MS, input: {} }],
  // embedding memories can wait; the agents answering customers get the cores first
  priority: 'background',
});
