import { isDeepStrictEqual } from 'node:util';
import type { RunnableConfig } from '@langchain/core/runnables';
import {
  BaseCheckpointSaver,
  TASKS,
  WRITES_IDX_MAP,
  compareWritesSortKeys,
  getCheckpointId,
  maxChannelVersion,
  writesSortKey,
  type ChannelVersions,
  type Checkpoint,
  type CheckpointListOptions,
  type CheckpointMetadata,
  type CheckpointPendingWrite,
  type CheckpointTuple,
  type PendingWrite,
  type SerializerProtocol,
} from '@langchain/langgraph-checkpoint';
import type { BlobRow, CheckpointBackend, CheckpointRow, ListQuery, WriteRow } from './backend.ts';
import { CheckpointError } from './errors.ts';

/** serde type of a channel that has a version but no value (LangGraph's `empty`, as the Postgres saver writes it) */
const EMPTY = 'empty';
/** serde type of `undefined`, which JSON cannot carry */
const UNDEFINED = 'undefined';
const NO_BYTES = new Uint8Array(0);

/**
 * A LangGraph checkpointer on Keel's shared state (SQLite or MongoDB). Checkpoints are stored
 * without their channel values; each channel value is stored once per version as a blob and a
 * checkpoint is rebuilt from the blobs its `channel_versions` name, so a step that changes one
 * channel writes only that channel. Safe for several processes on one database: every row is
 * keyed by (thread, namespace, checkpoint id | channel+version | task id+index), and writes never
 * overwrite what another process recorded except LangGraph's special writes (errors, interrupts).
 *
 * Build one with `createCheckpointer(stateUrl)`; close it with `close()`.
 */
export class KeelCheckpointSaver extends BaseCheckpointSaver {
  readonly #backend: CheckpointBackend;
  #closed = false;

  constructor(backend: CheckpointBackend, serde?: SerializerProtocol) {
    super(serde);
    this.#backend = backend;
  }

  /** `sqlite` or `mongodb` */
  get kind(): 'sqlite' | 'mongodb' {
    return this.#backend.kind;
  }

  /** file path, or MongoDB hosts and database (no credentials) */
  get location(): string {
    return this.#backend.location;
  }

  override async getTuple(config: RunnableConfig): Promise<CheckpointTuple | undefined> {
    const threadId = optionalThreadId(config);
    if (threadId === undefined) return undefined;
    const ns = namespaceOf(config);
    const row = await this.#call(() => this.#backend.getCheckpoint(threadId, ns, getCheckpointId(config) || undefined));
    return row ? this.#call(() => this.#toTuple(row)) : undefined;
  }

  override async *list(config: RunnableConfig, options: CheckpointListOptions = {}): AsyncGenerator<CheckpointTuple> {
    this.#open();
    const { before, filter } = options;
    let remaining = options.limit;
    if (remaining !== undefined && remaining <= 0) return;
    const hasFilter = filter !== undefined && Object.keys(filter).length > 0;
    const q: ListQuery = {};
    const threadId = optionalThreadId(config);
    if (threadId !== undefined) q.threadId = threadId;
    const ns: unknown = config.configurable?.checkpoint_ns;
    if (typeof ns === 'string') q.ns = ns;
    const checkpointId = getCheckpointId(config);
    if (checkpointId) q.checkpointId = checkpointId;
    const beforeId: unknown = before?.configurable?.checkpoint_id;
    if (typeof beforeId === 'string' && beforeId) q.before = beforeId;
    // Without a metadata filter the backend can stop at the limit itself.
    if (!hasFilter && remaining !== undefined) q.limit = remaining;
    try {
      for await (const key of this.#backend.listKeys(q)) {
        const metadata = (await this.serde.loadsTyped(key.metadataType, key.metadata)) as CheckpointMetadata;
        if (hasFilter && !matches(metadata, filter)) continue;
        const row = await this.#backend.getCheckpoint(key.threadId, key.ns, key.checkpointId);
        if (!row) continue; // deleted since it was listed
        yield await this.#toTuple(row, metadata);
        if (remaining !== undefined && --remaining <= 0) return;
      }
    } catch (err) {
      throw this.#backend.normalizeError(err);
    }
  }

