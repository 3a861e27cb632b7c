/**
 * Remote embeddings by configuration: `openai:<model>` through `OpenAIEmbeddings`
 * (`KEEL_OPENAI_BASE_URL` for any OpenAI-compatible `/v1/embeddings` endpoint, key
 * `OPENAI_API_KEY`, not needed when a base URL is set) and `ollama:<model>` through
 * `OllamaEmbeddings` (`KEEL_OLLAMA_URL`). Failures become `EMBEDDINGS_FAILED` with the
 * provider error's `retryable` (429/5xx/network: yes; 4xx: no) and the provider error as `cause`.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { Embeddings } from '@langchain/core/embeddings';
import type * as OpenAI from '@langchain/openai';
import type * as Ollama from '@langchain/ollama';
import type * as Models from '../../models/index.ts';

// models/ (and LangChain's chat stack with it) loads on the first remote call, not when memory/ is imported
let models: typeof Models | undefined;
const loadModels = async (): Promise<typeof Models> => (models ??= await import('../../models/index.ts'));
/** the same defaults as models/registry.ts (DEFAULT_OLLAMA_URL, DEFAULT_MODEL_TIMEOUT_MS) */
const DEFAULT_OLLAMA_URL = 'http://127.0.0.1:11434';
const DEFAULT_MODEL_TIMEOUT_MS = 120_000;
import { EmbeddingsError } from './errors.ts';
import type { KeelEmbeddings } from './types.ts';

/** Loaded on first use, as models/ does, so a process that never embeds remotely never loads the SDKs. */
function providerModule<T>(pkg: '@langchain/openai' | '@langchain/ollama'): T {
  return createRequire(import.meta.url)(fileURLToPath(import.meta.resolve(pkg))) as T;
}

/** Published output sizes, so `dimensions()` need not spend a request on api.openai.com. */
const KNOWN_OPENAI_DIMENSIONS: Record<string, number> = {
  'text-embedding-3-small': 1536,
  'text-embedding-3-large': 3072,
  'text-embedding-ada-002': 1536,
};

export interface RemoteEmbeddingsOptions {
  provider: 'openai' | 'ollama';
  model: string;
  /** the endpoint: an OpenAI-compatible base URL (`…/v1`) or the Ollama server */
  baseUrl?: string;
  apiKey?: string;
  /** retries of the provider client on retryable failures (default 2) */
  maxRetries?: number;
  timeoutMs?: number;
}

export class RemoteEmbeddings extends Embeddings implements KeelEmbeddings {
  readonly id: string;
  readonly provider: 'openai' | 'ollama';
  readonly model: string;
  readonly endpoint: string;
  private inner: Embeddings | undefined;
  private dims: number | undefined;
  private readonly o: RemoteEmbeddingsOptions;
  constructor(o: RemoteEmbeddingsOptions) {
    super({ maxRetries: 0 }); // the provider client retries; this wrapper does not retry again
    this.o = o;
    this.provider = o.provider;
    this.model = o.model;
    this.id = `${o.provider}:${o.model}`;
    this.endpoint = o.baseUrl ?? (o.provider === 'openai' ? 'https://api.openai.com/v1' : DEFAULT_OLLAMA_URL);
    if (o.provider === 'openai' && !o.baseUrl) this.dims = KNOWN_OPENAI_DIMENSIONS[o.model];
  }

  private client(): Embeddings {
    if (this.inner) return this.inner;
    const { o } = this;
    const maxRetries = o.maxRetries ?? 2;
    if (o.provider === 'openai') {
      this.inner = new (providerModule<typeof OpenAI>('@langchain/openai').OpenAIEmbeddings)({
        model: o.model,
        // OpenAI-compatible local servers usually ignore the key, but the client insists on one
        apiKey: o.apiKey || 'not-needed',
        maxRetries,
        timeout: o.timeoutMs ?? DEFAULT_MODEL_TIMEOUT_MS,
        configuration: o.baseUrl ? { baseURL: o.baseUrl } : {},
        // the SDK otherwise asks for base64, which not every OpenAI-compatible server supports
        encodingFormat: 'float',
      });
    } else {
      this.inner = new (providerModule<typeof Ollama>('@langchain/ollama').OllamaEmbeddings)({ model: o.model, baseUrl: this.endpoint, maxRetries });
    }
    return this.inner;
  }

  private async wrap(err: unknown): Promise<EmbeddingsError> {
    const me = (await loadModels()).toModelError(err, { provider: this.provider, model: this.model });
    return new EmbeddingsError('EMBEDDINGS_FAILED', `${this.id} at ${this.endpoint}: ${me.message}`, { cause: me, retryable: me.retryable, model: this.id });
  }

  async embedDocuments(documents: string[]): Promise<number[][]> {
    if (documents.length === 0) return [];
    let out: number[][];
    try {
      out = await this.client().embedDocuments(documents);
    } catch (err) {
      throw await this.wrap(err);
    }
    if (out.length !== documents.length) throw new EmbeddingsError('EMBEDDINGS_FAILED', `${this.id} at ${this.endpoint}: asked for ${documents.length} vectors, got ${out.length}`, { model: this.id, retryable: false });
    if (out[0]) this.dims = out[0].length;
    return out;
  }

  async embedQuery(document: string): Promise<number[]> {
    let v: number[];
    try {
      v = await this.client().embedQuery(document);
    } catch (err) {
      throw await this.wrap(err);
    }
    this.dims = v.length;
    return v;
  }

  /** The vector length: published for OpenAI's own models, otherwise learnt from one embedding (asked once). */
  async dimensions(): Promise<number> {
    if (this.dims === undefined) this.dims = (await this.embedQuery('dimensions')).length;
    return this.dims;
  }
}
