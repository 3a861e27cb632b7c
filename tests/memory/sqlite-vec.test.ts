import { afterAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { getLoadablePath } from 'sqlite-vec';
import { HashingEmbeddings, isMemoryError, openMemory, type MemoryStore } from '../../memory/index.ts';
import { tempDir } from '../../testkit/index.ts';
import { memoryStoreContract, SynonymEmbeddings } from './contract.ts';

const dir = tempDir('keel-memory-');
afterAll(() => dir.remove());
let n = 0;

memoryStoreContract({
  name: 'sqlite-vec',
  async open(a) {
    const location = a.location ?? `sqlite-vec:${join(dir.path, `m${++n}`, 'memory.db')}`;
    const store = await openMemory(location, a);
    return { store, location };
  },
  raw(location) {
    const db = new DatabaseSync(location.slice('sqlite-vec:'.length), { allowExtension: true, readOnly: true });
    try {
      db.loadExtension(getLoadablePath());
      const count = (sql: string) => (db.prepare(sql).get() as { n: number }).n;
      return Promise.resolve({ rows: count('SELECT count(*) AS n FROM memories'), vectors: count('SELECT count(*) AS n FROM memory_vec'), lexical: count('SELECT count(*) AS n FROM memory_fts') });
    } finally {
      db.close();
    }
  },
});

/** Texts over a small vocabulary, so hashing vectors overlap in many ways (hard for a sign-bit prefilter). */
function corpus(size: number): string[] {
  const words = 'alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu'.split(' ');
  let s = 7;
  const rnd = () => ((s = (s * 1103515245 + 12345) >>> 0), s / 2 ** 32);
  return Array.from({ length: size }, () => Array.from({ length: 6 }, () => words[Math.floor(rnd() * words.length)]).join(' '));
}

describe('sqlite-vec adapter: approximate vector path', () => {
  const emb = new HashingEmbeddings({ dim: 96 });
  const texts = corpus(600);
  const queries = corpus(620).slice(600);
  const stores: MemoryStore[] = [];
  afterAll(async () => {
    for (const s of stores) await s.close();
  });
  const vectorOnly = { vector: 1, lexical: 0, recency: 0, importance: 0 };
  const ids = async (s: MemoryStore, q: string) => (await s.search({ text: q, limit: 10 })).map((h) => h.memory.id);

  it('with every memory as a candidate the sign-bit prefilter returns exactly what the exact scan returns', async () => {
    const url = `sqlite-vec:${join(dir.path, 'ann', 'memory.db')}`;
    const exact = await openMemory(url, { embeddings: emb, weights: vectorOnly });
    stores.push(exact);
    await exact.put(texts.map((text, i) => ({ id: `t${String(i).padStart(3, '0')}`, text, kind: 'message', writtenBy: 'test', source: { eventIds: [] } })));
    const ann = await openMemory(url, { embeddings: emb, weights: vectorOnly, sqliteVec: { annMinRows: 0, annCandidates: 1000, annRerank: 1000 } });
    stores.push(ann);
    for (const q of queries) expect(await ids(ann, q)).toEqual(await ids(exact, q));
  });

  it('a small candidate set approximates (recall measured, not assumed) and filters still hold', async () => {
    const url = `sqlite-vec:${join(dir.path, 'ann', 'memory.db')}`;
    const exact = stores[0]!;
    const ann = await openMemory(url, { embeddings: emb, weights: vectorOnly, sqliteVec: { annMinRows: 0, annCandidates: 120 } });
    stores.push(ann);
    let found = 0;
    for (const q of queries) {
      const truth = new Set(await ids(exact, q));
      found += (await ids(ann, q)).filter((id) => truth.has(id)).length;
    }
    const recall = found / (queries.length * 10);
    expect(recall).toBeGreaterThan(0.5);
    expect(recall).toBeLessThanOrEqual(1);
    const filtered = await ann.search({ text: queries[0]!, entityId: 'none' });
    expect(filtered).toEqual([]);
  });

  it("another instance's writes and forgets reach a loaded in-process index", async () => {
    const url = `sqlite-vec:${join(dir.path, 'ann', 'memory.db')}`;
    const ann = await openMemory(url, { embeddings: emb, weights: vectorOnly, sqliteVec: { annMinRows: 0, annCandidates: 1000, annRerank: 1000 } });
    const writer = await openMemory(url, { embeddings: emb });
    stores.push(ann, writer);
    const probe = 'zebra quokka narwhal';
    expect(await ids(ann, probe)).not.toContain('fresh');
    await writer.put([{ id: 'fresh', text: probe, kind: 'message', writtenBy: 'test', source: { eventIds: [] } }]);
    expect((await ids(ann, probe))[0]).toBe('fresh');
    await writer.supersede(['fresh'], 't000');
    expect(await ids(ann, probe)).not.toContain('fresh');
    expect((await ann.search({ text: probe, includeSuperseded: true }))[0]!.memory.id).toBe('fresh');
    await writer.forget({ ids: ['fresh'] });
    expect((await ann.search({ text: probe, includeSuperseded: true })).map((h) => h.memory.id)).not.toContain('fresh');
    // the other writer commits, then this instance writes before searching: both must be found
    await writer.put([{ id: 'theirs', text: 'ocelot pangolin tapir', kind: 'message', writtenBy: 'test', source: { eventIds: [] } }]);
    await ann.put([{ id: 'mine', text: 'axolotl okapi dugong', kind: 'message', writtenBy: 'test', source: { eventIds: [] } }]);
    expect((await ids(ann, 'ocelot pangolin tapir'))[0]).toBe('theirs');
    expect((await ids(ann, 'axolotl okapi dugong'))[0]).toBe('mine');
  });
});

describe('sqlite-vec adapter: approximate path across a model change', () => {
  it('after reindex to another model the prefilter (new center, new signatures) still agrees with the exact scan', async () => {
    const url = `sqlite-vec:${join(dir.path, 'ann-reindex', 'memory.db')}`;
    const texts = corpus(300);
    const queries = corpus(310).slice(300);
    const vectorOnly = { vector: 1, lexical: 0, recency: 0, importance: 0 };
    const first = await openMemory(url, { embeddings: new HashingEmbeddings({ dim: 64 }), weights: vectorOnly, sqliteVec: { annMinRows: 0, annCandidates: 1000, annRerank: 1000 } });
    await first.put(texts.map((text, i) => ({ id: `t${i}`, text, kind: 'message', writtenBy: 'test', source: { eventIds: [] } })));
    await first.search({ text: queries[0]! }); // establishes the center for hashing:64
    await first.close();
    const emb = new SynonymEmbeddings(64, 'other-model:64');
    const ann = await openMemory(url, { embeddings: emb, weights: vectorOnly, sqliteVec: { annMinRows: 0, annCandidates: 1000, annRerank: 1000 } });
    const exact = await openMemory(url, { embeddings: emb, weights: vectorOnly });
    try {
      expect(await ann.search({ text: queries[0]! })).toEqual([]); // no vector of this model yet, and no word matches matter with lexical weight 0
      expect(await ann.reindex({ batchSize: 100 })).toEqual({ reembedded: 300, total: 300 });
      for (const q of queries) {
        const a = (await ann.search({ text: q })).map((h) => h.memory.id);
        expect(a).toHaveLength(10);
        expect(a).toEqual((await exact.search({ text: q })).map((h) => h.memory.id));
      }
    } finally {
      await ann.close();
      await exact.close();
    }
  });
});

describe('sqlite-vec adapter: errors', () => {
  it('names what is wrong with a URL', async () => {
    const emb = new HashingEmbeddings({ dim: 8 });
    for (const url of ['sqlite-vec:', 'postgres://x', '/tmp/memory.db']) {
      const err = await openMemory(url, { embeddings: emb }).then(() => null, (e: unknown) => e);
      expect(isMemoryError(err, 'MEMORY_BAD_URL')).toBe(true);
    }
  });
  it('refuses calls after close', async () => {
    const s = await openMemory(`sqlite-vec:${join(dir.path, 'closed.db')}`, { embeddings: new HashingEmbeddings({ dim: 8 }) });
    await s.close();
    const err = await s.get('x').then(() => null, (e: unknown) => e);
    expect(isMemoryError(err, 'MEMORY_CLOSED')).toBe(true);
  });
});
