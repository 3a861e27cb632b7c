/**
 * `keel memory …`: long-term memory as the operator sees it: recall with the score explained,
 * one memory with its provenance, operator notes, forgetting (audited), the fidelity policy, the
 * sweep that applies it, and re-embedding after a model change.
 */
import type { Command } from 'commander';
import { KeelError, type KeelConfig } from '../../config/index.ts';
import type { EffectivePolicy, Memory, MemoryStore, RecallHit } from '../../memory/index.ts';
import type { StateStore } from '../../shared-state/index.ts';
import { resolveCustomer } from '../../agents/index.ts';
import { memoryRuleTypes, policiesOf, setPolicy, MEMORY_POLICY } from '../../agents/memory/index.ts';
import { openCli, print, table } from '../context.ts';
import { CliError } from '../errors.ts';
import { intArg } from '../args.ts';

/** A memory command that found nothing, or was given something it cannot use. */
export class MemoryCliError extends KeelError {
  readonly details: Record<string, unknown> | undefined;
  constructor(code: 'MEMORY_NOT_FOUND' | 'MEMORY_BAD_SELECTOR' | 'MEMORY_REINDEX_INTERRUPTED', message: string, details?: Record<string, unknown>) {
    super(code, message);
    this.name = 'MemoryCliError';
    this.details = details;
  }
}

/** Opens the memory store KEEL_MEMORY names, with the configured embedder (the model loads here). */
export async function openCliMemory(cfg: KeelConfig, opts: { allowDimensionChange?: boolean } = {}): Promise<MemoryStore> {
  const { openMemory, createEmbeddings } = await import('../../memory/index.ts');
  const embeddings = createEmbeddings({ spec: cfg.embeddings, modelsDir: cfg.modelsDir, modelEnv: cfg.modelEnv });
  return openMemory(cfg.memory, { embeddings, weights: cfg.memoryWeights, prefix: cfg.subjectPrefix, allowDimensionChange: opts.allowDimensionChange });
}

/** What `keel memory search --json` prints per hit. */
export function hitView(h: RecallHit, explain: boolean) {
  const m = h.memory;
  return {
    id: m.id,
    text: m.text,
    score: Math.round(h.score * 10_000) / 10_000,
    kind: m.kind,
    customerId: m.customerId ?? null,
    entityId: m.entityId ?? null,
    source: { entityType: m.source.entityType ?? null, entityId: m.source.entityId ?? null, eventIds: m.source.eventIds },
    createdAt: m.createdAt,
    writtenBy: m.writtenBy,
    status: m.status,
    ...(explain ? { components: h.components } : {}),
  };
}

/** `keel memory show` (and `add`): every field, provenance spelled out. */
function memoryView(m: Memory) {
  return { ...m, customerId: m.customerId ?? null, entityId: m.entityId ?? null, entityType: m.entityType ?? null };
}

function printMemory(m: Memory): void {
  console.log(`${m.id}  ${m.kind}  ${m.status}${m.supersededBy ? ` (superseded by ${m.supersededBy})` : ''}`);
  console.log(`customer   ${m.customerId ?? '-'}`);
  console.log(`entity     ${m.entityType ?? '-'} ${m.entityId ?? ''}`.trimEnd());
  console.log(`source     ${m.source.entityType ?? '-'} ${m.source.entityId ?? ''}; events ${m.source.eventIds.join(', ') || '(none: an operator note)'}`);
  console.log(`written by ${m.writtenBy}; happened ${m.createdAt}; stored ${m.storedAt}`);
  console.log(`importance ${m.importance}; embedding ${m.embedding.model} (${m.embedding.dim} dimensions)`);
  if (m.supersedes?.length) console.log(`supersedes ${m.supersedes.join(', ')}`);
  if (m.meta && Object.keys(m.meta).length) console.log(`meta       ${JSON.stringify(m.meta)}`);
  console.log(`\n${m.text}`);
}

