/**
 * Errors of the embeddings layer. Check them by `code`, not only with `instanceof`:
 * `isEmbeddingsError(err, 'EMBEDDINGS_MODEL_MISSING')`.
 */
import { KeelError } from '../../config/index.ts';

export type EmbeddingsErrorCode =
  /** the local model's files are not in `KEEL_MODELS_DIR`: run `npm run provision` */
  | 'EMBEDDINGS_MODEL_MISSING'
  /** `KEEL_EMBEDDINGS` (or its endpoint variables) is malformed or names an unknown provider/model */
  | 'EMBEDDINGS_CONFIG_INVALID'
  /** the model files are there but unreadable or inconsistent, or a remote provider failed */
  | 'EMBEDDINGS_FAILED';

export interface EmbeddingsErrorOptions {
  cause?: unknown;
  retryable?: boolean;
  /** the embeddings id, e.g. `local:all-minilm-l6-v2` */
  model?: string;
  /** the file or directory concerned, when there is one */
  path?: string;
}

export class EmbeddingsError extends KeelError {
  declare readonly code: EmbeddingsErrorCode;
  readonly model: string | undefined;
  readonly path: string | undefined;
  constructor(code: EmbeddingsErrorCode, message: string, opts: EmbeddingsErrorOptions = {}) {
    super(code, message, { cause: opts.cause, retryable: opts.retryable ?? false });
    this.name = 'EmbeddingsError';
    this.model = opts.model;
    this.path = opts.path;
  }
}

export function isEmbeddingsError(err: unknown, code?: EmbeddingsErrorCode): err is EmbeddingsError {
  if (typeof err !== 'object' || err === null) return false;
  const c = (err as { code?: unknown }).code;
  return typeof c === 'string' && c.startsWith('EMBEDDINGS_') && (code === undefined || c === code);
}
