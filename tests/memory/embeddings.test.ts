/**
 * Embeddings: the embedded all-MiniLM-L6-v2 (real weights from `npm run provision`) reproduces
 * sentence-transformers' published scores; its tokenizer matches Hugging Face `tokenizers` on
 * tricky input; the safetensors reader, the hashing stand-in and `createEmbeddings` behave.
 * Tests that need the model files skip, saying why, when they are not provisioned.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig } from '../../config/index.ts';
import {
  createEmbeddings,
  cosineSimilarity,
  embeddingThroughput,
  HashingEmbeddings,
  isEmbeddingsError,
  LocalMiniLMEmbeddings,
  localMiniLMDir,
  localMiniLMPresent,
  WordPieceTokenizer,
  type LoadedMiniLM,
} from '../../memory/embeddings/index.ts';
import { parseSafetensors } from '../../memory/embeddings/safetensors.ts';
import { tempDir } from '../../testkit/common.ts';

const modelsDir = loadConfig().modelsDir;
let provisioned = false;
let skipReason = '';
let emb: LocalMiniLMEmbeddings;
let model: LoadedMiniLM;

beforeAll(async () => {
  provisioned = await localMiniLMPresent(modelsDir);
  if (!provisioned) {
    skipReason = `the all-MiniLM-L6-v2 files are not in ${localMiniLMDir(modelsDir)}: run \`npm run provision\``;
    console.warn(`[embeddings.test] skipping model tests: ${skipReason}`);
    return;
  }
  emb = new LocalMiniLMEmbeddings({ modelsDir });
  model = await emb.load();
});

// The semantic-search example of sentence-transformers with all-MiniLM-L6-v2
// (sbert.net, examples/applications/semantic-search): its printed top-5 per query.
const CORPUS = [
  'A man is eating food.',
  'A man is eating a piece of bread.',
  'The girl is carrying a baby.',
  'A man is riding a horse.',
  'A woman is playing violin.',
  'Two men pushed carts through the woods.',
  'A man is riding a white horse on an enclosed ground.',
  'A monkey is playing drums.',
  'A cheetah is running behind its prey.',
];
const PUBLISHED: { query: string; top5: [string, number][] }[] = [
  {
    query: 'A man is eating pasta.',
    top5: [
      ['A man is eating food.', 0.7035],
      ['A man is eating a piece of bread.', 0.5272],
      ['A man is riding a horse.', 0.1889],
      ['A man is riding a white horse on an enclosed ground.', 0.1047],
      ['A cheetah is running behind its prey.', 0.098],
    ],
  },
  {
    query: 'Someone in a gorilla costume is playing a set of drums.',
    top5: [
      ['A monkey is playing drums.', 0.6433],
      ['A woman is playing violin.', 0.2564],
      ['A man is riding a horse.', 0.1389],
      ['A man is riding a white horse on an enclosed ground.', 0.1191],
      ['A cheetah is running behind its prey.', 0.108],
    ],
  },
  {
    query: 'A cheetah chases prey on across a field.',
    top5: [
      ['A cheetah is running behind its prey.', 0.8253],
      ['A man is eating food.', 0.1399],
      ['A monkey is playing drums.', 0.1292],
      ['A man is riding a white horse on an enclosed ground.', 0.1097],
      ['A man is riding a horse.', 0.065],
    ],
  },
];

describe('local all-MiniLM-L6-v2', () => {
  it('reproduces the published semantic-search scores (±0.005) and ranking', async (ctx) => {
    if (!provisioned) return ctx.skip(skipReason);
    const corpus = await emb.embedDocuments(CORPUS);
    for (const { query, top5 } of PUBLISHED) {
      const q = await emb.embedQuery(query);
      const ranked = corpus.map((v, i) => ({ text: CORPUS[i]!, score: cosineSimilarity(q, v) })).sort((a, b) => b.score - a.score);
      expect(ranked.slice(0, 5).map((r) => r.text), query).toEqual(top5.map(([t]) => t));
      for (const [text, score] of top5) expect(Math.abs(ranked.find((r) => r.text === text)!.score - score), `${query} / ${text}`).toBeLessThanOrEqual(0.005);
    }
  });

  it('gives 384-d unit vectors, the same for a text alone or in a mixed batch, in input order', async (ctx) => {
    if (!provisioned) return ctx.skip(skipReason);
    expect(await emb.dimensions()).toBe(384);
    const texts = ['short', 'A considerably longer sentence about refunds, invoices and a duplicate charge on the annual plan.', 'Mid-length text here.', ''];
    const batch = await emb.embedDocuments(texts);
    expect(batch).toHaveLength(texts.length);
    for (const [i, t] of texts.entries()) {
      const alone = await emb.embedQuery(t);
      expect(alone).toHaveLength(384);
      expect(Math.hypot(...alone)).toBeCloseTo(1, 5);
      const maxDiff = Math.max(...alone.map((x, k) => Math.abs(x - batch[i]![k]!)));
      expect(maxDiff, `text ${i}`).toBeLessThan(1e-5);
    }
    // different texts give different vectors (order really is kept)
    expect(cosineSimilarity(batch[0]!, batch[1]!)).toBeLessThan(0.9);
  });

  it('shares one loaded model across instances; embeddingThroughput reports texts per second', async (ctx) => {
    if (!provisioned) return ctx.skip(skipReason);
    const other = new LocalMiniLMEmbeddings({ modelsDir });
    expect(await other.load()).toBe(model);
    const r = await embeddingThroughput(other, ['A man is eating food.', 'A monkey is playing drums.', 'The girl is carrying a baby.'], { warmup: 1 });
    expect(r.texts).toBe(3);
    expect(r.textsPerSecond).toBeGreaterThan(0);
    expect(r.textsPerSecond).toBeCloseTo((r.texts * 1000) / r.ms, 6);
    expect(r.meanWords).toBeCloseTo((5 + 5 + 6) / 3, 6);
  });

  it('a model directory with a broken weights file fails with EMBEDDINGS_FAILED naming it', async (ctx) => {
    if (!provisioned) return ctx.skip(skipReason);
    const tmp = tempDir('keel-emb-broken-');
    try {
      const src = localMiniLMDir(modelsDir);
      const dst = localMiniLMDir(tmp.path);
      mkdirSync(join(dst, '1_Pooling'), { recursive: true });
      for (const f of ['tokenizer.json', 'config.json', '1_Pooling/config.json']) copyFileSync(join(src, f), join(dst, f));
      writeFileSync(join(dst, 'model.safetensors'), Buffer.from('not a safetensors file at all'));
      const err = await new LocalMiniLMEmbeddings({ modelsDir: tmp.path }).embedQuery('x').catch((e: unknown) => e);
      expect(isEmbeddingsError(err, 'EMBEDDINGS_FAILED')).toBe(true);
      expect((err as Error).message).toContain(dst);
      expect((err as Error).message).toContain('model.safetensors');
    } finally {
      tmp.remove();
    }
  });
});

// Expected tokens from Hugging Face `tokenizers` (Tokenizer.from_file(tokenizer.json), truncation 256).
const REFERENCE: [string, string[]][] = [
  ["Héllo, naïve CAFÉ!! unaffable 東京 don't", ['hello', ',', 'naive', 'cafe', '!', '!', 'una', '##ffa', '##ble', '東', '京', 'don', "'", 't']],
  ['Crème brûlée costs $5.50 (approx.) — ¿Qué? Ωmega straße', ['cr', '##eme', 'br', '##ule', '##e', 'costs', '$', '5', '.', '50', '(', 'approx', '.', ')', '—', '¿', 'que', '?', 'ω', '##me', '##ga', 'st', '##raße']],
  ['Tab\there\u0000and\u200bzero\ufeffwidth\u00a0nbsp', ['tab', 'here', '##and', '##zer', '##ow', '##id', '##th', 'n', '##bs', '##p']],
  ['antidisestablishmentarianism supercalifragilisticexpialidocious', ['anti', '##dis', '##est', '##ab', '##lish', '##ment', '##arian', '##ism', 'super', '##cal', '##if', '##rag', '##ilis', '##tic', '##ex', '##pia', '##lid', '##oc', '##ious']],
  ['emoji 🙂 and ☃ snowman', ['em', '##oj', '##i', '[UNK]', 'and', '[UNK]', 'snow', '##man']],
  ['x'.repeat(101), ['[UNK]']],
  ['İstanbul ΣΊΣΥΦΟΣ ǅemal ﬁne', ['istanbul', 'σ', '##ι', '##σ', '##υ', '##φ', '##ο', '##σ', '[UNK]', 'ﬁ', '##ne']],
  ['e-mail: bob@example.com #42 ~tilde^ `back` |pipe|', ['e', '-', 'mail', ':', 'bob', '@', 'example', '.', 'com', '#', '42', '~', 'til', '##de', '^', '`', 'back', '`', '|', 'pipe', '|']],
];
const REFERENCE_IDS: Record<string, number[]> = {
  "Héllo, naïve CAFÉ!! unaffable 東京 don't": [101, 7592, 1010, 15743, 7668, 999, 999, 14477, 20961, 3468, 1879, 1755, 2123, 1005, 1056, 102],
};

describe('WordPiece tokenizer (tokenizer.json)', () => {
  let tok: WordPieceTokenizer;
  beforeAll(() => {
    if (!provisioned) return;
    tok = new WordPieceTokenizer(JSON.parse(readFileSync(join(localMiniLMDir(modelsDir), 'tokenizer.json'), 'utf8')), { maxLength: 256 });
  });

  it('matches Hugging Face tokenizers on accents, punctuation, CJK, control characters, ##pieces and [UNK]', (ctx) => {
    if (!provisioned) return ctx.skip(skipReason);
    for (const [text, pieces] of REFERENCE) {
      const enc = tok.encode(text);
      expect(enc.tokens, JSON.stringify(text)).toEqual(['[CLS]', ...pieces, '[SEP]']);
      // every id is the vocabulary's id of its token
      expect(Array.from(enc.ids)).toEqual(enc.tokens.map((t) => tok.vocab.get(t)));
    }
    for (const [text, ids] of Object.entries(REFERENCE_IDS)) expect(Array.from(tok.encode(text).ids)).toEqual(ids);
  });

  it('continuation pieces are vocabulary entries that rebuild the word', (ctx) => {
    if (!provisioned) return ctx.skip(skipReason);
    for (const word of ['unbelievably', 'tokenization', 'keelboat', 'refundability']) {
      const pieces = tok.wordPieces(word);
      expect(pieces.length).toBeGreaterThan(1);
      expect(pieces.slice(1).every((p) => p.startsWith('##'))).toBe(true);
      expect(pieces.every((p) => tok.vocab.has(p))).toBe(true);
      expect(pieces.map((p) => p.replace(/^##/, '')).join('')).toBe(word);
    }
  });

  it('truncates to 256 ids: [CLS], the first 254 pieces, [SEP]', (ctx) => {
    if (!provisioned) return ctx.skip(skipReason);
    const text = Array.from({ length: 200 }, (_, i) => `item-${i}`).join(' ');
    const all = tok.tokenize(text);
    expect(all.length).toBeGreaterThan(254);
    const enc = tok.encode(text);
    expect(enc.ids.length).toBe(256);
    expect(enc.truncated).toBe(true);
    expect(enc.tokens).toEqual(['[CLS]', ...all.slice(0, 254), '[SEP]']);
    const shortEnc = tok.encode('just a few words');
    expect(shortEnc.truncated).toBe(false);
    expect(shortEnc.ids.length).toBe(tok.tokenize('just a few words').length + 2);
  });
});

describe('safetensors reader', () => {
  function file(header: object, data: Uint8Array): Uint8Array {
    const h = Buffer.from(JSON.stringify(header));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(h.length));
    return new Uint8Array(Buffer.concat([len, h, data]));
  }

  it('reads F32 tensors by name and shape, little-endian', () => {
    const vals = new Float32Array([1.5, -2, 3.25, 0, 7, -0.125]);
    const bytes = Buffer.alloc(vals.length * 4);
    vals.forEach((v, i) => bytes.writeFloatLE(v, i * 4));
    const st = parseSafetensors(file({ __metadata__: { format: 'pt' }, a: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] }, b: { dtype: 'F32', shape: [2], data_offsets: [16, 24] } }, bytes));
    expect(st.metadata).toEqual({ format: 'pt' });
    expect(Array.from(st.f32('a', [2, 2]))).toEqual([1.5, -2, 3.25, 0]);
    expect(Array.from(st.f32('b'))).toEqual([7, -0.125]);
    expect(() => st.f32('a', [4])).toThrow(/shape \[2, 2\], expected \[4\]/);
    expect(() => st.f32('nope')).toThrow(/no tensor 'nope'/);
  });

  it('refuses truncated files, bad headers and out-of-range offsets', () => {
    expect(() => parseSafetensors(new Uint8Array(4))).toThrow(/too short/);
    const bad = file({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, new Uint8Array(8));
    expect(() => parseSafetensors(bad)).toThrow(/outside the file/);
    const huge = new Uint8Array(16);
    new DataView(huge.buffer).setBigUint64(0, 1000n, true);
    expect(() => parseSafetensors(huge)).toThrow(/does not fit/);
  });
});

describe('HashingEmbeddings (not a model: store mechanics only)', () => {
  it('is deterministic, unit length, and scores shared words above disjoint ones', async () => {
    const h = new HashingEmbeddings({ dim: 128 });
    expect(h.id).toBe('hashing:128');
    expect(await h.dimensions()).toBe(128);
    const [a, b, c] = await h.embedDocuments(['refund the invoice please', 'Please REFUND the invoice!', 'volcano piano zebra']);
    expect(await h.embedQuery('refund the invoice please')).toEqual(a);
    expect(Math.hypot(...a!)).toBeCloseTo(1, 10);
    expect(cosineSimilarity(a!, b!)).toBeCloseTo(1, 10); // same words, case and punctuation ignored
    expect(cosineSimilarity(a!, c!)).toBeLessThan(cosineSimilarity(a!, b!));
    expect(await h.embedQuery('')).toEqual(new Array(128).fill(0));
  });
});

describe('createEmbeddings', () => {
  let tmp: ReturnType<typeof tempDir>;
  beforeAll(() => (tmp = tempDir('keel-emb-')));
  afterAll(() => tmp.remove());

  it('builds each provider from its spec', () => {
    expect(createEmbeddings({ spec: 'local:all-minilm-l6-v2', modelsDir: tmp.path, modelEnv: {} }).id).toBe('local:all-minilm-l6-v2');
    expect(createEmbeddings({ spec: 'openai:text-embedding-3-small', modelsDir: tmp.path, modelEnv: { OPENAI_API_KEY: 'sk-test' } }).id).toBe('openai:text-embedding-3-small');
    expect(createEmbeddings({ spec: 'openai:nomic', modelsDir: tmp.path, modelEnv: { KEEL_OPENAI_BASE_URL: 'http://127.0.0.1:9/v1' } }).id).toBe('openai:nomic');
    expect(createEmbeddings({ spec: 'ollama:nomic-embed-text', modelsDir: tmp.path, modelEnv: {} }).id).toBe('ollama:nomic-embed-text');
    expect(createEmbeddings({ spec: 'hashing:64', modelsDir: tmp.path, modelEnv: {} }).id).toBe('hashing:64');
  });

  it('refuses a malformed spec, an unknown provider or local model, and openai without a key or base URL', () => {
    const code = (spec: string, modelEnv: Record<string, string> = {}): string | undefined => {
      try {
        createEmbeddings({ spec, modelsDir: tmp.path, modelEnv });
        return undefined;
      } catch (e) {
        expect((e as Error).message).toContain('KEEL_');
        return (e as { code?: string }).code;
      }
    };
    expect(code('minilm')).toBe('EMBEDDINGS_CONFIG_INVALID');
    expect(code('cohere:embed-v3')).toBe('EMBEDDINGS_CONFIG_INVALID');
    expect(code('local:bge-small')).toBe('EMBEDDINGS_CONFIG_INVALID');
    expect(code('openai:text-embedding-3-small')).toBe('EMBEDDINGS_CONFIG_INVALID');
    expect(code('openai:x', { KEEL_OPENAI_BASE_URL: 'not a url' })).toBe('EMBEDDINGS_CONFIG_INVALID');
    expect(code('hashing:0')).toBe('EMBEDDINGS_CONFIG_INVALID');
  });

  it('a local model that is not provisioned fails on first use with EMBEDDINGS_MODEL_MISSING naming the path and npm run provision', async () => {
    const e = createEmbeddings({ spec: 'local:all-minilm-l6-v2', modelsDir: tmp.path, modelEnv: {} });
    const err = await e.embedQuery('hello').catch((x: unknown) => x);
    expect(isEmbeddingsError(err, 'EMBEDDINGS_MODEL_MISSING')).toBe(true);
    expect((err as Error).message).toContain(localMiniLMDir(tmp.path));
    expect((err as Error).message).toContain('npm run provision');
    expect((err as { retryable: boolean }).retryable).toBe(false);
  });
});
