import { Binary, MongoClient, MongoServerError, type AnyBulkWriteOperation, type Collection, type Db, type Filter, type WriteConcernSettings } from 'mongodb';
import { redactMongoUrl } from '../../shared-state/index.ts';
import type { BlobRow, CheckpointBackend, CheckpointKeyRow, CheckpointRow, ListQuery, WriteRow } from './backend.ts';
import { CheckpointError } from './errors.ts';

export interface MongoCheckpointOptions {
  /** database name; default the URL's path, else `keel` */
  database?: string;
  /** default `{ w: 'majority', journal: true }` */
  writeConcern?: WriteConcernSettings;
  /** default 10 000 ms */
  serverSelectionTimeoutMS?: number;
  /** use this connected client instead of opening one (it is then not closed by `close()`) */
  client?: MongoClient;
}

interface CheckpointDoc {
  _id: string;
  thread_id: string;
  checkpoint_ns: string;
  checkpoint_id: string;
  parent_checkpoint_id: string | null;
  type: string;
  checkpoint: Binary;
  metadata_type: string;
  metadata: Binary;
  created_at: Date;
}

interface BlobDoc {
  _id: string;
  thread_id: string;
  checkpoint_ns: string;
  channel: string;
  version: string;
  type: string;
  value: Binary;
}

interface WriteDoc {
  _id: string;
  thread_id: string;
  checkpoint_ns: string;
  checkpoint_id: string;
  task_id: string;
  idx: number;
  channel: string;
  type: string;
  value: Binary;
  task_path: string;
}

/** Composite keys as `_id` strings: unique without relying on unique secondary indexes. */
const key = (...parts: (string | number)[]) => JSON.stringify(parts);

const bin = (b: Uint8Array) => new Binary(b);
const bytes = (b: Binary | Uint8Array): Uint8Array => (b instanceof Uint8Array ? b : b.value());

function databaseFromUrl(url: string): string | undefined {
  const m = /^mongodb(?:\+srv)?:\/\/[^/]+\/([^?]+)/.exec(url);
  return m?.[1] ? decodeURIComponent(m[1]) : undefined;
}

/**
 * Checkpoint documents in MongoDB: collections `lg_checkpoints`, `lg_blobs`, `lg_writes`. Every
 * write is single-document (upserts keyed by `_id`), so it needs neither transactions nor a
 * replica set and runs on FerretDB 1.x as well as on MongoDB.
 */
export class MongoCheckpointBackend implements CheckpointBackend {
  readonly kind = 'mongodb' as const;
  readonly location: string;
  readonly #client: MongoClient;
  readonly #ownsClient: boolean;
  readonly #checkpoints: Collection<CheckpointDoc>;
  readonly #blobs: Collection<BlobDoc>;
  readonly #writes: Collection<WriteDoc>;

  private constructor(client: MongoClient, ownsClient: boolean, db: Db, url: string) {
    this.#client = client;
    this.#ownsClient = ownsClient;
    this.#checkpoints = db.collection('lg_checkpoints');
    this.#blobs = db.collection('lg_blobs');
    this.#writes = db.collection('lg_writes');
    this.location = `${redactMongoUrl(url)} db=${db.databaseName}`;
  }

  static async open(url: string, opts: MongoCheckpointOptions = {}): Promise<MongoCheckpointBackend> {
    const client =
      opts.client ??
      new MongoClient(url, {
        writeConcern: opts.writeConcern ?? { w: 'majority', journal: true },
        ignoreUndefined: true,
        serverSelectionTimeoutMS: opts.serverSelectionTimeoutMS ?? 10_000,
      });
    const owns = opts.client === undefined;
    try {
      if (owns) await client.connect();
      const db = client.db(opts.database ?? databaseFromUrl(url) ?? 'keel');
      const backend = new MongoCheckpointBackend(client, owns, db, url);
      await backend.#ensureIndexes();
      return backend;
    } catch (err) {
      if (owns) await client.close().catch(() => undefined);
      throw new CheckpointError('CHECKPOINT_UNAVAILABLE', `cannot open the MongoDB checkpointer at ${redactMongoUrl(url)}: ${(err as Error).message}`, {
        cause: err,
        retryable: true,
      });
    }
  }

