/**
 * `npm run bench -- memory [--json] [--quick]`: the memory store (sqlite-vec adapter).
 *
 * 1. ANN: top-10 vector recall through `store.search` (vector-only weights) over n = 100k
 *    memories of dim 384 (10k with --quick), p50/p99 latency and recall_at_10 against exact
 *    float32 cosine KNN from a sqlite-vec `vec0 float[384]` table in the same run (its latency is
 *    the baseline). The vectors are synthetic but shaped like sentence embeddings — real MiniLM
 *    embeddings of 100k texts would take hours here: a shared mean direction (anisotropy, like
 *    MiniLM's), 100 themes × 20 topics, and per-text Gaussian noise of varying strength, so
 *    similarities form a continuum; queries are fresh draws from a topic. When the default model is provisioned,
 *    the notes put the same statistics of real MiniLM embeddings of the retrieval fixture beside.
 * 2. Embedding throughput of the default model (KEEL_EMBEDDINGS), texts/s.
 * 3. Ingestion through `put` with the default model, memories/s.
 * 4. Retrieval quality on bench/fixtures/memory-retrieval.json (60 memories, 41 paraphrased
 *    queries with one target each): hit@5 and MRR (within the top 10) for hybrid, vector-only
 *    and lexical-only recall, with the default model and with HashingEmbeddings (no semantics).
 *
 * 2–4 skip with the reason when the default model is not provisioned (`npm run provision`).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { Embeddings } from '@langchain/core/embeddings';
import { getLoadablePath } from 'sqlite-vec';
import { loadConfig } from '../config/index.ts';
import { createEmbeddings, embeddingThroughput, HashingEmbeddings, openMemory, type KeelEmbeddings, type MemoryInput, type MemoryStore, type ScoreComponents } from '../memory/index.ts';
import { compare, figures, type Bench, type BenchContext, type ScenarioResult } from './lib.ts';

const DIM = 384;

/** Seeded PRNG (mulberry32) and a standard normal draw from it. */
function rng(seed: number): { uniform: () => number; normal: () => number } {
  let a = seed >>> 0;
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const normal = () => Math.sqrt(-2 * Math.log(uniform() + 1e-12)) * Math.cos(2 * Math.PI * uniform());
  return { uniform, normal };
}

function unit(v: Float32Array): Float32Array {
  let n = 0;
  for (const x of v) n += x * x;
  n = Math.sqrt(n);
  for (let i = 0; i < v.length; i++) v[i]! /= n;
  return v;
}

/**
 * Sentence-embedding-like vectors: a shared mean direction, 100 themes of 20 topics each, and
 * per-text noise of varying strength (some texts are generic, some on-topic), so similarities
 * form a continuum instead of clean clusters (see the docblock).
 */
interface Shape {
  name: string;
  topics: number;
  /** per-text noise weight is drawn from [noiseMin, noiseMax] */
  noiseMin: number;
  noiseMax: number;
}
/** `clustered`: 2000 topics (≈ 50 texts each at 100k); `diffuse`: 20000 topics (≈ 5 each) and more noise, so a query's ten nearest are near-ties. */
const SHAPES: Shape[] = [
  { name: 'clustered', topics: 2000, noiseMin: 0.5, noiseMax: 1.1 },
  { name: 'diffuse', topics: 20000, noiseMin: 0.9, noiseMax: 1.3 },
];

function syntheticVectors(n: number, queries: number, shape: Shape, seed = 42): { docs: Float32Array[]; queries: Float32Array[] } {
  const r = rng(seed);
  const randUnit = () => unit(Float32Array.from({ length: DIM }, () => r.normal()));
  const mean = randUnit();
  const themes = Array.from({ length: 100 }, randUnit);
  const topics = Array.from({ length: shape.topics }, randUnit);
  const perTheme = shape.topics / themes.length;
  const draw = () => {
    const t = Math.floor(r.uniform() * topics.length);
    const theme = themes[Math.floor(t / perTheme)]!;
    const topic = topics[t]!;
    const noise = randUnit();
    const g = shape.noiseMin + r.uniform() * (shape.noiseMax - shape.noiseMin);
    const v = new Float32Array(DIM);
    for (let i = 0; i < DIM; i++) v[i] = 0.4 * mean[i]! + 0.45 * theme[i]! + 0.55 * topic[i]! + g * noise[i]!;
    return unit(v);
  };
  return { docs: Array.from({ length: n }, draw), queries: Array.from({ length: queries }, draw) };
}

