/**
 * The short-term context of one model call, built under a token budget: the task's instruction,
 * the entity's summary, recalled long-term memories and the most recent messages. What does not
 * fit is left out (oldest messages first, lowest-scored memories first), and the result says how
 * the budget was split and which memories the model was shown, so the task can record both (the
 * span's attributes, the task's output) and `keel why` can list them.
 *
 * ```ts
 * import { buildContext, contextSpanAttributes } from './memory/index.ts';
 * const c = buildContext({ system: 'You draft replies…', summary: t.summary, recent, recalled: hits, instruction: 'Draft the reply.', budgetTokens: 3_000 });
 * await ctx.llm('small', c.messages);
 * ctx.span.setAttributes(contextSpanAttributes(c));   // keel.memory.tokens.*, gen_ai.memory.record.count
 * c.memoryIds;                                        // recorded on the task's output
 * ```
 *
 * Token counts are an estimate, not a tokenizer: ceil(characters / 4), the usual rule of thumb
 * for English with BPE tokenizers (it overcounts code and undercounts CJK). It is cheap, needs no
 * model files, and a budget only has to be about right.
 */
import type { RecallHit } from './types.ts';

export type ContextRole = 'system' | 'user' | 'assistant';

export interface ContextMessage {
  role: ContextRole;
  content: string;
}

export interface ContextInput {
  /** the model's instructions (always kept; cut to the budget only if it alone is over it) */
  system: string;
  /** what this call asks for, sent last as the user's turn (always kept) */
  instruction?: string;
  /** the entity's running summary (e.g. the ticket's); at most `summaryShare` of the budget */
  summary?: string;
  /** recent messages of the conversation, oldest first; the newest are kept first */
  recent?: readonly { role: 'user' | 'assistant'; content: string; at?: string; label?: string }[];
  /** recalled long-term memories, best first (as `MemoryStore.search` returns them) */
  recalled?: readonly RecallHit[];
  /** the whole context's budget in (estimated) tokens */
  budgetTokens: number;
  /**
   * `messages` (default): each recent message is its own chat turn; `text`: they are rendered,
   * oldest first, as a `Thread:` block of the final user message, before the instruction
   */
  recentAs?: 'messages' | 'text';
  /** share of the budget memories may take before recent messages are placed (default 0.3) */
  memoryShare?: number;
  /** share of the budget the summary may take (default 0.25) */
  summaryShare?: number;
  /** token estimator (default {@link estimateTokens}) */
  estimate?: (text: string) => number;
}

/** Estimated tokens per part of the context. */
export interface ContextSplit {
  system: number;
  instruction: number;
  summary: number;
  recent: number;
  memories: number;
  total: number;
  budget: number;
}

export interface BuiltContext {
  messages: ContextMessage[];
  split: ContextSplit;
  /** the ids of the memories the model is shown, in the order it sees them */
  memoryIds: string[];
  /** how many recent messages and recalled memories did not fit */
  dropped: { recent: number; memories: number };
}

/** ceil(chars / 4): a cheap estimate of BPE tokens (see the module's note). */
export function estimateTokens(text: string): number {
  return Math.ceil(text.length / 4);
}

/** `text` cut so that it estimates to at most `tokens` (with an ellipsis when cut). */
function fit(text: string, tokens: number, est: (t: string) => number): string {
  if (tokens <= 0) return '';
  if (est(text) <= tokens) return text;
  let lo = 0;
  let hi = text.length;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (est(`${text.slice(0, mid)}…`) <= tokens) lo = mid;
    else hi = mid - 1;
  }
  return lo > 0 ? `${text.slice(0, lo)}…` : '';
}

const day = (iso: string) => iso.slice(0, 10);

/** One recalled memory as the model sees it: date, kind, provenance and text. */
export function renderMemory(h: RecallHit): string {
  const m = h.memory;
  const subject = typeof m.meta?.subject === 'string' ? ` "${m.meta.subject}"` : '';
  const about = m.source.entityId ? ` ${m.source.entityType ?? 'entity'} ${m.source.entityId}${subject}` : '';
  return `- [${day(m.createdAt)}] (${m.kind}${about}) ${m.text.replace(/\s+/g, ' ').trim()}`;
}

/**
 * Builds the messages of one model call within `budgetTokens`. Order of priority: system and
 * instruction, the summary (up to its share), memories (up to their share, best first), recent
 * messages (newest first) with what is left, then more memories if room remains.
 */
