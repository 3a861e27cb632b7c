/**
 * Online copies of SQLite stores (the system of record, the sqlite-vec memory) for `keel backup`,
 * and the checks `keel backup verify` runs on them (docs/backup.md).
 *
 * ```ts
 * await snapshotSqlite('/srv/keel/keel.db', '/backups/b1/state/keel.db'); // consistent while agents write
 * checkSqlite('/backups/b1/state/keel.db');                               // PRAGMA integrity_check
 * const counts = countState('/backups/b1/state/keel.db');                 // entities by type and status, approvals, audit head
 * const audit = await verifyAuditCopy('/backups/b1/state/keel.db');       // the hash chain, as `keel audit verify`
 * ```
 *
 * A snapshot is SQLite's online backup (`node:sqlite` `backup()`) in one step: it reads one
 * consistent snapshot of the database (a WAL read transaction, so writers in other processes go
 * on) and writes it as a self-contained file (rollback journal, no -wal beside it), mode 0600.
 */
import { chmodSync, copyFileSync, existsSync, mkdtempSync, openSync, fsyncSync, closeSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { backup, DatabaseSync } from 'node:sqlite';
import { KeelError } from '../config/index.ts';
import { parseStateUrl, redactMongoUrl } from './health.ts';
import { openStore } from './open.ts';
import type { AuditVerification } from './types.ts';

export type StateBackupErrorCode =
  /** the store is not one `keel backup` copies (MongoDB: use its own tools) */
  | 'STATE_BACKUP_UNSUPPORTED'
  /** there is no store file where the configuration says */
  | 'STATE_BACKUP_NOT_FOUND'
  /** SQLite could not copy or open the file */
  | 'STATE_BACKUP_FAILED';

export class StateBackupError extends KeelError {
  declare readonly code: StateBackupErrorCode;
  constructor(code: StateBackupErrorCode, message: string, opts: { cause?: unknown } = {}) {
    super(code, message, opts);
    this.name = 'StateBackupError';
  }
}

/**
 * The SQLite file of a `KEEL_STATE` value; a MongoDB URL is refused: a MongoDB deployment is
 * backed up with MongoDB's own tools (`mongodump --oplog` on a replica set, or its managed backups).
 */
export function sqliteStatePath(stateUrl: string): string {
  const p = parseStateUrl(stateUrl);
  if (p.kind === 'sqlite') return p.path;
  throw new StateBackupError(
    'STATE_BACKUP_UNSUPPORTED',
    `KEEL_STATE is MongoDB (${redactMongoUrl(p.url)}): keel backup copies SQLite stores only. Back MongoDB up with its own tools — \`mongodump --uri=<KEEL_STATE> --oplog --archive=keel.archive --gzip\` on a replica set (restore: \`mongorestore --oplogReplay --archive=keel.archive --gzip\`) or your provider's snapshots — and the bus with \`nats stream backup\`. See docs/backup.md.`,
  );
}

/** fsyncs a file (or directory) so a backup survives a crash right after it. */
export function fsyncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Copies a consistent snapshot of an SQLite file while other processes write it, in one backup
 * step (a step of many pages would restart whenever another connection writes). The copy is
 * switched to a rollback journal (self-contained, no -wal), fsynced, and its size returned.
 */
export async function snapshotSqlite(src: string, dest: string): Promise<{ pages: number; bytes: number }> {
  if (!existsSync(src) || statSync(src).size === 0) throw new StateBackupError('STATE_BACKUP_NOT_FOUND', `no SQLite store at ${src}`);
  let db: DatabaseSync | undefined;
  let pages: number;
  try {
    db = new DatabaseSync(src, { timeout: 10_000 });
    pages = await backup(db, dest, { rate: 2 ** 31 - 1 });
  } catch (err) {
    throw new StateBackupError('STATE_BACKUP_FAILED', `cannot copy ${src} to ${dest}: ${(err as Error).message}`, { cause: err });
  } finally {
    db?.close();
  }
  const copy = new DatabaseSync(dest);
  try {
    copy.exec('PRAGMA journal_mode = DELETE');
  } finally {
    copy.close();
  }
  // a copy of the system of record is as private as the original's secrets
  chmodSync(dest, 0o600);
  fsyncPath(dest);
  return { pages, bytes: statSync(dest).size };
}

/** `PRAGMA integrity_check` on a copy, read-only: `ok`, or SQLite's findings (at most 20). */
export function checkSqlite(path: string): { ok: boolean; problems: string[] } {
  let db: DatabaseSync | undefined;
  try {
    db = new DatabaseSync(path, { readOnly: true });
    const rows = db.prepare('PRAGMA integrity_check(20)').all() as Array<{ integrity_check: string }>;
    const problems = rows.map((r) => String(r.integrity_check)).filter((x) => x !== 'ok');
    return { ok: problems.length === 0, problems };
  } catch (err) {
    return { ok: false, problems: [(err as Error).message] };
  } finally {
    db?.close();
  }
}

/** What a state copy holds, counted: compared by `keel backup verify` with what the manifest says. */
export interface StateCounts {
  /** per entity type: all entities, and by the `status` field of their state where they have one */
  entities: Record<string, { total: number; byStatus: Record<string, number> }>;
  events: number;
  /** approvals by state */
  approvals: Record<string, number>;
  /** the audit log: records and the hash of the last one */
  audit: { records: number; head: string | null };
  /** idempotency records (completed tasks and effects) */
  idempotency: number;
  /** the change log's last cursor */
  headCursor: number;
}

/** Counts the records of an SQLite state copy (read-only, raw SQL: no schema is created). */
export function countState(path: string): StateCounts {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    const entities: StateCounts['entities'] = {};
    const byType = db.prepare("SELECT entity_type AS t, coalesce(json_extract(state, '$.status'), '') AS s, count(*) AS n FROM entities GROUP BY 1, 2 ORDER BY 1, 2").all() as Array<{ t: string; s: unknown; n: number }>;
    for (const r of byType) {
      const e = (entities[r.t] ??= { total: 0, byStatus: {} });
      e.total += Number(r.n);
      if (typeof r.s === 'string' && r.s !== '') e.byStatus[r.s] = Number(r.n);
    }
    const approvals: Record<string, number> = {};
    for (const r of db.prepare('SELECT state, count(*) AS n FROM approvals GROUP BY 1 ORDER BY 1').all() as Array<{ state: string; n: number }>) approvals[r.state] = Number(r.n);
    const audit = db.prepare('SELECT count(*) AS n, (SELECT hash FROM audit ORDER BY seq DESC LIMIT 1) AS head FROM audit').get() as { n: number; head: string | null };
    const events = db.prepare('SELECT count(*) AS n, coalesce(max(cursor), 0) AS c FROM events').get() as { n: number; c: number };
    const idem = db.prepare('SELECT count(*) AS n FROM idempotency').get() as { n: number };
    return { entities, events: Number(events.n), approvals, audit: { records: Number(audit.n), head: audit.head ?? null }, idempotency: Number(idem.n), headCursor: Number(events.c) };
  } catch (err) {
    throw new StateBackupError('STATE_BACKUP_FAILED', `cannot count the records of ${path}: ${(err as Error).message}`, { cause: err });
  } finally {
    db.close();
  }
}