/** An embedder that returns precomputed vectors for texts `d<i>` / `q<i>`: ANN mechanics without a model. */
class PrecomputedEmbeddings extends Embeddings implements KeelEmbeddings {
  readonly id = `bench:synthetic-${DIM}`;
  readonly #docs: Float32Array[];
  readonly #queries: Float32Array[];
  constructor(docs: Float32Array[], queries: Float32Array[]) {
    super({});
    this.#docs = docs;
    this.#queries = queries;
  }
  dimensions(): Promise<number> {
    return Promise.resolve(DIM);
  }
  embedDocuments(texts: string[]): Promise<number[][]> {
    return Promise.resolve(texts.map((t) => Array.from(this.#docs[Number(t.slice(1))]!)));
  }
  embedQuery(text: string): Promise<number[]> {
    return Promise.resolve(Array.from(this.#queries[Number(text.slice(1))]!));
  }
}

const VECTOR_ONLY: ScoreComponents = { vector: 1, lexical: 0, recency: 0, importance: 0 };
const LEXICAL_ONLY: ScoreComponents = { vector: 0, lexical: 1, recency: 0, importance: 0 };

function pairwiseStats(vs: ArrayLike<number>[]): { mean_cosine: number; p90_cosine: number } {
  const sims: number[] = [];
  for (let i = 0; i < vs.length; i++)
    for (let j = i + 1; j < vs.length; j++) {
      let d = 0;
      for (let k = 0; k < DIM; k++) d += vs[i]![k]! * vs[j]![k]!;
      sims.push(d);
    }
  sims.sort((a, b) => a - b);
  const round = (x: number) => Math.round(x * 1000) / 1000;
  return { mean_cosine: round(sims.reduce((a, b) => a + b, 0) / sims.length), p90_cosine: round(sims[Math.floor(sims.length * 0.9)]!) };
}

async function annScenario(ctx: BenchContext, dir: string, shape: Shape, settings: number[]): Promise<ScenarioResult[]> {
  const n = ctx.quick ? 10_000 : 100_000;
  const nq = ctx.quick ? 50 : 200;
  ctx.progress(`ann (${shape.name}): generating ${n} vectors of dim ${DIM}`);
  const { docs, queries } = syntheticVectors(n, nq, shape);
  const emb = new PrecomputedEmbeddings(docs, queries);

  ctx.progress('ann: exact float32 KNN (vec0 float[384], cosine) for ground truth and baseline');
  const raw = new DatabaseSync(':memory:', { allowExtension: true });
  raw.loadExtension(getLoadablePath());
  raw.exec(`CREATE VIRTUAL TABLE exact USING vec0 (embedding float[${DIM}] distance_metric=cosine)`);
  raw.exec('BEGIN');
  const ins = raw.prepare('INSERT INTO exact (rowid, embedding) VALUES (?, ?)');
  docs.forEach((v, i) => ins.run(BigInt(i), new Uint8Array(v.buffer)));
  raw.exec('COMMIT');
  const knn = raw.prepare(`SELECT rowid FROM exact WHERE embedding MATCH ? AND k = 10`);
  const truth: Array<Set<string>> = [];
  const exactLat: number[] = [];
  const te = performance.now();
  for (const q of queries) {
    const s = performance.now();
    const rows = knn.all(new Uint8Array(q.buffer)) as Array<{ rowid: number }>;
    exactLat.push(performance.now() - s);
    truth.push(new Set(rows.map((r) => `d${r.rowid}`)));
  }
  const exactElapsed = performance.now() - te;
  raw.close();

  ctx.progress(`ann: ingesting ${n} memories through put (batches of 1000, precomputed vectors)`);
  const url = `sqlite-vec:${join(dir, `ann-${shape.name}.db`)}`;
  const store = await openMemory(url, { embeddings: emb, weights: VECTOR_ONLY });
  const ti = performance.now();
  for (let i = 0; i < n; i += 1000) {
    const batch: MemoryInput[] = [];
    for (let j = i; j < Math.min(n, i + 1000); j++) batch.push({ id: `d${j}`, text: `d${j}`, kind: 'message', writtenBy: 'bench', source: { eventIds: [] } });
    await store.put(batch);
  }
  const ingestMs = performance.now() - ti;

  const results: ScenarioResult[] = [];
  for (const annCandidates of settings) {
    const s = annCandidates === settings[0] ? store : await openMemory(url, { embeddings: emb, weights: VECTOR_ONLY, sqliteVec: { annCandidates } });
    if (s === store) ctx.progress(`ann (${shape.name}): first search sets the center and loads the index`);
    const tl = performance.now();
    await s.search({ text: 'q0', limit: 10 }); // loads the in-process sign index
    const loadMs = performance.now() - tl;
    const lat: number[] = [];
    let found = 0;
    const t0 = performance.now();
    for (let i = 0; i < nq; i++) {
      const st = performance.now();
      const hits = await s.search({ text: `q${i}`, limit: 10 });
      lat.push(performance.now() - st);
      found += hits.filter((h) => truth[i]!.has(h.memory.id)).length;
    }
    const elapsed = performance.now() - t0;
    const recall = Math.round((found / (nq * 10)) * 1000) / 1000;
    const notes = {
      n, dim: DIM, queries: nq, recall_at_10: recall, ann_candidates: annCandidates, index_load_ms: Math.round(loadMs),
      ingest_per_s: Math.round(n / (ingestMs / 1000)), vectors: `synthetic ${shape.name}: 0.4·mean + 0.45·theme(100) + 0.55·topic(${shape.topics}) + (${shape.noiseMin}..${shape.noiseMax})·noise, unit length`, synthetic_stats: pairwiseStats(docs.slice(0, 300)),
      path: `store.search (vector-only weights): hamming prefilter of ${annCandidates} (centered sign bits) → int8 scoring → exact float32 cosine of the best 100 → rows`,
    };
    results.push(compare(`sqlite-vec store: top-10 vector recall, ${shape.name}, n=${n}, candidates=${annCandidates}`, figures(nq, elapsed, lat, notes), { scenario: 'sqlite-vec vec0 float[384] exact KNN (brute force, k=10)', ...figures(nq, exactElapsed, exactLat) }));
    if (s !== store) await s.close();
  }
  await store.close();
  return results;
}

interface Fixture {
  memories: Array<{ id: string; customerId: string; topic: string; text: string }>;
  queries: Array<{ text: string; target: string }>;
}

async function qualityRuns(ctx: BenchContext, dir: string, emb: KeelEmbeddings, label: string, hybrid: ScoreComponents): Promise<{ results: ScenarioResult[]; stats: ReturnType<typeof pairwiseStats> }> {
  const fx = JSON.parse(readFileSync(new URL('./fixtures/memory-retrieval.json', import.meta.url), 'utf8')) as Fixture;
  const now = () => new Date('2026-06-01T00:00:00Z');
  const url = `sqlite-vec:${join(dir, `quality-${label.replace(/[^a-z0-9]/gi, '_')}.db`)}`;
  const ingest = await openMemory(url, { embeddings: emb, now });
  ctx.progress(`quality (${label}): ingesting ${fx.memories.length} memories`);
  await ingest.put(fx.memories.map((m) => ({ id: m.id, text: m.text, kind: 'message', customerId: m.customerId, writtenBy: 'bench', source: { eventIds: [] }, createdAt: '2026-05-01T00:00:00Z', meta: { topic: m.topic } })));
  await ingest.close();
  const vecs = await emb.embedDocuments(fx.memories.slice(0, 60).map((m) => m.text));
  const results: ScenarioResult[] = [];
  for (const [mode, weights] of [['hybrid', hybrid], ['vector-only', VECTOR_ONLY], ['lexical-only', LEXICAL_ONLY]] as const) {
    const store: MemoryStore = await openMemory(url, { embeddings: emb, weights, now });
    ctx.progress(`quality (${label}): ${fx.queries.length} queries, ${mode}`);
    let hit5 = 0;
    let rr = 0;
    const lat: number[] = [];
    const t0 = performance.now();
    for (const q of fx.queries) {
      const s = performance.now();
      const hits = await store.search({ text: q.text, limit: 10 });
      lat.push(performance.now() - s);
      // a lexical-only ranking only counts memories that matched a word; the rest is tie order
      const ranked = hits.filter((h) => mode !== 'lexical-only' || h.components.lexical > 0).map((h) => h.memory.id);
      const rank = ranked.indexOf(q.target) + 1;
      if (rank >= 1 && rank <= 5) hit5++;
      if (rank >= 1) rr += 1 / rank;
    }
    const elapsed = performance.now() - t0;
    await store.close();
    const round = (x: number) => Math.round(x * 1000) / 1000;
    const notes = { embeddings: emb.id, mode, weights, queries: fx.queries.length, memories: fx.memories.length, hit_at_5: round(hit5 / fx.queries.length), mrr_at_10: round(rr / fx.queries.length) };
    results.push(compare(`retrieval quality: ${label}, ${mode}`, figures(fx.queries.length, elapsed, lat, notes), null));
  }
  return { results, stats: pairwiseStats(vecs) };
}

export const memoryBench: Bench = {
  name: 'memory',
  description: 'memory store: top-10 ANN p50/p99 + recall@10 vs exact (100k × 384), embeddings/s, put/s, hit@5 and MRR on a labeled set',
  async run(ctx) {
    const dir = mkdtempSync(join(tmpdir(), 'keel-bench-memory-'));
    const cfg = loadConfig();
    // other processes on the box change every latency here: the load average is part of the figures
    const machine: Record<string, unknown> = { loadavg_at_start: loadavg().map((x) => Math.round(x * 100) / 100) };
    try {
      const results = [...(await annScenario(ctx, dir, SHAPES[0]!, [2000, 1000])), ...(await annScenario(ctx, dir, SHAPES[1]!, [2000, 4000, 8000]))];
      const emb = createEmbeddings({ spec: cfg.embeddings, modelsDir: cfg.modelsDir, modelEnv: cfg.modelEnv });
      let modelOk = true;
      try {
        await emb.embedQuery('warm up');
      } catch (err) {
        modelOk = false;
        ctx.progress(`default embeddings '${cfg.embeddings}' skipped: ${(err as Error).message}`);
        machine.embeddings_skipped = (err as Error).message;
      }
      const fx = JSON.parse(readFileSync(new URL('./fixtures/memory-retrieval.json', import.meta.url), 'utf8')) as Fixture;
      if (modelOk) {
        const texts = fx.memories.map((m) => m.text).slice(0, ctx.quick ? 8 : 32);
        ctx.progress(`embeddings: ${emb.id}, ${texts.length} texts`);
        const th = await embeddingThroughput(emb, texts);
        results.push(compare(`embeddings: ${emb.id} embedDocuments`, { throughput_per_s: Math.round(th.textsPerSecond * 10) / 10, p50_ms: Math.round((th.ms / th.texts) * 100) / 100, p99_ms: Math.round((th.ms / th.texts) * 100) / 100, notes: { texts: th.texts, mean_words: Math.round(th.meanWords * 10) / 10, latency: 'p50/p99 are the mean ms per text of one batched embedDocuments call' } }, null));

        const n = ctx.quick ? 16 : 64;
        ctx.progress(`ingestion: ${n} memories through put with ${emb.id}, batches of 16`);
        const store = await openMemory(`sqlite-vec:${join(dir, 'ingest.db')}`, { embeddings: emb });
        const lat: number[] = [];
        const t0 = performance.now();
        for (let i = 0; i < n; i += 16) {
          const batch = Array.from({ length: Math.min(16, n - i) }, (_, k) => {
            const m = fx.memories[(i + k) % fx.memories.length]!;
            return { id: `i${i + k}`, text: `${m.text} (note ${i + k})`, kind: 'message', customerId: m.customerId, writtenBy: 'bench', source: { eventIds: [] } } satisfies MemoryInput;
          });
          const s = performance.now();
          await store.put(batch);
          lat.push(performance.now() - s);
        }
        const elapsed = performance.now() - t0;
        await store.close();
        results.push(compare(`ingestion: put with ${emb.id} (batches of 16)`, figures(n, elapsed, lat, { memories: n, p50_ms: 'per batch of 16' }), null));

        const q = await qualityRuns(ctx, dir, emb, emb.id, cfg.memoryWeights);
        results.push(...q.results);
        machine.minilm_fixture_stats = q.stats;
      }
      const h = await qualityRuns(ctx, dir, new HashingEmbeddings({ dim: DIM }), `hashing:${DIM} (no semantics)`, cfg.memoryWeights);
      results.push(...h.results);
      machine.loadavg_at_end = loadavg().map((x) => Math.round(x * 100) / 100);
      return { results, machine };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
};
