import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { StateError } from './errors.ts';

/** Parses `KEEL_STATE`: `sqlite:PATH` or a `mongodb://` / `mongodb+srv://` URL. */
export function parseStateUrl(url: string): { kind: 'sqlite'; path: string } | { kind: 'mongodb'; url: string } {
  if (url.startsWith('sqlite:')) {
    const path = url.slice('sqlite:'.length);
    if (!path) throw new StateError('STATE_BAD_URL', `KEEL_STATE '${url}' names no file: use sqlite:/path/to/keel.db`);
    return { kind: 'sqlite', path };
  }
  if (url.startsWith('mongodb://') || url.startsWith('mongodb+srv://')) return { kind: 'mongodb', url };
  throw new StateError('STATE_BAD_URL', `KEEL_STATE '${url}' is neither sqlite:PATH nor a mongodb:// URL`);
}

/** Host part of a MongoDB URL, credentials removed, for logs and health output. */
export function redactMongoUrl(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//***@').replace(/\?.*$/, '');
}

/** Opens an SQLite file the way every Keel process does: WAL, busy timeout, foreign keys. */
export function openSqlite(path: string): DatabaseSync {
  try {
    mkdirSync(dirname(path), { recursive: true });
  } catch (err) {
    // a sandboxed agent process may not write the data dir itself (docs/sandbox.md), which the
    // engine created before it; node:sqlite opens the file regardless of the permission model
    if ((err as NodeJS.ErrnoException).code !== 'ERR_ACCESS_DENIED') throw err;
  }
  const db = new DatabaseSync(path, { timeout: 5_000 });
  db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;');
  return db;
}
