import type { SerializerProtocol } from '@langchain/langgraph-checkpoint';
import { parseStateUrl } from '../../shared-state/index.ts';
import { CheckpointError } from './errors.ts';
import { MongoCheckpointBackend, type MongoCheckpointOptions } from './mongo-backend.ts';
import { KeelCheckpointSaver } from './saver.ts';
import { SqliteCheckpointBackend, type SqliteCheckpointOptions } from './sqlite-backend.ts';

export interface CheckpointerOptions {
  /** options of the SQLite backend (`sqlite:PATH`) */
  sqlite?: SqliteCheckpointOptions;
  /** options of the MongoDB backend (`mongodb://...`) */
  mongodb?: MongoCheckpointOptions;
  /** how checkpoints, channel values and writes are encoded (default LangGraph's JsonPlusSerializer) */
  serde?: SerializerProtocol;
}

/**
 * Opens a checkpointer on the shared state named by a `KEEL_STATE` value: `sqlite:PATH` (tables
 * `lg_*` in that file, WAL, safe for several processes) or a `mongodb://` / `mongodb+srv://` URL
 * (collections `lg_*`). Throws `CheckpointError` `CHECKPOINT_BAD_URL` or `CHECKPOINT_UNAVAILABLE`.
 */
export async function createCheckpointer(stateUrl: string, opts: CheckpointerOptions = {}): Promise<KeelCheckpointSaver> {
  let parsed: ReturnType<typeof parseStateUrl>;
  try {
    parsed = parseStateUrl(stateUrl);
  } catch (err) {
    throw new CheckpointError('CHECKPOINT_BAD_URL', (err as Error).message, { cause: err });
  }
  const backend = parsed.kind === 'sqlite' ? new SqliteCheckpointBackend(parsed.path, opts.sqlite) : await MongoCheckpointBackend.open(parsed.url, opts.mongodb);
  return new KeelCheckpointSaver(backend, opts.serde);
}
