/**
 * Embeddings for long-term memory, behind LangChain's `Embeddings` interface.
 *
 * ```ts
 * import { createEmbeddings, HashingEmbeddings } from './memory/embeddings/index.ts';
 * const emb = createEmbeddings({ spec: config.embeddings, modelsDir: config.modelsDir, modelEnv: config.modelEnv });
 * const [v] = await emb.embedDocuments(['A man is eating food.']);   // 384 numbers, unit length
 * emb.id;                                                             // 'local:all-minilm-l6-v2'
 * await emb.dimensions();                                             // 384
 * const test = new HashingEmbeddings({ dim: 64 });                    // tests of store mechanics only: not a model
 * ```
 *
 * `KEEL_EMBEDDINGS` (default `local:all-minilm-l6-v2`) picks the model:
 * - `local:all-minilm-l6-v2`: sentence-transformers all-MiniLM-L6-v2 run in-process, its matrix
 *   products on a small WebAssembly SIMD kernel (kernel.wat; plain TypeScript as the fallback,
 *   `backend: 'js'`) (384-d, cosine, texts cut to 256 tokens), from files `npm run provision` puts in
 *   `$KEEL_MODELS_DIR/all-minilm-l6-v2/` (default ~/.cache/keel/models); no network at run time.
 *   Missing files: `EMBEDDINGS_MODEL_MISSING` on first use.
 * - `openai:<model>`: `OpenAIEmbeddings`; `KEEL_OPENAI_BASE_URL` for any OpenAI-compatible
 *   `/v1/embeddings` server, `OPENAI_API_KEY` (not needed with a base URL).
 * - `ollama:<model>`: `OllamaEmbeddings` at `KEEL_OLLAMA_URL` (default http://127.0.0.1:11434).
 * - `hashing:<dim>`: {@link HashingEmbeddings}, a hashed bag of words: NOT a model, for tests.
 */
export type { KeelEmbeddings } from './types.ts';
export { createEmbeddings, EMBEDDING_PROVIDERS } from './create.ts';
export type { CreateEmbeddingsOptions } from './create.ts';
export { LocalMiniLMEmbeddings, loadLocalMiniLM, localMiniLMDir, localMiniLMPresent, LOCAL_MINILM_ID, LOCAL_MINILM_NAME, LOCAL_MINILM_FILES } from './local.ts';
export type { LocalMiniLMOptions, LoadedMiniLM, LocalMiniLMBackend } from './local.ts';
export { RemoteEmbeddings } from './remote.ts';
export type { RemoteEmbeddingsOptions } from './remote.ts';
export { HashingEmbeddings, hashingTokens } from './hashing.ts';
export type { HashingEmbeddingsOptions } from './hashing.ts';
export { WordPieceTokenizer } from './tokenizer.ts';
export type { Encoding, WordPieceTokenizerJson } from './tokenizer.ts';
export { embeddingThroughput } from './throughput.ts';
export type { EmbeddingThroughput } from './throughput.ts';
export { cosineSimilarity } from './vector.ts';
export { EmbeddingsError, isEmbeddingsError } from './errors.ts';
export type { EmbeddingsErrorCode, EmbeddingsErrorOptions } from './errors.ts';