  override async put(config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata, newVersions: ChannelVersions): Promise<RunnableConfig> {
    const threadId = requiredThreadId(config, 'put');
    const ns = namespaceOf(config);
    const parent: unknown = config.configurable?.checkpoint_id;
    const { channel_values: values, ...rest } = checkpoint;
    const blobs: BlobRow[] = [];
    for (const [channel, version] of Object.entries(newVersions)) {
      const has = Object.prototype.hasOwnProperty.call(values, channel) && (values as Record<string, unknown>)[channel] !== undefined;
      const [type, value] = has ? await this.serde.dumpsTyped((values as Record<string, unknown>)[channel]) : [EMPTY, NO_BYTES];
      blobs.push({ channel, version: String(version), type, value });
    }
    const [type, bytes] = await this.serde.dumpsTyped(rest);
    const [metadataType, metadataBytes] = await this.serde.dumpsTyped(metadata);
    const row: CheckpointRow = {
      threadId,
      ns,
      checkpointId: checkpoint.id,
      parentId: typeof parent === 'string' && parent ? parent : undefined,
      type,
      checkpoint: bytes,
      metadataType,
      metadata: metadataBytes,
    };
    await this.#call(() => this.#backend.putCheckpoint(row, blobs));
    return { configurable: { thread_id: config.configurable?.thread_id, checkpoint_ns: ns, checkpoint_id: checkpoint.id } };
  }

  override async putWrites(config: RunnableConfig, writes: PendingWrite[], taskId: string, taskPath?: string): Promise<void> {
    const threadId = requiredThreadId(config, 'putWrites');
    const checkpointId: unknown = config.configurable?.checkpoint_id;
    if (typeof checkpointId !== 'string' || !checkpointId) {
      throw new CheckpointError('CHECKPOINT_INVALID_CONFIG', 'putWrites needs config.configurable.checkpoint_id: the checkpoint the writes belong to');
    }
    const ns = namespaceOf(config);
    const rows: WriteRow[] = [];
    for (const [i, [channel, value]] of writes.entries()) {
      const [type, bytes] = await this.#dump(value);
      rows.push({ taskId, idx: WRITES_IDX_MAP[channel] ?? i, channel, type, value: bytes, taskPath: taskPath ?? '' });
    }
    if (rows.length === 0) return;
    // LangGraph's special writes (error, interrupt, resume, ...) replace an earlier attempt's;
    // ordinary writes are first-writer-wins so a retried task cannot rewrite recorded results.
    const replace = writes.every(([channel]) => channel in WRITES_IDX_MAP);
    await this.#call(() => this.#backend.putWrites(threadId, ns, checkpointId, rows, replace));
  }

  override async deleteThread(threadId: string): Promise<void> {
    await this.#call(() => this.#backend.deleteThread(String(threadId)));
  }

