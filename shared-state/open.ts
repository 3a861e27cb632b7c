import type { WriteConcernSettings } from 'mongodb';
import { createRegistry, type EntityTypeDef, type EntityTypeRegistry } from './entity-types.ts';
import { DEFAULT_MAX_DOCUMENT_BYTES } from './core.ts';
import { StateError } from './errors.ts';
import { parseStateUrl } from './health.ts';
import { SqliteStore } from './sqlite-store.ts';
import type { StateStore } from './types.ts';

export interface OpenStoreOptions {
  /** entity types this store knows (default: none). Features declare theirs; see agents/index.ts */
  types?: EntityTypeRegistry | readonly EntityTypeDef[];
  /** largest state or append payload in bytes (default 1 MiB) */
  maxDocumentBytes?: number;
  sqlite?: {
    /** default `FULL`: a commit survives power loss; `NORMAL` is faster and may lose the last commits */
    synchronous?: 'FULL' | 'NORMAL';
    /** default 10 s */
    busyTimeoutMs?: number;
  };
  mongodb?: {
    /** default the URL's path, else `keel` */
    database?: string;
    /** default `{ w: 'majority', journal: true }` */
    writeConcern?: WriteConcernSettings;
    /** default 5000 ms; see docs/shared-state.md (cursor semantics) */
    gapSettleMs?: number;
    serverSelectionTimeoutMS?: number;
  };
}

/**
 * Opens the system of record named by a `KEEL_STATE` value: `sqlite:PATH` or a `mongodb://` /
 * `mongodb+srv://` URL.
 */
export async function openStore(url: string, opts: OpenStoreOptions = {}): Promise<StateStore> {
  let parsed: ReturnType<typeof parseStateUrl>;
  try {
    parsed = parseStateUrl(url);
  } catch (err) {
    throw new StateError('STATE_BAD_URL', (err as Error).message, { cause: err });
  }
  const registry = !opts.types ? createRegistry([]) : Array.isArray(opts.types) ? createRegistry(opts.types as EntityTypeDef[]) : (opts.types as EntityTypeRegistry);
  const maxDocumentBytes = opts.maxDocumentBytes ?? DEFAULT_MAX_DOCUMENT_BYTES;
  if (parsed.kind === 'sqlite') {
    try {
      return new SqliteStore(parsed.path, { registry, maxDocumentBytes, ...opts.sqlite });
    } catch (err) {
      if (err instanceof StateError) throw err;
      throw new StateError('STATE_UNAVAILABLE', `cannot open SQLite state store at ${parsed.path}: ${(err as Error).message}`, { cause: err, retryable: true });
    }
  }
  // the MongoDB driver loads only for a MongoDB URL (an embedded SQLite process never pays for it)
  const { MongoStore } = await import('./mongo-store.ts');
  return MongoStore.open(parsed.url, { registry, maxDocumentBytes, ...opts.mongodb });
}
