/**
 * The context builder: what goes into one model call under a token budget, and how it reports
 * the split and the memories it injected.
 */
import { describe, expect, it } from 'vitest';
import { buildContext, contextSpanAttributes, estimateTokens, type RecallHit } from '../../memory/index.ts';

const hit = (id: string, text: string, score: number, createdAt = '2026-05-03T10:00:00.000Z'): RecallHit => ({
  score,
  components: { vector: score, lexical: 0, recency: 1, importance: 0.5 },
  memory: {
    id, text, kind: 'message', customerId: 'cus-1', entityType: 'ticket', entityId: `tkt-${id}`,
    source: { entityType: 'ticket', entityId: `tkt-${id}`, eventIds: [`ev-${id}`] }, writtenBy: 'memorizer', importance: 0.5,
    createdAt, storedAt: createdAt, status: 'active', embedding: { model: 'test', dim: 8 }, meta: { subject: `Subject ${id}` },
  },
});

const words = (n: number, w = 'word') => Array.from({ length: n }, () => w).join(' ');

describe('buildContext', () => {
  it('fits everything under a generous budget and reports each part', () => {
    const c = buildContext({
      system: 'You draft replies.',
      summary: 'The customer wants a refund.',
      recent: [{ role: 'user', content: 'I was charged twice.' }, { role: 'assistant', content: 'We are on it.' }, { role: 'user', content: 'Any news?' }],
      recalled: [hit('a', 'Refund for order 1234', 0.6), hit('b', 'Printer setup', 0.2)],
      instruction: 'Draft the reply.',
      budgetTokens: 1_000,
    });
    expect(c.memoryIds).toEqual(['a', 'b']);
    expect(c.dropped).toEqual({ recent: 0, memories: 0 });
    expect(c.messages.map((m) => m.role)).toEqual(['system', 'user', 'assistant', 'user', 'user']);
    expect(c.messages[0]!.content).toContain('The customer wants a refund.');
    expect(c.messages[0]!.content).toContain('(message ticket tkt-a "Subject a") Refund for order 1234');
    expect(c.messages[0]!.content).toContain('[2026-05-03]');
    expect(c.messages.at(-1)).toEqual({ role: 'user', content: 'Draft the reply.' });
    // the split adds up to the total, and each part is what its text estimates to
    const s = c.split;
    expect(s.total).toBe(s.system + s.instruction + s.summary + s.recent + s.memories);
    expect(s.system).toBe(estimateTokens('You draft replies.'));
    expect(s.instruction).toBe(estimateTokens('Draft the reply.'));
    expect(s.total).toBeLessThanOrEqual(s.budget);
    expect(s.memories).toBeGreaterThan(0);
  });

  it('keeps the newest messages when the budget is tight, and never exceeds it', () => {
    const recent = Array.from({ length: 20 }, (_, i) => ({ role: 'user' as const, content: `message ${i} ${words(40)}` }));
    const c = buildContext({ system: 'sys', recent, recalled: [], instruction: 'go', budgetTokens: 300 });
    expect(c.split.total).toBeLessThanOrEqual(300);
    expect(c.dropped.recent).toBeGreaterThan(0);
    const kept = c.messages.filter((m) => m.role === 'user' && m.content.startsWith('message'));
    expect(kept.length).toBe(20 - c.dropped.recent);
    // the kept ones are the newest, in order
    expect(kept.at(-1)!.content).toMatch(/^message 19 /);
    expect(kept[0]!.content).toMatch(new RegExp(`^message ${c.dropped.recent} `));
  });

  it('gives memories at most their share first, best first, and drops the rest when messages need the room', () => {
    const recalled = Array.from({ length: 10 }, (_, i) => hit(`m${i}`, `memory ${i} ${words(30)}`, 1 - i / 20));
    const recent = Array.from({ length: 30 }, (_, i) => ({ role: 'user' as const, content: `message ${i} ${words(30)}` }));
    const c = buildContext({ system: 'sys', recent, recalled, budgetTokens: 600, memoryShare: 0.3 });
    expect(c.split.memories).toBeLessThanOrEqual(Math.floor(600 * 0.3));
    expect(c.memoryIds.length).toBeGreaterThan(0);
    expect(c.memoryIds).toEqual(recalled.slice(0, c.memoryIds.length).map((h) => h.memory.id));
    expect(c.dropped.memories).toBe(10 - c.memoryIds.length);
    expect(c.split.total).toBeLessThanOrEqual(600);
  });

  it('uses leftover room for more memories when the conversation is short', () => {
    const recalled = Array.from({ length: 10 }, (_, i) => hit(`m${i}`, `memory ${i} ${words(30)}`, 1 - i / 20));
    const tight = buildContext({ system: 'sys', recent: [{ role: 'user', content: 'hi' }], recalled, budgetTokens: 600, memoryShare: 0.1 });
    expect(tight.split.memories).toBeGreaterThan(Math.floor(600 * 0.1));
    expect(tight.memoryIds.length).toBeGreaterThan(1);
  });

  it('cuts a summary to its share', () => {
    const c = buildContext({ system: 'sys', summary: words(2_000), budgetTokens: 400, summaryShare: 0.25 });
    expect(c.split.summary).toBeLessThanOrEqual(100 + estimateTokens('\n\nSummary of this conversation so far:\n'));
    expect(c.messages[0]!.content).toContain('…');
  });

  it('puts the split on span attributes (gen_ai.memory.record.count where the conventions have it, keel.memory.* otherwise)', () => {
    const c = buildContext({ system: 'sys', recalled: [hit('a', 'x', 0.5)], budgetTokens: 100 });
    const a = contextSpanAttributes(c, 'sqlite-vec:/tmp/m.db');
    expect(a['gen_ai.memory.record.count']).toBe(1);
    expect(a['gen_ai.memory.store.id']).toBe('sqlite-vec:/tmp/m.db');
    expect(a['keel.memory.ids']).toEqual(['a']);
    expect(a['keel.memory.tokens.total']).toBe(c.split.total);
    expect(a['keel.memory.tokens.memories']).toBe(c.split.memories);
  });
});

describe('buildContext (recentAs: text)', () => {
  it('renders the recent messages as a Thread block of the one user message, before the instruction', () => {
    const c = buildContext({
      system: 'sys',
      recent: [{ role: 'user', content: 'I was charged twice.', at: '2026-05-03T09:00:00Z', label: 'FROM alice@example.com via email — Refund' }, { role: 'assistant', content: 'On it.', label: 'TO alice@example.com via email' }],
      instruction: 'Draft the reply.',
      recentAs: 'text',
      budgetTokens: 1_000,
    });
    expect(c.messages.map((m) => m.role)).toEqual(['system', 'user']);
    expect(c.messages[1]!.content).toBe('Thread:\n[2026-05-03T09:00:00Z] FROM alice@example.com via email — Refund\nI was charged twice.\n\n---\n\nTO alice@example.com via email\nOn it.\n\nDraft the reply.');
  });
});