  /** Closes the database connection (the MongoDB client only when the saver opened it). Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#backend.close();
  }

  async #toTuple(row: CheckpointRow, metadata?: CheckpointMetadata): Promise<CheckpointTuple> {
    const checkpoint = (await this.serde.loadsTyped(row.type, row.checkpoint)) as Checkpoint;
    checkpoint.channel_versions ??= {};
    const versions = Object.entries(checkpoint.channel_versions).map(([c, v]) => [c, String(v)] as const);
    const values: Record<string, unknown> = {};
    if (versions.length > 0) {
      for (const blob of await this.#backend.getBlobs(row.threadId, row.ns, versions)) {
        if (blob.type !== EMPTY) values[blob.channel] = await this.#load(blob.type, blob.value);
      }
    }
    checkpoint.channel_values = values;
    if (checkpoint.v < 4 && row.parentId !== undefined) await this.#migratePendingSends(checkpoint, row.threadId, row.ns, row.parentId);
    const tuple: CheckpointTuple = {
      config: { configurable: { thread_id: row.threadId, checkpoint_ns: row.ns, checkpoint_id: row.checkpointId } },
      checkpoint,
      metadata: metadata ?? ((await this.serde.loadsTyped(row.metadataType, row.metadata)) as CheckpointMetadata),
      pendingWrites: await this.#pendingWrites(row.threadId, row.ns, row.checkpointId),
    };
    if (row.parentId !== undefined) {
      tuple.parentConfig = { configurable: { thread_id: row.threadId, checkpoint_ns: row.ns, checkpoint_id: row.parentId } };
    }
    return tuple;
  }

  /** Writes of one checkpoint in `writesSortKey` order, the order live execution applies them in. */
  async #orderedWrites(threadId: string, ns: string, checkpointId: string): Promise<WriteRow[]> {
    const rows = await this.#backend.getWrites(threadId, ns, checkpointId);
    return rows.sort((a, b) => compareWritesSortKeys(writesSortKey(a.taskPath, a.taskId, a.idx), writesSortKey(b.taskPath, b.taskId, b.idx)));
  }

  async #pendingWrites(threadId: string, ns: string, checkpointId: string): Promise<CheckpointPendingWrite[]> {
    const out: CheckpointPendingWrite[] = [];
    for (const w of await this.#orderedWrites(threadId, ns, checkpointId)) out.push([w.taskId, w.channel, await this.#load(w.type, w.value)]);
    return out;
  }

  /** Checkpoints before format v4 kept pending sends as writes on the parent; v4 keeps them in the `__pregel_tasks` channel. */
  async #migratePendingSends(checkpoint: Checkpoint, threadId: string, ns: string, parentId: string): Promise<void> {
    const sends: unknown[] = [];
    for (const w of await this.#orderedWrites(threadId, ns, parentId)) if (w.channel === TASKS) sends.push(await this.#load(w.type, w.value));
    (checkpoint.channel_values as Record<string, unknown>)[TASKS] = sends;
    const versions = Object.values(checkpoint.channel_versions);
    (checkpoint.channel_versions as ChannelVersions)[TASKS] = versions.length > 0 ? maxChannelVersion(...versions) : this.getNextVersion(undefined);
  }

  async #dump(value: unknown): Promise<[string, Uint8Array]> {
    return value === undefined ? [UNDEFINED, NO_BYTES] : this.serde.dumpsTyped(value);
  }

  async #load(type: string, value: Uint8Array): Promise<unknown> {
    return type === UNDEFINED ? undefined : this.serde.loadsTyped(type, value);
  }

  #open(): void {
    if (this.#closed) throw new CheckpointError('CHECKPOINT_CLOSED', `checkpointer on ${this.#backend.location} is closed`);
  }

  async #call<T>(fn: () => Promise<T>): Promise<T> {
    this.#open();
    try {
      return await fn();
    } catch (err) {
      throw this.#backend.normalizeError(err);
    }
  }
}

function optionalThreadId(config: RunnableConfig): string | undefined {
  const t: unknown = config.configurable?.thread_id;
  return t === undefined || t === null || t === '' ? undefined : String(t);
}

function requiredThreadId(config: RunnableConfig, op: string): string {
  const t = optionalThreadId(config);
  if (t === undefined) {
    throw new CheckpointError(
      'CHECKPOINT_INVALID_CONFIG',
      `${op} needs config.configurable.thread_id: pass { configurable: { thread_id } } (Keel: the task's idempotency key) to invoke/stream`,
    );
  }
  return t;
}

function namespaceOf(config: RunnableConfig): string {
  const ns: unknown = config.configurable?.checkpoint_ns;
  return typeof ns === 'string' ? ns : '';
}

/** `list` filter: every key equals (deeply) the metadata's value for that key. */
function matches(metadata: CheckpointMetadata, filter: Record<string, unknown>): boolean {
  const m = metadata as Record<string, unknown>;
  return Object.entries(filter).every(([k, v]) => isDeepStrictEqual(m[k], v));
}