export function buildContext(input: ContextInput): BuiltContext {
  const est = input.estimate ?? estimateTokens;
  const budget = Math.max(0, Math.floor(input.budgetTokens));
  const memoryShare = input.memoryShare ?? 0.3;
  const summaryShare = input.summaryShare ?? 0.25;
  const recalled = input.recalled ?? [];
  const recent = input.recent ?? [];

  const instruction = fit(input.instruction ?? '', budget, est);
  let left = budget - est(instruction);
  const system = fit(input.system, left, est);
  left -= est(system);

  const summaryText = input.summary ? fit(input.summary.trim(), Math.min(left, Math.floor(budget * summaryShare)), est) : '';
  const summaryBlock = summaryText ? `\n\nSummary of this conversation so far:\n${summaryText}` : '';
  left -= est(summaryBlock);

  const memoryHeader = '\n\nEarlier, from long-term memory (most relevant first; dates are when it happened):\n';
  const chosen: { hit: RecallHit; line: string }[] = [];
  let memTokens = 0;
  const tryMemories = (cap: number) => {
    for (const hit of recalled) {
      if (chosen.some((c) => c.hit === hit)) continue;
      const line = renderMemory(hit);
      const cost = est(line) + 1 + (chosen.length === 0 ? est(memoryHeader) : 0);
      if (memTokens + cost > cap || cost > left) continue;
      chosen.push({ hit, line });
      memTokens += cost;
      left -= cost;
    }
  };
  tryMemories(Math.floor(budget * memoryShare));

  // newest messages first, each whole; the first that does not fit ends the window
  const kept: ContextMessage[] = [];
  let recentTokens = 0;
  for (let i = recent.length - 1; i >= 0; i--) {
    const r = recent[i]!;
    const head = [r.at ? `[${r.at}]` : '', r.label ?? ''].filter(Boolean).join(' ');
    const content = `${head ? `${head}\n` : ''}${r.content.trim()}`;
    const cost = est(content) + 4; // role and separators
    if (cost > left) break;
    kept.unshift({ role: r.role, content });
    recentTokens += cost;
    left -= cost;
  }
  // room left over: more memories
  tryMemories(memTokens + left);

  // the model sees memories in score order (the recall's), whatever order they were placed in
  chosen.sort((a, b) => recalled.indexOf(a.hit) - recalled.indexOf(b.hit));
  const memoryBlock = chosen.length ? `${memoryHeader}${chosen.map((c) => c.line).join('\n')}` : '';
  const messages: ContextMessage[] = [{ role: 'system', content: `${system}${summaryBlock}${memoryBlock}` }];
  if (input.recentAs === 'text') {
    const thread = kept.length ? `Thread:\n${kept.map((k) => k.content).join('\n\n---\n\n')}` : '';
    const user = [thread, instruction].filter(Boolean).join('\n\n');
    if (user) messages.push({ role: 'user', content: user });
  } else {
    messages.push(...kept);
    if (instruction) messages.push({ role: 'user', content: instruction });
  }

  const split: ContextSplit = {
    system: est(system),
    instruction: est(instruction),
    summary: est(summaryBlock),
    recent: recentTokens,
    memories: memTokens,
    total: 0,
    budget,
  };
  split.total = split.system + split.instruction + split.summary + split.recent + split.memories;
  return { messages, split, memoryIds: chosen.map((c) => c.hit.memory.id), dropped: { recent: recent.length - kept.length, memories: recalled.length - chosen.length } };
}

/**
 * The context's split as span attributes. The OpenTelemetry GenAI conventions define
 * `gen_ai.memory.record.count` and `gen_ai.memory.store.id` (memory spans) but nothing for a
 * context's token split, so that goes under `keel.memory.*`.
 */
export function contextSpanAttributes(c: BuiltContext, storeId?: string): Record<string, string | number | string[]> {
  return {
    'gen_ai.memory.record.count': c.memoryIds.length,
    ...(storeId ? { 'gen_ai.memory.store.id': storeId } : {}),
    'keel.memory.ids': c.memoryIds,
    'keel.memory.tokens.budget': c.split.budget,
    'keel.memory.tokens.total': c.split.total,
    'keel.memory.tokens.system': c.split.system,
    'keel.memory.tokens.instruction': c.split.instruction,
    'keel.memory.tokens.summary': c.split.summary,
    'keel.memory.tokens.recent': c.split.recent,
    'keel.memory.tokens.memories': c.split.memories,
    'keel.memory.dropped.recent': c.dropped.recent,
    'keel.memory.dropped.memories': c.dropped.memories,
  };
}
