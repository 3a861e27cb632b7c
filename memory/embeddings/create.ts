import { EmbeddingsError } from './errors.ts';
import { HashingEmbeddings } from './hashing.ts';
import { LocalMiniLMEmbeddings, LOCAL_MINILM_NAME } from './local.ts';
import { RemoteEmbeddings } from './remote.ts';
import type { KeelEmbeddings } from './types.ts';

export interface CreateEmbeddingsOptions {
  /** `KeelConfig.embeddings` (KEEL_EMBEDDINGS): `local:all-minilm-l6-v2` (default), `openai:<model>`, `ollama:<model>`, or `hashing:<dim>` (tests only: not a model) */
  spec: string;
  /** `KeelConfig.modelsDir` (KEEL_MODELS_DIR): where `local:` model files are */
  modelsDir: string;
  /** `KeelConfig.modelEnv`: KEEL_OPENAI_BASE_URL, OPENAI_API_KEY, KEEL_OLLAMA_URL are read from it */
  modelEnv: Record<string, string>;
}

export const EMBEDDING_PROVIDERS = ['local', 'openai', 'ollama', 'hashing'] as const;

function invalid(message: string): EmbeddingsError {
  return new EmbeddingsError('EMBEDDINGS_CONFIG_INVALID', message);
}

function url(variable: string, v: string): string {
  try {
    const u = new URL(v);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('not http(s)');
    return v;
  } catch {
    throw invalid(`${variable}='${v}' is not an http(s) URL`);
  }
}

/**
 * The embeddings `KEEL_EMBEDDINGS` names. Nothing is loaded or called here: a local model loads
 * on first use (EMBEDDINGS_MODEL_MISSING then, if it is not provisioned); a malformed spec or a
 * missing key fails now with EMBEDDINGS_CONFIG_INVALID.
 */
export function createEmbeddings(o: CreateEmbeddingsOptions): KeelEmbeddings {
  const m = /^([a-z]+):(.+)$/.exec(o.spec.trim());
  if (!m) throw invalid(`KEEL_EMBEDDINGS='${o.spec}' is not provider:model (e.g. local:${LOCAL_MINILM_NAME}, openai:text-embedding-3-small, ollama:nomic-embed-text)`);
  const [, provider, model] = m as unknown as [string, string, string];
  const env = o.modelEnv;
  switch (provider) {
    case 'local':
      if (model !== LOCAL_MINILM_NAME) throw invalid(`KEEL_EMBEDDINGS='${o.spec}': the only embedded model is local:${LOCAL_MINILM_NAME}`);
      return new LocalMiniLMEmbeddings({ modelsDir: o.modelsDir });
    case 'openai': {
      const baseUrl = env.KEEL_OPENAI_BASE_URL ? url('KEEL_OPENAI_BASE_URL', env.KEEL_OPENAI_BASE_URL) : undefined;
      if (!baseUrl && !env.OPENAI_API_KEY) throw invalid(`KEEL_EMBEDDINGS='${o.spec}' needs OPENAI_API_KEY (or KEEL_OPENAI_BASE_URL for an OpenAI-compatible endpoint that needs no key)`);
      return new RemoteEmbeddings({ provider: 'openai', model, baseUrl, apiKey: env.OPENAI_API_KEY });
    }
    case 'ollama':
      return new RemoteEmbeddings({ provider: 'ollama', model, baseUrl: env.KEEL_OLLAMA_URL ? url('KEEL_OLLAMA_URL', env.KEEL_OLLAMA_URL) : undefined });
    case 'hashing': {
      const dim = Number(model);
      if (!Number.isInteger(dim) || dim < 1 || dim > 65536) throw invalid(`KEEL_EMBEDDINGS='${o.spec}': hashing:<dim> needs a dimension from 1 to 65536`);
      return new HashingEmbeddings({ dim });
    }
    default:
      throw invalid(`KEEL_EMBEDDINGS='${o.spec}': unknown provider '${provider}' (known: ${EMBEDDING_PROVIDERS.join(', ')})`);
  }
}
