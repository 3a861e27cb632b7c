/**
 * The fidelity policy: resolution (defaults, what was set, why), validation, the tier-0
 * extractive summary, and the sweep on a real sqlite-vec store (summarize raw memories past the
 * raw window, superseding them; forget what is past retention).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_POLICY, effectivePolicy, extractiveSummary, HashingEmbeddings, openMemory, policyProblems, sweepMemory, type MemoryInput } from '../../memory/index.ts';

const dir = mkdtempSync(join(tmpdir(), 'keel-policy-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const DAY = 86_400_000;
const NOW = new Date('2026-06-30T12:00:00.000Z');
const ago = (days: number) => new Date(NOW.getTime() - days * DAY).toISOString();

describe('effectivePolicy', () => {
  it('falls back to the defaults and says so', () => {
    const p = effectivePolicy('ticket', null);
    expect(p).toMatchObject({ entityType: 'ticket', ...DEFAULT_POLICY, source: 'default', why: { rawDays: 'default', retainDays: 'default', optOut: 'default' } });
  });
  it('takes what was set, field by field, and names who set it', () => {
    const p = effectivePolicy('ticket', { rawDays: 7, updatedBy: 'human:ada', updatedAt: '2026-06-01T00:00:00.000Z' });
    expect(p.rawDays).toBe(7);
    expect(p.retainDays).toBe(DEFAULT_POLICY.retainDays);
    expect(p.source).toBe('set');
    expect(p.why.rawDays).toBe('set by human:ada at 2026-06-01T00:00:00.000Z');
    expect(p.why.retainDays).toBe('default');
  });
  it('refuses nonsense', () => {
    expect(policyProblems({ rawDays: 10, retainDays: 5, optOut: false })).toEqual([expect.stringMatching(/retainDays \(5\) must be >= rawDays \(10\)/)]);
    expect(policyProblems({ rawDays: -1, retainDays: 0, optOut: false })).toHaveLength(2);
    expect(policyProblems(DEFAULT_POLICY)).toEqual([]);
  });
});

describe('extractiveSummary', () => {
  it('keeps the first sentence of each message, oldest first, dated, without repeats', () => {
    const s = extractiveSummary([
      { text: 'Any update on my refund? I am waiting since Monday.', createdAt: '2026-05-05T09:00:00Z', meta: { subject: 'Refund for order 1234' } },
      { text: 'I was charged twice for order 1234. Please refund the second charge.', createdAt: '2026-05-03T09:00:00Z' },
      { text: 'Any update on my refund? Still nothing.', createdAt: '2026-05-06T09:00:00Z' },
    ]);
    expect(s).toBe('About "Refund for order 1234". 2026-05-03: I was charged twice for order 1234. 2026-05-05: Any update on my refund?');
  });
});

describe('sweepMemory (sqlite-vec)', () => {
  const mem = (id: string, entityId: string, days: number, kind = 'message'): MemoryInput => ({
    id, text: `${id}: the customer wrote about order ${entityId}. More details follow here.`, kind, customerId: 'cus-1', entityType: 'ticket', entityId,
    source: { entityType: 'ticket', entityId, eventIds: [`ev-${id}`] }, writtenBy: 'memorizer', createdAt: ago(days), meta: { subject: `Order ${entityId}` },
  });

  it('summarizes raw memories past the raw window per entity (superseding them), forgets what is past retention, and is idempotent', async () => {
    const store = await openMemory(`sqlite-vec:${join(dir, 'sweep.db')}`, { embeddings: new HashingEmbeddings({ dim: 64 }), now: () => NOW });
    try {
      await store.put([
        mem('old-1', 'tkt-a', 40), mem('old-2', 'tkt-a', 35), // raw, past 30 days: one summary for tkt-a
        mem('old-3', 'tkt-b', 31), // raw, past 30 days: one summary for tkt-b
        mem('new-1', 'tkt-a', 2), // raw, recent: stays raw
        mem('ancient', 'tkt-c', 400), // past retention (365): forgotten
        mem('note', 'tkt-d', 100, 'note'), // not raw: stays
      ]);
      const r = await sweepMemory(store, { ticket: { rawDays: 30, retainDays: 365, optOut: false } }, { now: NOW });
      expect(r).toMatchObject({ summarized: 2, superseded: 3, expired: 1 });
      expect(await store.get('ancient')).toBeNull();
      const [sa, sb] = r.types[0]!.summaryIds;
      const summaryA = (await store.get(sa!))!;
      const summaryB = (await store.get(sb!))!;
      const byEntity = Object.fromEntries([summaryA, summaryB].map((s) => [s.entityId, s]));
      expect(byEntity['tkt-a']!.supersedes!.sort()).toEqual(['old-1', 'old-2']);
      expect(byEntity['tkt-a']!).toMatchObject({ kind: 'summary', customerId: 'cus-1', source: { entityType: 'ticket', entityId: 'tkt-a' }, createdAt: ago(35) });
      expect(byEntity['tkt-a']!.source.eventIds.sort()).toEqual(['ev-old-1', 'ev-old-2']);
      expect(byEntity['tkt-a']!.text).toContain('old-2: the customer wrote about order tkt-a.');
      expect(byEntity['tkt-b']!.supersedes).toEqual(['old-3']);
      // raw is superseded, not destroyed
      expect(await store.get('old-1')).toMatchObject({ status: 'superseded', supersededBy: byEntity['tkt-a']!.id });
      expect(await store.get('new-1')).toMatchObject({ status: 'active' });
      expect(await store.get('note')).toMatchObject({ status: 'active' });
      // superseded memories are not recalled
      const hits = await store.search({ text: 'customer wrote about order', customerId: 'cus-1', limit: 20 });
      expect(hits.map((h) => h.memory.id)).not.toContain('old-1');
      // running it again changes nothing
      const again = await sweepMemory(store, { ticket: { rawDays: 30, retainDays: 365, optOut: false } }, { now: NOW });
      expect(again).toMatchObject({ summarized: 0, superseded: 0, expired: 0 });
      // a later sweep past retention removes the superseded raw memories and the summaries too
      const later = await sweepMemory(store, { ticket: { rawDays: 30, retainDays: 365, optOut: false } }, { now: new Date(NOW.getTime() + 400 * DAY) });
      expect(later.expired).toBe(7); // the 3 superseded raw, new-1, the note and the 2 summaries
      expect(await store.count()).toBe(0);
    } finally {
      await store.close();
    }
  });

  it('uses the summarizer it is given (a model at tier 1) and a policy change applies from the next sweep', async () => {
    const store = await openMemory(`sqlite-vec:${join(dir, 'sweep2.db')}`, { embeddings: new HashingEmbeddings({ dim: 64 }), now: () => NOW });
    try {
      await store.put([mem('r1', 'tkt-x', 10), mem('r2', 'tkt-x', 9)]);
      const keep = await sweepMemory(store, { ticket: { rawDays: 30, retainDays: 365, optOut: false } }, { now: NOW });
      expect(keep.summarized).toBe(0);
      const seen: string[][] = [];
      const r = await sweepMemory(store, { ticket: { rawDays: 7, retainDays: 365, optOut: false } }, { now: NOW, summarize: (g) => (seen.push(g.map((m) => m.id).sort()), 'model summary: two messages about tkt-x') });
      expect(seen).toEqual([['r1', 'r2']]);
      expect(r.summarized).toBe(1);
      expect((await store.get(r.types[0]!.summaryIds[0]!))!.text).toBe('model summary: two messages about tkt-x');
    } finally {
      await store.close();
    }
  });
});
