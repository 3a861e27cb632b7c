/**
 * Typed errors of the LangGraph checkpointer. Check them by `code` (stable across processes and
 * package copies), not only with `instanceof`: `isCheckpointError(err, 'CHECKPOINT_BUSY')`.
 * Every one is a {@link KeelError}.
 */
import { KeelError } from '../../config/index.ts';

export type CheckpointErrorCode =
  /** the RunnableConfig lacks `configurable.thread_id` (or `checkpoint_id` where one is required) */
  | 'CHECKPOINT_INVALID_CONFIG'
  /** the state URL is neither `sqlite:PATH` nor a `mongodb://` / `mongodb+srv://` URL */
  | 'CHECKPOINT_BAD_URL'
  /** SQLite: another process held the write lock longer than the busy timeout */
  | 'CHECKPOINT_BUSY'
  /** the database cannot be opened or reached */
  | 'CHECKPOINT_UNAVAILABLE'
  /** the saver was closed */
  | 'CHECKPOINT_CLOSED';

export class CheckpointError extends KeelError {
  declare readonly code: CheckpointErrorCode;
  constructor(code: CheckpointErrorCode, message: string, opts: { cause?: unknown; retryable?: boolean } = {}) {
    super(code, message, opts);
    this.name = 'CheckpointError';
  }
}

export function isCheckpointError(err: unknown, code?: CheckpointErrorCode): err is CheckpointError {
  if (typeof err !== 'object' || err === null) return false;
  const c = (err as { code?: unknown }).code;
  return typeof c === 'string' && c.startsWith('CHECKPOINT_') && (code === undefined || c === code);
}
