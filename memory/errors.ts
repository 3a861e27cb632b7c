/**
 * Errors of the memory store. Check them by `code`, not only with `instanceof`:
 * `isMemoryError(err, 'MEMORY_DIMENSION_MISMATCH')`.
 */
import { KeelError } from '../config/index.ts';

export type MemoryErrorCode =
  /** `KEEL_MEMORY` is neither `sqlite-vec:PATH` nor an `http(s)://` Qdrant URL */
  | 'MEMORY_BAD_URL'
  /** the store's vectors have another length than the current embedder's: run `keel memory reindex` */
  | 'MEMORY_DIMENSION_MISMATCH'
  /** a memory handed to `put` (or a query) is malformed */
  | 'MEMORY_INVALID_INPUT'
  /** the sqlite-vec extension could not be loaded */
  | 'MEMORY_EXTENSION_FAILED'
  /** the store (Qdrant) could not be reached or answered with an error */
  | 'MEMORY_UNAVAILABLE'
  /** a caller's AbortSignal stopped a long operation (reindex); what was done stays done */
  | 'MEMORY_ABORTED'
  /** the store was closed */
  | 'MEMORY_CLOSED';

export interface MemoryErrorOptions {
  cause?: unknown;
  retryable?: boolean;
  /** the store's dimension and the embedder's, for MEMORY_DIMENSION_MISMATCH */
  storeDim?: number;
  embedderDim?: number;
}

export class MemoryError extends KeelError {
  declare readonly code: MemoryErrorCode;
  readonly storeDim: number | undefined;
  readonly embedderDim: number | undefined;
  constructor(code: MemoryErrorCode, message: string, opts: MemoryErrorOptions = {}) {
    super(code, message, { cause: opts.cause, retryable: opts.retryable ?? code === 'MEMORY_UNAVAILABLE' });
    this.name = 'MemoryError';
    this.storeDim = opts.storeDim;
    this.embedderDim = opts.embedderDim;
  }
}

export function isMemoryError(err: unknown, code?: MemoryErrorCode): err is MemoryError {
  if (typeof err !== 'object' || err === null) return false;
  const c = (err as { code?: unknown }).code;
  return typeof c === 'string' && c.startsWith('MEMORY_') && (code === undefined || c === code);
}

export function dimensionMismatch(storeDim: number, storeModel: string, embedderDim: number, embedderId: string): MemoryError {
  return new MemoryError(
    'MEMORY_DIMENSION_MISMATCH',
    `the memory store holds ${storeDim}-dimensional vectors from '${storeModel}', but the embedder '${embedderId}' makes ${embedderDim}-dimensional ones: ` +
      `run \`keel memory reindex\` to re-embed every memory with '${embedderId}' (or set KEEL_EMBEDDINGS back to '${storeModel}')`,
    { storeDim, embedderDim },
  );
}
