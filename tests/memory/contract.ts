/**
 * The memory store's contract: one suite, run against every adapter (sqlite-vec.test.ts,
 * qdrant.int.test.ts). `open()` gives a store at a fresh location (or at `location`, to reopen
 * one or open a second instance on it); `raw()` counts what the backend itself holds, behind the
 * store's back, so forgetting can be proven to remove vectors and lexical entries too.
 *
 * Store mechanics run on `HashingEmbeddings` (deterministic, no model files) and on
 * `SynonymEmbeddings` below, a hashing embedder that maps a few synonyms to one word, so a
 * paraphrase is near in vector space while sharing no word with its target.
 */
import { describe, expect, it } from 'vitest';
import { HashingEmbeddings, isMemoryError, type KeelEmbeddings, type MemoryInput, type MemoryStore, type ScoreComponents } from '../../memory/index.ts';

export interface OpenArgs {
  embeddings: KeelEmbeddings;
  /** reopen this location (returned by an earlier open); a fresh one when omitted */
  location?: string;
  weights?: ScoreComponents;
  now?: () => Date;
  allowDimensionChange?: boolean;
}

export interface MemoryContractTarget {
  name: string;
  open(a: OpenArgs): Promise<{ store: MemoryStore; location: string } | { skip: string }>;
  /** what the backend holds at `location`: memory rows, vectors and lexical (FTS / sparse) entries */
  raw(location: string): Promise<{ rows: number; vectors: number; lexical: number }>;
}

const NOW = new Date('2026-06-01T00:00:00.000Z');
const now = () => NOW;
const daysAgo = (d: number) => new Date(NOW.getTime() - d * 86_400_000).toISOString();

/** Hashing embeddings after mapping synonyms to one canonical word: vectors see meaning the lexical index does not. */
export class SynonymEmbeddings extends HashingEmbeddings {
  static readonly SYNONYMS: Record<string, string> = { reimbursement: 'refund', repaid: 'refund', money: 'refund', invoice: 'bill', billing: 'bill', login: 'signin', password: 'signin' };
  override readonly id: string;
  constructor(dim = 64, id?: string) {
    super({ dim });
    this.id = id ?? `synonyms:${dim}`;
  }
  override embedSync(text: string): number[] {
    const canon = text.replace(/[\p{L}\p{N}]+/gu, (w) => SynonymEmbeddings.SYNONYMS[w.toLowerCase()] ?? w);
    return super.embedSync(canon);
  }
}

let seq = 0;
function mem(text: string, o: Partial<MemoryInput> = {}): MemoryInput {
  seq++;
  return { id: `m-${String(seq).padStart(4, '0')}`, text, kind: 'message', writtenBy: 'test', source: { entityType: 'ticket', entityId: `T-${seq}`, eventIds: [`e-${seq}`] }, createdAt: daysAgo(1), ...o };
}

async function rejection(p: Promise<unknown>): Promise<Error & { code?: string }> {
  try {
    await p;
  } catch (err) {
    return err as Error & { code?: string };
  }
  throw new Error('expected a rejection');
}

function dot(a: number[], b: number[]): number {
  let d = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    d += a[i]! * b[i]!;
    na += a[i]! * a[i]!;
    nb += b[i]! * b[i]!;
  }
  return na && nb ? d / Math.sqrt(na * nb) : 0;
}