async function withMemory<T>(fn: (c: { cfg: KeelConfig; store: StateStore; memory: MemoryStore; features: Awaited<ReturnType<typeof openCli>>['features'] }) => Promise<T>, opts: { allowDimensionChange?: boolean } = {}): Promise<T> {
  const c = await openCli();
  let memory: MemoryStore | undefined;
  try {
    memory = await openCliMemory(c.cfg, opts);
    return await fn({ cfg: c.cfg, store: c.store, memory, features: c.features });
  } finally {
    await memory?.close().catch(() => undefined);
    await c.close();
  }
}

/** Counts memories of one entity type by status (pages through `list`). */
async function countByType(memory: MemoryStore, entityType: string): Promise<{ active: number; superseded: number }> {
  const out = { active: 0, superseded: 0 };
  for (const status of ['active', 'superseded'] as const) {
    let afterId: string | undefined;
    for (;;) {
      const page = await memory.list({ entityType, status, afterId, limit: 1000 });
      out[status] += page.length;
      if (page.length < 1000) break;
      afterId = page.at(-1)!.id;
    }
  }
  return out;
}

function bar(done: number, total: number, width = 30): string {
  const f = total > 0 ? done / total : 1;
  const n = Math.round(f * width);
  return `[${'#'.repeat(n)}${'-'.repeat(width - n)}] ${String(Math.round(f * 100)).padStart(3)}% ${done}/${total}`;
}

