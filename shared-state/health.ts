import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { MongoClient } from 'mongodb';

export interface StateHealth {
  status: 'up' | 'down';
  kind: 'sqlite' | 'mongodb';
  /** file path (sqlite) or host list (mongodb, without credentials) */
  location: string;
  latency_ms?: number;
  error?: string;
}

/** Parses `KEEL_STATE`: `sqlite:PATH` or a `mongodb://` / `mongodb+srv://` URL. */
export function parseStateUrl(url: string): { kind: 'sqlite'; path: string } | { kind: 'mongodb'; url: string } {
  if (url.startsWith('sqlite:')) {
    const path = url.slice('sqlite:'.length);
    if (!path) throw new Error(`KEEL_STATE '${url}' names no file: use sqlite:/path/to/keel.db`);
    return { kind: 'sqlite', path };
  }
  if (url.startsWith('mongodb://') || url.startsWith('mongodb+srv://')) return { kind: 'mongodb', url };
  throw new Error(`KEEL_STATE '${url}' is neither sqlite:PATH nor a mongodb:// URL`);
}

/** Host part of a MongoDB URL, credentials removed, for logs and health output. */
export function redactMongoUrl(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//***@').replace(/\?.*$/, '');
}

/** Opens an SQLite file the way every Keel process does: WAL, busy timeout, foreign keys. */
export function openSqlite(path: string): DatabaseSync {
  mkdirSync(dirname(path), { recursive: true });
  const db = new DatabaseSync(path, { timeout: 5_000 });
  db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;');
  return db;
}

/** A cheap liveness probe of the configured system of record. */
export async function probeState(url: string, opts: { sqlite?: DatabaseSync; mongo?: MongoClient } = {}): Promise<StateHealth> {
  const parsed = parseStateUrl(url);
  const t0 = performance.now();
  if (parsed.kind === 'sqlite') {
    try {
      const db = opts.sqlite ?? openSqlite(parsed.path);
      db.prepare('SELECT 1').get();
      if (!opts.sqlite) db.close();
      return { status: 'up', kind: 'sqlite', location: parsed.path, latency_ms: round(performance.now() - t0) };
    } catch (err) {
      return { status: 'down', kind: 'sqlite', location: parsed.path, error: (err as Error).message };
    }
  }
  const client = opts.mongo ?? new MongoClient(parsed.url, { serverSelectionTimeoutMS: 2_000 });
  try {
    await client.db('admin').command({ ping: 1 });
    return { status: 'up', kind: 'mongodb', location: redactMongoUrl(parsed.url), latency_ms: round(performance.now() - t0) };
  } catch (err) {
    return { status: 'down', kind: 'mongodb', location: redactMongoUrl(parsed.url), error: (err as Error).message };
  } finally {
    if (!opts.mongo) await client.close().catch(() => undefined);
  }
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}