export function memoryStoreContract(t: MemoryContractTarget): void {
  describe(`memory store contract: ${t.name}`, () => {
    type Ctx = { skip: (why: string) => void };
    const opened: MemoryStore[] = [];
    const open = async (ctx: Ctx, a: Partial<OpenArgs> = {}) => {
      const r = await t.open({ embeddings: new SynonymEmbeddings(), now, ...a });
      if ('skip' in r) {
        ctx.skip(r.skip);
        throw new Error('unreachable');
      }
      opened.push(r.store);
      return r;
    };
    const closeAll = async () => {
      for (const s of opened.splice(0)) await s.close();
    };
    const test = (name: string, fn: (ctx: Ctx) => Promise<void>) =>
      it(name, async (ctx) => {
        try {
          await fn(ctx);
        } finally {
          await closeAll();
        }
      });

    test('put/get keeps text, provenance, defaults and the embedding model', async (ctx) => {
      const { store } = await open(ctx);
      const input = mem('Customer reports the export button does nothing', {
        customerId: 'c-1', entityType: 'ticket', entityId: 'T-9', source: { entityType: 'ticket', entityId: 'T-9', eventIds: ['ev-1', 'ev-2'] }, meta: { subject: 'Export broken' },
      });
      const [stored] = await store.put([input]);
      expect(stored).toMatchObject({ id: input.id, text: input.text, kind: 'message', customerId: 'c-1', entityType: 'ticket', entityId: 'T-9', writtenBy: 'test', importance: 0.5, status: 'active', createdAt: input.createdAt, storedAt: NOW.toISOString() });
      expect(stored!.source).toEqual({ entityType: 'ticket', entityId: 'T-9', eventIds: ['ev-1', 'ev-2'] });
      expect(stored!.embedding).toEqual({ model: 'synonyms:64', dim: 64 });
      expect(await store.get(input.id!)).toEqual(stored);
      expect(await store.get('nope')).toBeNull();
      const [generated] = await store.put([{ text: 'an operator note', kind: 'note', writtenBy: 'operator:ana', source: { eventIds: [] } }]);
      expect(generated!.id).toMatch(/./);
      expect((await store.get(generated!.id))?.text).toBe('an operator note');
      expect(store.info).toMatchObject({ embeddingModel: 'synonyms:64', dim: 64 });
    });

    test('put is idempotent by id and rejects malformed memories', async (ctx) => {
      const { store } = await open(ctx);
      const a = mem('first version of the memory');
      await store.put([a]);
      const [again] = await store.put([{ ...a, text: 'a different text under the same id' }]);
      expect(again!.text).toBe('first version of the memory');
      const twice = await store.put([mem('batch one', { id: 'dup' }), mem('batch two', { id: 'dup' })]);
      expect(twice.map((m) => m.text)).toEqual(['batch one', 'batch one']);
      expect(await store.count()).toBe(2);
      expect((await rejection(store.put([mem('x', { importance: 3 })]))).code).toBe('MEMORY_INVALID_INPUT');
      expect((await rejection(store.put([mem('   ')]))).code).toBe('MEMORY_INVALID_INPUT');
      expect(await store.count()).toBe(2);
    });

    test('filters: customer, entity, kind, time window, superseded', async (ctx) => {
      const { store } = await open(ctx);
      await store.put([
        mem('shipping delay for the blue widget', { id: 'f1', customerId: 'acme', entityType: 'ticket', entityId: 'T-1', kind: 'message', createdAt: daysAgo(2) }),
        mem('shipping delay for the red widget', { id: 'f2', customerId: 'acme', entityType: 'order', entityId: 'O-1', kind: 'summary', createdAt: daysAgo(40) }),
        mem('shipping delay for the green widget', { id: 'f3', customerId: 'globex', entityType: 'ticket', entityId: 'T-2', kind: 'message', createdAt: daysAgo(5) }),
      ]);
      const ids = async (q: Parameters<MemoryStore['search']>[0]) => (await store.search(q)).map((h) => h.memory.id).sort();
      expect(await ids({ text: 'shipping delay' })).toEqual(['f1', 'f2', 'f3']);
      expect(await ids({ text: 'shipping delay', customerId: 'acme' })).toEqual(['f1', 'f2']);
      expect(await ids({ text: 'shipping delay', entityType: 'ticket', entityId: 'T-2' })).toEqual(['f3']);
      expect(await ids({ text: 'shipping delay', kind: 'summary' })).toEqual(['f2']);
      expect(await ids({ text: 'shipping delay', kind: ['summary', 'message'], customerId: 'globex' })).toEqual(['f3']);
      expect(await ids({ text: 'shipping delay', since: daysAgo(10) })).toEqual(['f1', 'f3']);
      expect(await ids({ text: 'shipping delay', until: daysAgo(3) })).toEqual(['f2', 'f3']);
      expect(await ids({ text: 'shipping delay', limit: 1 })).toHaveLength(1);
      await store.supersede(['f1'], 'f2');
      expect(await ids({ text: 'shipping delay', customerId: 'acme' })).toEqual(['f2']);
      expect(await ids({ text: 'shipping delay', customerId: 'acme', includeSuperseded: true })).toEqual(['f1', 'f2']);
      expect(await store.list({ customerId: 'acme' })).toHaveLength(2);
      expect((await store.list({ status: 'superseded' })).map((m) => m.id)).toEqual(['f1']);
      expect(await store.count({ customerId: 'acme', status: 'active' })).toBe(1);
      const page1 = await store.list({ limit: 2 });
      const page2 = await store.list({ limit: 2, afterId: page1.at(-1)!.id });
      expect([...page1, ...page2].map((m) => m.id)).toEqual(['f1', 'f2', 'f3']);
    });

    test('hybrid ranking: paraphrase through vectors, rare terms through BM25, recency and importance break ties', async (ctx) => {
      const { store } = await open(ctx);
      await store.put([
        mem('customer asked for a reimbursement after the double charge', { id: 'para' }),
        mem('the warehouse moved to a new building in march', { id: 'unrelated' }),
        mem('crash with error code E4711 when exporting', { id: 'rare' }),
        mem('crash when exporting a large report', { id: 'common' }),
        mem('printer jams on thick paper', { id: 'new', createdAt: daysAgo(1) }),
        mem('printer jams on thick paper', { id: 'old', createdAt: daysAgo(120) }),
        mem('scanner loses wifi connection', { id: 'hi', importance: 0.9 }),
        mem('scanner loses wifi connection', { id: 'lo', importance: 0.1 }),
      ]);
      const para = await store.search({ text: 'refund please' });
      expect(para[0]!.memory.id).toBe('para');
      expect(para[0]!.components.lexical).toBe(0);
      expect(para[0]!.components.vector).toBeGreaterThan(0.2);
      const rare = await store.search({ text: 'E4711 crash' });
      expect(rare[0]!.memory.id).toBe('rare');
      expect(rare[0]!.components.lexical).toBeGreaterThan(rare.find((h) => h.memory.id === 'common')!.components.lexical);
      const rec = await store.search({ text: 'printer jams' });
      expect(rec.slice(0, 2).map((h) => h.memory.id)).toEqual(['new', 'old']);
      expect(rec[0]!.components.recency).toBeGreaterThan(rec[1]!.components.recency);
      const imp = await store.search({ text: 'scanner wifi' });
      expect(imp.slice(0, 2).map((h) => h.memory.id)).toEqual(['hi', 'lo']);
      expect(imp[0]!.components.importance).toBe(0.9);
    });

    test('explain: components are in 0..1, the vector one is the cosine, and the score is their weighted sum', async (ctx) => {
      const weights = { vector: 2, lexical: 1, recency: 0.5, importance: 0.5 };
      const emb = new SynonymEmbeddings();
      const { store } = await open(ctx, { weights, embeddings: emb });
      const texts = ['invoice total is wrong on the april bill', 'login fails after the password reset', 'the invoice was paid twice', 'weekly report looks fine'];
      await store.put(texts.map((x, i) => mem(x, { createdAt: daysAgo(i * 10), importance: 0.2 + i * 0.2 })));
      const q = 'billing problem with the invoice';
      const hits = await store.search({ text: q });
      expect(hits.length).toBeGreaterThanOrEqual(3);
      const qv = await emb.embedQuery(q);
      const sum = weights.vector + weights.lexical + weights.recency + weights.importance;
      for (const h of hits) {
        for (const v of Object.values(h.components)) expect(v >= 0 && v <= 1).toBe(true);
        const [dv] = await emb.embedDocuments([h.memory.text]);
        expect(h.components.vector).toBeCloseTo(Math.max(0, dot(qv, dv!)), 5);
        expect(h.components.recency).toBeCloseTo(Math.pow(0.5, (NOW.getTime() - Date.parse(h.memory.createdAt)) / 86_400_000 / 30), 6);
        expect(h.components.importance).toBeCloseTo(h.memory.importance, 9);
        const c = h.components;
        expect(h.score).toBeCloseTo((c.vector * weights.vector + c.lexical * weights.lexical + c.recency * weights.recency + c.importance * weights.importance) / sum, 9);
      }
      for (let i = 1; i < hits.length; i++) expect(hits[i - 1]!.score).toBeGreaterThanOrEqual(hits[i]!.score);
      expect(hits.find((h) => h.memory.text.includes('weekly'))?.components.lexical ?? 0).toBe(0);
    });

    test('supersession marks, never deletes, and search skips superseded memories', async (ctx) => {
      const { store } = await open(ctx);
      await store.put([mem('raw message one about the broken hinge', { id: 'r1', customerId: 'c' }), mem('raw message two about the broken hinge', { id: 'r2', customerId: 'c' })]);
      const [summary] = await store.put([mem('summary: the hinge broke twice, replacement sent', { id: 's1', kind: 'summary', customerId: 'c', supersedes: ['r1', 'r2'] })]);
      expect(summary!.supersedes).toEqual(['r1', 'r2']);
      for (const id of ['r1', 'r2']) expect(await store.get(id)).toMatchObject({ status: 'superseded', supersededBy: 's1' });
      expect((await store.search({ text: 'broken hinge' })).map((h) => h.memory.id)).toEqual(['s1']);
      expect((await store.search({ text: 'broken hinge', includeSuperseded: true })).map((h) => h.memory.id).sort()).toEqual(['r1', 'r2', 's1']);
      expect(await store.count()).toBe(3);
      await store.put([mem('another hinge note', { id: 'r3', customerId: 'c' })]);
      expect(await store.supersede(['r3', 'missing'], 's1')).toBe(1);
      expect(await store.supersede(['r3'], 's1')).toBe(0);
      expect(await store.count({ status: 'superseded' })).toBe(3);
    });

    test('forget by customer and by source removes rows, vectors and lexical entries', async (ctx) => {
      const { store, location } = await open(ctx);
      await store.put([
        mem('acme wants the invoice in euros', { id: 'a1', customerId: 'acme' }),
        mem('acme complained about invoice rounding', { id: 'a2', customerId: 'acme' }),
        mem('globex invoice in dollars', { id: 'g1', customerId: 'globex', source: { entityType: 'ticket', entityId: 'T-77', eventIds: ['x'] } }),
        mem('globex asked about the invoice date', { id: 'g2', customerId: 'globex', entityType: 'ticket', entityId: 'T-77' }),
        mem('globex likes the new invoice layout', { id: 'g3', customerId: 'globex' }),
      ]);
      expect(await t.raw(location)).toEqual({ rows: 5, vectors: 5, lexical: 5 });
      expect(await store.forget({ customerId: 'acme' })).toEqual({ removed: 2, ids: ['a1', 'a2'] });
      expect(await store.search({ text: 'invoice euros rounding', customerId: 'acme' })).toEqual([]);
      expect((await store.search({ text: 'acme invoice euros rounding' })).map((h) => h.memory.customerId)).not.toContain('acme');
      expect(await store.get('a1')).toBeNull();
      expect(await store.forget({ sourceEntityId: 'T-77' })).toEqual({ removed: 2, ids: ['g1', 'g2'] });
      expect((await store.search({ text: 'globex invoice' })).map((h) => h.memory.id)).toEqual(['g3']);
      expect(await t.raw(location)).toEqual({ rows: 1, vectors: 1, lexical: 1 });
      expect(await store.forget({ ids: ['nope'] })).toEqual({ removed: 0, ids: [] });
      expect((await rejection(store.forget({}))).code).toBe('MEMORY_INVALID_INPUT');
      expect(await store.count()).toBe(1);
    });

    test('reindex re-embeds with the new model, stops on abort and resumes where it stopped', async (ctx) => {
      const first = await open(ctx, { embeddings: new SynonymEmbeddings(64, 'old-model:64') });
      await first.store.put(Array.from({ length: 10 }, (_, i) => mem(`note number ${i} about the refund queue`, { id: `n${i}` })));
      await first.store.close();
      const { store } = await open(ctx, { location: first.location, embeddings: new SynonymEmbeddings(64, 'new-model:64') });
      const ac = new AbortController();
      const progress: Array<[number, number]> = [];
      const err = await rejection(store.reindex({ batchSize: 3, signal: ac.signal, onProgress: (d, tot) => (progress.push([d, tot]), d >= 3 && ac.abort()) }));
      expect(err.code).toBe('MEMORY_ABORTED');
      expect(progress).toEqual([[0, 10], [3, 10]]);
      const all = await store.list({ limit: 100 });
      expect(all.filter((m) => m.embedding.model === 'new-model:64')).toHaveLength(3);
      const steps: number[] = [];
      expect(await store.reindex({ batchSize: 3, onProgress: (d) => steps.push(d) })).toEqual({ reembedded: 7, total: 7 });
      expect(steps).toEqual([0, 3, 6, 7]);
      expect((await store.list({ limit: 100 })).every((m) => m.embedding.model === 'new-model:64')).toBe(true);
      expect(await store.reindex()).toEqual({ reembedded: 0, total: 0 });
      const hits = await store.search({ text: 'money back queue' });
      expect(hits).toHaveLength(10);
      expect(hits[0]!.components.vector).toBeGreaterThan(0);
    });

    test('another dimension fails to open with a reindex hint; reindex migrates it', async (ctx) => {
      const first = await open(ctx, { embeddings: new SynonymEmbeddings(64) });
      await first.store.put([mem('the courier lost parcel 5521', { id: 'p1' }), mem('parcel 5522 arrived damaged', { id: 'p2' })]);
      await first.store.close();
      const err = await rejection(t.open({ embeddings: new SynonymEmbeddings(32), location: first.location, now }));
      expect(isMemoryError(err, 'MEMORY_DIMENSION_MISMATCH')).toBe(true);
      expect(err.message).toContain('keel memory reindex');
      const { store } = await open(ctx, { embeddings: new SynonymEmbeddings(32), location: first.location, allowDimensionChange: true });
      expect((await rejection(store.search({ text: 'parcel' }))).code).toBe('MEMORY_DIMENSION_MISMATCH');
      expect(await store.reindex({ batchSize: 1 })).toEqual({ reembedded: 2, total: 2 });
      expect((await store.get('p1'))!.embedding).toEqual({ model: 'synonyms:32', dim: 32 });
      const hits = await store.search({ text: 'lost parcel' });
      expect(hits[0]!.memory.id).toBe('p1');
      expect(hits[0]!.components.vector).toBeGreaterThan(0);
      await store.close();
      const again = await open(ctx, { embeddings: new SynonymEmbeddings(32), location: first.location });
      expect(await again.store.count()).toBe(2);
      expect((await rejection(t.open({ embeddings: new SynonymEmbeddings(64), location: first.location, now }))).code).toBe('MEMORY_DIMENSION_MISMATCH');
    });

    test('memories persist across reopen', async (ctx) => {
      const first = await open(ctx);
      const [m] = await first.store.put([mem('the gateway timeout happens every night at 2am', { id: 'persist', customerId: 'c9' })]);
      await first.store.close();
      const { store } = await open(ctx, { location: first.location });
      expect(await store.get('persist')).toEqual(m);
      expect((await store.search({ text: 'gateway timeout at night', customerId: 'c9' }))[0]?.memory.id).toBe('persist');
    });

    test('two store instances on one location both write and see each other', async (ctx) => {
      const a = await open(ctx);
      const b = await open(ctx, { location: a.location });
      await Promise.all([
        ...Array.from({ length: 15 }, (_, i) => a.store.put([mem(`writer a note ${i} about lamps`, { id: `a${i}` })])),
        ...Array.from({ length: 15 }, (_, i) => b.store.put([mem(`writer b note ${i} about chairs`, { id: `b${i}` })])),
      ]);
      expect(await a.store.count()).toBe(30);
      expect(await b.store.count()).toBe(30);
      expect((await a.store.get('b7'))?.text).toBe('writer b note 7 about chairs');
      expect((await b.store.search({ text: 'lamps', limit: 30 })).filter((h) => h.memory.id.startsWith('a'))).toHaveLength(15);
      await b.store.forget({ ids: ['a0', 'a1'] });
      expect((await a.store.search({ text: 'lamps', limit: 30 })).map((h) => h.memory.id)).not.toContain('a0');
      expect(await t.raw(a.location)).toEqual({ rows: 28, vectors: 28, lexical: 28 });
    });
  });
}