export function registerMemory(program: Command): void {
  const memory = program.command('memory').description('Long-term memory (KEEL_MEMORY): recall, provenance, operator notes, forgetting, the fidelity policy, re-embedding. See docs/memory.md.');

  memory
    .command('search')
    .argument('<query>', 'what to recall, in words (a paraphrase works: recall is by meaning and by words)')
    .option('--customer <who>', 'only this customer: a customer id (cus-…), an email address or a chat handle')
    .option('--type <entityType>', 'only memories about entities of this type (e.g. ticket)')
    .option('--kind <kind>', 'only this kind: message, summary, history, note')
    .option('--limit <n>', 'at most this many', intArg('--limit', 1), 10)
    .option('--all', 'include superseded memories (raw messages a summary replaced)')
    .option('--explain', 'show each score component (vector, lexical, recency, importance) before weighting')
    .option('--json', 'print JSON: [{ id, text, score, kind, customerId, entityId, source: { entityType, entityId, eventIds }, createdAt, writtenBy, status, components? }]')
    .description('Recall: hybrid search (vector similarity, BM25, recency, importance fused by KEEL_MEMORY_WEIGHTS), best first.')
    .action(async (query: string, o: { customer?: string; type?: string; kind?: string; limit: number; all?: boolean; explain?: boolean; json?: boolean }) => {
      await withMemory(async ({ store, memory: m }) => {
        const who = o.customer !== undefined ? await resolveCustomer(store, o.customer) : undefined;
        const hits = await m.search({ text: query, limit: o.limit, ...(who ? { customerId: who.id } : {}), ...(o.type ? { entityType: o.type } : {}), ...(o.kind ? { kind: o.kind } : {}), ...(o.all ? { includeSuperseded: true } : {}) });
        const view = hits.map((h) => hitView(h, !!o.explain));
        print(o.json, view, () => {
          if (view.length === 0) {
            console.log(`nothing recalled${who ? ` for ${o.customer}${who.found ? ` (${who.id})` : ` (no customer has that ${who.by}; searched for ${who.id})`}` : ''}`);
            return;
          }
          for (const v of view) {
            console.log(`${v.score.toFixed(3)}  ${v.id}  ${v.kind}  ${v.createdAt.slice(0, 10)}  customer ${v.customerId ?? '-'}  from ${v.source.entityType ?? '-'} ${v.source.entityId ?? ''}${v.status === 'superseded' ? '  (superseded)' : ''}`);
            if (v.components) console.log(`       vector ${v.components.vector.toFixed(3)}  lexical ${v.components.lexical.toFixed(3)}  recency ${v.components.recency.toFixed(3)}  importance ${v.components.importance.toFixed(3)}`);
            console.log(`       ${v.text.replace(/\s+/g, ' ').slice(0, 160)}`);
          }
        });
      });
    });

  memory
    .command('show')
    .argument('<id>', 'a memory id (mem-…)')
    .option('--json', 'print JSON: the memory with its provenance (source entity and events, customer, writer, times, embedding model)')
    .description('One memory with its provenance.')
    .action(async (id: string, o: { json?: boolean }) => {
      await withMemory(async ({ memory: m }) => {
        const found = await m.get(id);
        if (!found) throw new MemoryCliError('MEMORY_NOT_FOUND', `no memory '${id}' (see \`keel memory search\`)`, { id });
        print(o.json, memoryView(found), () => printMemory(found));
      });
    });

  memory
    .command('add')
    .requiredOption('--text <text>', 'what to remember')
    .option('--customer <who>', 'about this customer: a customer id, an email address or a chat handle')
    .option('--entity <id>', 'about this entity (e.g. a ticket id)')
    .option('--importance <0..1>', 'how much it matters in recall (default 0.7)')
    .option('--json', 'print JSON: the stored memory')
    .description('An operator note: remembered like everything else, written by operator:<KEEL_OPERATOR>.')
    .action(async (o: { text: string; customer?: string; entity?: string; importance?: string; json?: boolean }) => {
      const importance = o.importance === undefined ? 0.7 : Number(o.importance);
      if (!Number.isFinite(importance) || importance < 0 || importance > 1) throw new CliError('CLI_BAD_ARGUMENT', `--importance takes a number from 0 to 1 (got '${o.importance}')`);
      if (!o.text.trim()) throw new CliError('CLI_BAD_ARGUMENT', '--text is empty');
      await withMemory(async ({ cfg, store, memory: m }) => {
        const who = o.customer !== undefined ? await resolveCustomer(store, o.customer) : undefined;
        const entityType = o.entity ? (await store.typesOf(o.entity))[0] : undefined;
        if (o.entity && !entityType) throw new MemoryCliError('MEMORY_NOT_FOUND', `no entity '${o.entity}' in the store (see \`keel entity list\`)`, { entity: o.entity });
        const [stored] = await m.put([
          {
            id: `mem-note-${crypto.randomUUID()}`,
            text: o.text.trim(),
            kind: 'note',
            ...(who ? { customerId: who.id } : {}),
            ...(o.entity ? { entityType, entityId: o.entity } : {}),
            source: { ...(o.entity ? { entityType, entityId: o.entity } : {}), eventIds: [] },
            writtenBy: `operator:${cfg.operator}`,
            importance,
          },
        ]);
        await store.appendAudit({ actor: { kind: 'human', id: cfg.operator }, action: 'memory.note.added', subject: `memory/${stored!.id}`, details: { customerId: who?.id ?? null, entityId: o.entity ?? null, chars: stored!.text.length } });
        print(o.json, memoryView(stored!), () => console.log(`remembered ${stored!.id}${who ? ` for ${who.id}` : ''}${o.entity ? ` about ${entityType} ${o.entity}` : ''}`));
      });
    });

  memory
    .command('forget')
    .option('--customer <who>', 'every memory of this customer: a customer id, an email address or a chat handle')
    .option('--source <entityId>', 'every memory that came from (or is about) this entity')
    .option('--json', 'print JSON: { removed, selector, audit: { seq, hash } }')
    .description('Removes memories and their embeddings for good, and records it (count, selector, operator) in the audit log. The audit chain stays intact (`keel audit verify`).')
    .action(async (o: { customer?: string; source?: string; json?: boolean }) => {
      if (!!o.customer === !!o.source) throw new MemoryCliError('MEMORY_BAD_SELECTOR', 'give exactly one of --customer WHO or --source ENTITY_ID', { customer: o.customer ?? null, source: o.source ?? null });
      await withMemory(async ({ cfg, store, memory: m }) => {
        const who = o.customer !== undefined ? await resolveCustomer(store, o.customer) : undefined;
        const selector = who ? { customer: o.customer!, customerId: who.id } : { sourceEntityId: o.source! };
        const r = await m.forget(who ? { customerId: who.id } : { sourceEntityId: o.source! });
        // the record says what was forgotten by whom, not what it said
        const audit = await store.appendAudit({
          actor: { kind: 'human', id: cfg.operator },
          action: 'memory.forgotten',
          subject: who ? `customer/${who.id}` : `entity/${o.source}`,
          details: { selector, removed: r.removed, store: m.info.adapter, operator: cfg.operator },
        });
        print(o.json, { removed: r.removed, selector, audit: { seq: audit.seq, hash: audit.hash } }, () =>
          console.log(`forgot ${r.removed} memor${r.removed === 1 ? 'y' : 'ies'} of ${who ? `${o.customer} (${who.id})` : `entity ${o.source}`}; audit record ${audit.seq}`),
        );
      });
    });

  const policy = memory
    .command('policy')
    .option('--json', 'print JSON: { rules, policies: [{ entityType, rawDays, retainDays, optOut, source, why, updatedBy?, updatedAt?, memories: { active, superseded } }] }')
    .description('The fidelity policy per entity type: what becomes memory, how long it stays raw, how long it is kept, and why (default or who set it).')
    .action(async (o: { json?: boolean }) => {
      await withMemory(async ({ store, memory: m, features }) => {
        const stored = (await store.query(MEMORY_POLICY, { limit: 1000 })).items.map((e) => e.entityId);
        const types = [...new Set([...memoryRuleTypes(features), ...stored])].sort();
        const policies = await policiesOf((t, id) => store.get(t, id), types);
        const rules = features.flatMap((f) => (f.memory ?? []).map((r) => ({ feature: f.name, event: r.event })));
        const rows: Array<EffectivePolicy & { memories: { active: number; superseded: number }; remembered: string[] }> = [];
        for (const t of types) rows.push({ ...policies[t]!, memories: await countByType(m, t), remembered: rules.filter((r) => r.event.startsWith(`${t}.`)).map((r) => r.event) });
        print(o.json, { rules, policies: rows }, () => {
          for (const p of rows) {
            console.log(`${p.entityType}: ${p.optOut ? 'NOT remembered (opted out' : 'remembered ('}${p.why.optOut})`);
            console.log(`  what becomes memory: ${p.remembered.join(', ') || '(no rule)'}`);
            console.log(`  raw messages kept ${p.rawDays} day(s), then summarized (${p.why.rawDays})`);
            console.log(`  everything kept ${p.retainDays} day(s), then forgotten (${p.why.retainDays})`);
            console.log(`  now: ${p.memories.active} active, ${p.memories.superseded} superseded (kept until retention)`);
          }
          if (rows.length === 0) console.log('no feature declares memory rules');
        });
      });
    });

  policy
    .command('set')
    .requiredOption('--type <entityType>', 'the entity type the policy governs (e.g. ticket)')
    .option('--raw-days <n>', 'days raw memories stay before they are summarized', intArg('--raw-days', 0))
    .option('--retain-days <n>', 'days anything is kept before it is forgotten', intArg('--retain-days', 1))
    .option('--opt-out', 'remember nothing new about this type')
    .option('--opt-in', 'remember this type again')
    .option('--json', 'print JSON: { entityType, changed, before, after }')
    .description('Changes the policy of one entity type: an event on memory_policy/<type> and an audit record; applies forward (from the next write and sweep).')
    .action(async (own: { type: string; rawDays?: number; retainDays?: number; optOut?: boolean; optIn?: boolean; json?: boolean }, cmd: Command) => {
      // `--json` after `set` is also an option of `memory policy`: read it from either
      const o = { ...own, json: own.json || !!(cmd.optsWithGlobals() as { json?: boolean }).json };
      if (o.optOut && o.optIn) throw new CliError('CLI_CONFLICTING_OPTIONS', '--opt-out and --opt-in exclude each other');
      if (o.rawDays === undefined && o.retainDays === undefined && !o.optOut && !o.optIn) throw new CliError('CLI_BAD_ARGUMENT', 'nothing to set: give --raw-days, --retain-days, --opt-out or --opt-in');
      const c = await openCli();
      try {
        const known = c.features.flatMap((f) => f.entities.map((e) => e.name));
        if (!known.includes(o.type)) throw new CliError('CLI_BAD_ARGUMENT', `--type: no entity type '${o.type}' (known: ${known.join(', ')})`, { details: { valid: known } });
        const r = await setPolicy(c.store, { entityType: o.type, rawDays: o.rawDays, retainDays: o.retainDays, ...(o.optOut ? { optOut: true } : o.optIn ? { optOut: false } : {}) }, { kind: 'human', id: c.cfg.operator });
        print(o.json, { entityType: o.type, changed: r.changed, before: r.before, after: r.after }, () =>
          console.log(r.changed ? `${o.type}: raw ${r.after.rawDays} d, kept ${r.after.retainDays} d, ${r.after.optOut ? 'opted out' : 'remembered'} (was raw ${r.before.rawDays} d, kept ${r.before.retainDays} d, ${r.before.optOut ? 'opted out' : 'remembered'}); audited` : `${o.type}: unchanged`),
        );
      } finally {
        await c.close();
      }
    });

  memory
    .command('sweep')
    .option('--now <iso>', 'sweep as if it were this time (what the policy would do then)')
    .option('--json', 'print JSON: { at, summarized, superseded, expired, types }')
    .description('Applies the fidelity policy now (the memorizer also does it hourly): raw memories past the raw window become summaries (extractive here), memories past retention are forgotten.')
    .action(async (o: { now?: string; json?: boolean }) => {
      const now = o.now ? new Date(o.now) : new Date();
      if (!Number.isFinite(now.getTime())) throw new CliError('CLI_BAD_ARGUMENT', `--now takes an ISO time (got '${o.now}')`);
      await withMemory(async ({ cfg, store, memory: m, features }) => {
        const { sweepMemory } = await import('../../memory/index.ts');
        const policies = await policiesOf((t, id) => store.get(t, id), memoryRuleTypes(features));
        const r = await sweepMemory(m, policies, { now, writtenBy: `operator:${cfg.operator}` });
        print(o.json, r, () => {
          console.log(`swept at ${r.at}: ${r.summarized} summar${r.summarized === 1 ? 'y' : 'ies'} (superseding ${r.superseded} raw), ${r.expired} forgotten past retention`);
          if (r.types.length) table(['TYPE', 'SUMMARIZED', 'SUPERSEDED', 'EXPIRED'], r.types.map((t) => [t.entityType, String(t.summarized), String(t.superseded), String(t.expired)]));
        });
      });
    });

  memory
    .command('reindex')
    .option('--batch-size <n>', 'memories embedded per batch', intArg('--batch-size', 1), 64)
    .option('--json', 'print JSON: { reembedded, total, interrupted, model }')
    .description('Re-embeds every memory whose embedding model is not the current one (KEEL_EMBEDDINGS). A progress bar on a terminal, progress lines otherwise; Ctrl-C stops it and running it again resumes where it stopped.')
    .action(async (o: { batchSize: number; json?: boolean }) => {
      await withMemory(
        async ({ memory: m }) => {
          const ac = new AbortController();
          const onSigint = () => ac.abort();
          process.once('SIGINT', onSigint);
          const tty = !o.json && process.stderr.isTTY;
          let lastLine = -1;
          try {
            const r = await m.reindex({
              batchSize: o.batchSize,
              signal: ac.signal,
              onProgress: (done, total) => {
                if (o.json) return;
                if (tty) process.stderr.write(`\r${bar(done, total)}`);
                else {
                  const tenth = total > 0 ? Math.floor((done / total) * 10) : 10;
                  if (tenth !== lastLine || done === total) console.error(`reindex: ${done}/${total}`);
                  lastLine = tenth;
                }
              },
            });
            if (tty) process.stderr.write('\n');
            const interrupted = ac.signal.aborted;
            print(o.json, { reembedded: r.reembedded, total: r.total, interrupted, model: m.info.embeddingModel }, () =>
              console.log(interrupted ? `interrupted after ${r.reembedded} of ${r.total}: run \`keel memory reindex\` again to resume` : `re-embedded ${r.reembedded} of ${r.total} memories with ${m.info.embeddingModel}`),
            );
            if (interrupted) process.exitCode = 130;
          } finally {
            process.off('SIGINT', onSigint);
          }
        },
        { allowDimensionChange: true },
      );
    });
}
