import type { DatabaseSync, SQLInputValue, StatementSync } from 'node:sqlite';
import { openSqlite } from '../../shared-state/index.ts';
import type { BlobRow, CheckpointBackend, CheckpointKeyRow, CheckpointRow, ListQuery, WriteRow } from './backend.ts';
import { CheckpointError } from './errors.ts';

export interface SqliteCheckpointOptions {
  /** default `FULL` (a commit survives power loss, as the state store does); `NORMAL` is faster */
  synchronous?: 'FULL' | 'NORMAL';
  /** how long a writer waits for another process's lock before CHECKPOINT_BUSY (default 10 s) */
  busyTimeoutMs?: number;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS lg_checkpoints (
  thread_id TEXT NOT NULL,
  checkpoint_ns TEXT NOT NULL DEFAULT '',
  checkpoint_id TEXT NOT NULL,
  parent_checkpoint_id TEXT,
  type TEXT NOT NULL,
  checkpoint BLOB NOT NULL,
  metadata_type TEXT NOT NULL,
  metadata BLOB NOT NULL,
  created_at TEXT NOT NULL,
  PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
);
CREATE INDEX IF NOT EXISTS lg_checkpoints_by_id ON lg_checkpoints (checkpoint_id);
CREATE TABLE IF NOT EXISTS lg_blobs (
  thread_id TEXT NOT NULL,
  checkpoint_ns TEXT NOT NULL DEFAULT '',
  channel TEXT NOT NULL,
  version TEXT NOT NULL,
  type TEXT NOT NULL,
  value BLOB NOT NULL,
  PRIMARY KEY (thread_id, checkpoint_ns, channel, version)
);
CREATE TABLE IF NOT EXISTS lg_writes (
  thread_id TEXT NOT NULL,
  checkpoint_ns TEXT NOT NULL DEFAULT '',
  checkpoint_id TEXT NOT NULL,
  task_id TEXT NOT NULL,
  idx INTEGER NOT NULL,
  channel TEXT NOT NULL,
  type TEXT NOT NULL,
  value BLOB NOT NULL,
  task_path TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
);
`;

type Row = Record<string, SQLInputValue>;

/**
 * Checkpoint rows in an SQLite file (WAL), tables `lg_checkpoints`, `lg_blobs`, `lg_writes`, next
 * to the state store's tables when it is the same file. Each write is one `BEGIN IMMEDIATE`
 * transaction, so several processes can share the file: a writer waits up to the busy timeout.
 */
export class SqliteCheckpointBackend implements CheckpointBackend {
  readonly kind = 'sqlite' as const;
  readonly location: string;
  readonly #db: DatabaseSync;
  readonly #stmts = new Map<string, StatementSync>();

  constructor(path: string, opts: SqliteCheckpointOptions = {}) {
    this.location = path;
    try {
      this.#db = openSqlite(path);
      this.#db.exec(`PRAGMA synchronous = ${opts.synchronous ?? 'FULL'}; PRAGMA busy_timeout = ${Math.trunc(opts.busyTimeoutMs ?? 10_000)};`);
      this.#tx(() => this.#db.exec(SCHEMA));
    } catch (err) {
      const e = this.normalizeError(err, `cannot open the SQLite checkpointer at ${path}`);
      throw e instanceof CheckpointError
        ? e
        : new CheckpointError('CHECKPOINT_UNAVAILABLE', `cannot open the SQLite checkpointer at ${path}: ${(err as Error).message}`, { cause: err, retryable: true });
    }
  }

  async putCheckpoint(row: CheckpointRow, blobs: BlobRow[]): Promise<void> {
    this.#tx(() => {
      const blob = this.#stmt('INSERT OR IGNORE INTO lg_blobs (thread_id, checkpoint_ns, channel, version, type, value) VALUES (?, ?, ?, ?, ?, ?)');
      for (const b of blobs) blob.run(row.threadId, row.ns, b.channel, b.version, b.type, b.value);
      this.#stmt(
        `INSERT OR REPLACE INTO lg_checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, metadata_type, metadata, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ).run(row.threadId, row.ns, row.checkpointId, row.parentId ?? null, row.type, row.checkpoint, row.metadataType, row.metadata, new Date().toISOString());
    });
  }

  async getCheckpoint(threadId: string, ns: string, checkpointId: string | undefined): Promise<CheckpointRow | undefined> {
    const cols = 'thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, metadata_type, metadata';
    const r =
      checkpointId === undefined
        ? this.#stmt(`SELECT ${cols} FROM lg_checkpoints WHERE thread_id = ? AND checkpoint_ns = ? ORDER BY checkpoint_id DESC LIMIT 1`).get(threadId, ns)
        : this.#stmt(`SELECT ${cols} FROM lg_checkpoints WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?`).get(threadId, ns, checkpointId);
    if (!r) return undefined;
    return {
      threadId: r.thread_id as string,
      ns: r.checkpoint_ns as string,
      checkpointId: r.checkpoint_id as string,
      parentId: (r.parent_checkpoint_id as string | null) ?? undefined,
      type: r.type as string,
      checkpoint: r.checkpoint as Uint8Array,
      metadataType: r.metadata_type as string,
      metadata: r.metadata as Uint8Array,
    };
  }

  async *listKeys(q: ListQuery): AsyncIterable<CheckpointKeyRow> {
    const where: string[] = [];
    const params: SQLInputValue[] = [];
    const add = (clause: string, value: SQLInputValue) => {
      where.push(clause);
      params.push(value);
    };
    if (q.threadId !== undefined) add('thread_id = ?', q.threadId);
    if (q.ns !== undefined) add('checkpoint_ns = ?', q.ns);
    if (q.checkpointId !== undefined) add('checkpoint_id = ?', q.checkpointId);
    if (q.before !== undefined) add('checkpoint_id < ?', q.before);
    let sql = 'SELECT thread_id, checkpoint_ns, checkpoint_id, metadata_type, metadata FROM lg_checkpoints';
    if (where.length) sql += ` WHERE ${where.join(' AND ')}`;
    sql += ' ORDER BY checkpoint_id DESC, thread_id, checkpoint_ns';
    if (q.limit !== undefined) {
      sql += ' LIMIT ?';
      params.push(q.limit);
    }
    // Read the keys at once: the caller loads each checkpoint between yields, on this connection.
    const rows = this.#db.prepare(sql).all(...params) as Row[];
    for (const r of rows) {
      yield {
        threadId: r.thread_id as string,
        ns: r.checkpoint_ns as string,
        checkpointId: r.checkpoint_id as string,
        metadataType: r.metadata_type as string,
        metadata: r.metadata as Uint8Array,
      };
    }
  }

  async getBlobs(threadId: string, ns: string, versions: ReadonlyArray<readonly [string, string]>): Promise<BlobRow[]> {
    const stmt = this.#stmt('SELECT type, value FROM lg_blobs WHERE thread_id = ? AND checkpoint_ns = ? AND channel = ? AND version = ?');
    const out: BlobRow[] = [];
    for (const [channel, version] of versions) {
      const r = stmt.get(threadId, ns, channel, version);
      if (r) out.push({ channel, version, type: r.type as string, value: r.value as Uint8Array });
    }
    return out;
  }

  async getWrites(threadId: string, ns: string, checkpointId: string): Promise<WriteRow[]> {
    const rows = this.#stmt(
      'SELECT task_id, idx, channel, type, value, task_path FROM lg_writes WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?',
    ).all(threadId, ns, checkpointId);
    return rows.map((r) => ({
      taskId: r.task_id as string,
      idx: Number(r.idx),
      channel: r.channel as string,
      type: r.type as string,
      value: r.value as Uint8Array,
      taskPath: r.task_path as string,
    }));
  }

  async putWrites(threadId: string, ns: string, checkpointId: string, rows: WriteRow[], replace: boolean): Promise<void> {
    this.#tx(() => {
      const stmt = this.#stmt(
        `INSERT OR ${replace ? 'REPLACE' : 'IGNORE'} INTO lg_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, type, value, task_path)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      );
      for (const w of rows) stmt.run(threadId, ns, checkpointId, w.taskId, w.idx, w.channel, w.type, w.value, w.taskPath);
    });
  }

  async deleteThread(threadId: string): Promise<void> {
    this.#tx(() => {
      for (const table of ['lg_checkpoints', 'lg_blobs', 'lg_writes']) this.#stmt(`DELETE FROM ${table} WHERE thread_id = ?`).run(threadId);
    });
  }

  normalizeError(err: unknown, what = `SQLite checkpointer at ${this.location}`): unknown {
    if (err instanceof CheckpointError) return err;
    const e = err as { errcode?: number; message?: string } | undefined;
    if (e?.errcode === 5 || e?.errcode === 6 || /database is locked|SQLITE_BUSY/i.test(e?.message ?? '')) {
      return new CheckpointError('CHECKPOINT_BUSY', `${what}: another process held the write lock past the busy timeout`, { cause: err, retryable: true });
    }
    if (/unable to open|disk I\/O|readonly database|not a database/i.test(e?.message ?? '')) {
      return new CheckpointError('CHECKPOINT_UNAVAILABLE', `${what}: ${e?.message}`, { cause: err, retryable: true });
    }
    return err;
  }

  async close(): Promise<void> {
    this.#stmts.clear();
    if (this.#db?.isOpen) this.#db.close();
  }

  #stmt(sql: string): StatementSync {
    let s = this.#stmts.get(sql);
    if (!s) {
      s = this.#db.prepare(sql);
      this.#stmts.set(sql, s);
    }
    return s;
  }

  /** One write transaction; `BEGIN IMMEDIATE` takes the write lock up front so it cannot deadlock on upgrade. */
  #tx(fn: () => void): void {
    this.#db.exec('BEGIN IMMEDIATE');
    try {
      fn();
      this.#db.exec('COMMIT');
    } catch (err) {
      if (this.#db.isTransaction) this.#db.exec('ROLLBACK');
      throw err;
    }
  }
}