/**
 * Verifies the audit hash chain of a state copy exactly as `keel audit verify` does (the store's
 * own `verifyAudit`), on a temporary copy so the backup's file is never touched.
 */
export async function verifyAuditCopy(path: string): Promise<AuditVerification> {
  const dir = mkdtempSync(join(tmpdir(), 'keel-verify-'));
  try {
    const tmp = join(dir, 'keel.db');
    copyFileSync(path, tmp);
    const store = await openStore(`sqlite:${tmp}`);
    try {
      return await store.verifyAudit();
    } finally {
      await store.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Read-only lookups in a state copy, for deciding what of the bus belongs with it. */
export interface StateSnapshotReader {
  /** whether the copy holds this event (the outbox publishes each with `Nats-Msg-Id` = its id) */
  hasEvent(eventId: string): boolean;
  /** an entity's state in the copy, or null */
  entityState<S = Record<string, unknown>>(entityType: string, entityId: string): S | null;
  /** every entity of a type whose state's `status` is one of these */
  entitiesWithStatus<S = Record<string, unknown>>(entityType: string, statuses: readonly string[]): Array<{ id: string; state: S }>;
  close(): void;
}

export function openSnapshotReader(path: string): StateSnapshotReader {
  const db = new DatabaseSync(path, { readOnly: true });
  const hasEvent = db.prepare('SELECT 1 AS x FROM events WHERE event_id = ?');
  const getState = db.prepare('SELECT state FROM entities WHERE entity_type = ? AND entity_id = ?');
  return {
    hasEvent: (id) => hasEvent.get(id) !== undefined,
    entityState: <S,>(type: string, id: string) => {
      const r = getState.get(type, id) as { state: string } | undefined;
      return r ? (JSON.parse(r.state) as S) : null;
    },
    entitiesWithStatus: <S,>(type: string, statuses: readonly string[]) => {
      if (statuses.length === 0) return [];
      const rows = db.prepare(`SELECT entity_id AS id, state FROM entities WHERE entity_type = ? AND json_extract(state, '$.status') IN (${statuses.map(() => '?').join(', ')})`).all(type, ...statuses) as Array<{ id: string; state: string }>;
      return rows.map((r) => ({ id: r.id, state: JSON.parse(r.state) as S }));
    },
    close: () => db.close(),
  };
}