  async #ensureIndexes(): Promise<void> {
    await Promise.all([
      this.#checkpoints.createIndex({ thread_id: 1, checkpoint_ns: 1, checkpoint_id: -1 }, { name: 'lg_checkpoints_thread' }),
      this.#checkpoints.createIndex({ checkpoint_id: -1 }, { name: 'lg_checkpoints_id' }),
      this.#blobs.createIndex({ thread_id: 1 }, { name: 'lg_blobs_thread' }),
      this.#writes.createIndex({ thread_id: 1, checkpoint_ns: 1, checkpoint_id: 1 }, { name: 'lg_writes_checkpoint' }),
    ]);
  }

  async putCheckpoint(row: CheckpointRow, blobs: BlobRow[]): Promise<void> {
    // Blobs first: a checkpoint must never be visible before the channel values it names.
    if (blobs.length > 0) {
      await this.#blobs.bulkWrite(
        blobs.map((b) => {
          const doc: BlobDoc = {
            _id: key(row.threadId, row.ns, b.channel, b.version),
            thread_id: row.threadId,
            checkpoint_ns: row.ns,
            channel: b.channel,
            version: b.version,
            type: b.type,
            value: bin(b.value),
          };
          const { _id, ...fields } = doc;
          return { updateOne: { filter: { _id }, update: { $setOnInsert: fields }, upsert: true } };
        }),
        { ordered: false },
      );
    }
    const doc: CheckpointDoc = {
      _id: key(row.threadId, row.ns, row.checkpointId),
      thread_id: row.threadId,
      checkpoint_ns: row.ns,
      checkpoint_id: row.checkpointId,
      parent_checkpoint_id: row.parentId ?? null,
      type: row.type,
      checkpoint: bin(row.checkpoint),
      metadata_type: row.metadataType,
      metadata: bin(row.metadata),
      created_at: new Date(),
    };
    const { _id, ...fields } = doc;
    await this.#checkpoints.replaceOne({ _id }, fields, { upsert: true });
  }

  async getCheckpoint(threadId: string, ns: string, checkpointId: string | undefined): Promise<CheckpointRow | undefined> {
    const d =
      checkpointId === undefined
        ? await this.#checkpoints.find({ thread_id: threadId, checkpoint_ns: ns }).sort({ checkpoint_id: -1 }).limit(1).next()
        : await this.#checkpoints.findOne({ _id: key(threadId, ns, checkpointId) });
    if (!d) return undefined;
    return {
      threadId: d.thread_id,
      ns: d.checkpoint_ns,
      checkpointId: d.checkpoint_id,
      parentId: d.parent_checkpoint_id ?? undefined,
      type: d.type,
      checkpoint: bytes(d.checkpoint),
      metadataType: d.metadata_type,
      metadata: bytes(d.metadata),
    };
  }

  async *listKeys(q: ListQuery): AsyncIterable<CheckpointKeyRow> {
    const filter: Filter<CheckpointDoc> = {};
    if (q.threadId !== undefined) filter.thread_id = q.threadId;
    if (q.ns !== undefined) filter.checkpoint_ns = q.ns;
    if (q.checkpointId !== undefined || q.before !== undefined) {
      filter.checkpoint_id = {};
      if (q.checkpointId !== undefined) filter.checkpoint_id.$eq = q.checkpointId;
      if (q.before !== undefined) filter.checkpoint_id.$lt = q.before;
    }
    let cursor = this.#checkpoints
      .find(filter, { projection: { thread_id: 1, checkpoint_ns: 1, checkpoint_id: 1, metadata_type: 1, metadata: 1 } })
      .sort({ checkpoint_id: -1, thread_id: 1, checkpoint_ns: 1 });
    if (q.limit !== undefined) cursor = cursor.limit(q.limit);
    try {
      for await (const d of cursor) {
        yield { threadId: d.thread_id, ns: d.checkpoint_ns, checkpointId: d.checkpoint_id, metadataType: d.metadata_type, metadata: bytes(d.metadata) };
      }
    } finally {
      await cursor.close();
    }
  }

  async getBlobs(threadId: string, ns: string, versions: ReadonlyArray<readonly [string, string]>): Promise<BlobRow[]> {
    const ids = versions.map(([channel, version]) => key(threadId, ns, channel, version));
    const docs = await this.#blobs.find({ _id: { $in: ids } }).toArray();
    return docs.map((d) => ({ channel: d.channel, version: d.version, type: d.type, value: bytes(d.value) }));
  }

  async getWrites(threadId: string, ns: string, checkpointId: string): Promise<WriteRow[]> {
    const docs = await this.#writes.find({ thread_id: threadId, checkpoint_ns: ns, checkpoint_id: checkpointId }).toArray();
    return docs.map((d) => ({ taskId: d.task_id, idx: d.idx, channel: d.channel, type: d.type, value: bytes(d.value), taskPath: d.task_path }));
  }

  async putWrites(threadId: string, ns: string, checkpointId: string, rows: WriteRow[], replace: boolean): Promise<void> {
    const ops: AnyBulkWriteOperation<WriteDoc>[] = rows.map((w) => {
      const doc: WriteDoc = {
        _id: key(threadId, ns, checkpointId, w.taskId, w.idx),
        thread_id: threadId,
        checkpoint_ns: ns,
        checkpoint_id: checkpointId,
        task_id: w.taskId,
        idx: w.idx,
        channel: w.channel,
        type: w.type,
        value: bin(w.value),
        task_path: w.taskPath,
      };
      const { _id, ...fields } = doc;
      return replace
        ? { replaceOne: { filter: { _id }, replacement: fields, upsert: true } }
        : { updateOne: { filter: { _id }, update: { $setOnInsert: fields }, upsert: true } };
    });
    await this.#writes.bulkWrite(ops, { ordered: false });
  }

  async deleteThread(threadId: string): Promise<void> {
    // Checkpoints first: once they are gone nothing refers to the writes and blobs.
    await this.#checkpoints.deleteMany({ thread_id: threadId });
    await Promise.all([this.#writes.deleteMany({ thread_id: threadId }), this.#blobs.deleteMany({ thread_id: threadId })]);
  }

  normalizeError(err: unknown): unknown {
    if (err instanceof CheckpointError || err instanceof MongoServerError) return err;
    const name = (err as { name?: string } | undefined)?.name ?? '';
    if (/MongoNetwork|MongoServerSelection|MongoTopologyClosed|MongoNotConnected/.test(name)) {
      return new CheckpointError('CHECKPOINT_UNAVAILABLE', `MongoDB checkpointer at ${this.location} is unavailable: ${(err as Error).message}`, {
        cause: err,
        retryable: true,
      });
    }
    return err;
  }

  async close(): Promise<void> {
    if (this.#ownsClient) await this.#client.close();
  }
}
