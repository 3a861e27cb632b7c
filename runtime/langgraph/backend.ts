/**
 * The storage port under `KeelCheckpointSaver`: raw rows, no serialization and no LangGraph
 * semantics. The saver does serde, channel blobs, write ordering and pending-send migration once;
 * each backend (SQLite, MongoDB) only stores and finds rows. Internal to runtime/langgraph.
 */

/** One checkpoint, serialized without its `channel_values` (those live in blobs). */
export interface CheckpointRow {
  threadId: string;
  ns: string;
  checkpointId: string;
  parentId: string | undefined;
  type: string;
  checkpoint: Uint8Array;
  metadataType: string;
  metadata: Uint8Array;
}

/** The key of a checkpoint plus its metadata: what `list` filters on before loading the rest. */
export type CheckpointKeyRow = Pick<CheckpointRow, 'threadId' | 'ns' | 'checkpointId' | 'metadataType' | 'metadata'>;

/** One channel's value at one version, shared by every checkpoint of the thread/namespace that carries that version. */
export interface BlobRow {
  channel: string;
  version: string;
  /** serde type; `empty` when the channel has a version but no value */
  type: string;
  value: Uint8Array;
}

/** One pending write of a task against a checkpoint. */
export interface WriteRow {
  taskId: string;
  idx: number;
  channel: string;
  type: string;
  value: Uint8Array;
  taskPath: string;
}

export interface ListQuery {
  threadId?: string;
  ns?: string;
  checkpointId?: string;
  /** only checkpoints whose id sorts before this one */
  before?: string;
  /** at most this many (absent: all) */
  limit?: number;
}

export interface CheckpointBackend {
  /** `sqlite` or `mongodb` */
  readonly kind: 'sqlite' | 'mongodb';
  /** file path, or host list and database (no credentials) */
  readonly location: string;
  /** Stores a checkpoint and the blobs of the channels that changed with it (existing blobs are kept). */
  putCheckpoint(row: CheckpointRow, blobs: BlobRow[]): Promise<void>;
  /** The named checkpoint, or the newest of the thread/namespace when `checkpointId` is undefined. */
  getCheckpoint(threadId: string, ns: string, checkpointId: string | undefined): Promise<CheckpointRow | undefined>;
  /** Checkpoint keys newest first (by checkpoint id, which sorts by time). */
  listKeys(q: ListQuery): AsyncIterable<CheckpointKeyRow>;
  /** Blobs of the given channel versions; missing ones are simply absent from the result. */
  getBlobs(threadId: string, ns: string, versions: ReadonlyArray<readonly [channel: string, version: string]>): Promise<BlobRow[]>;
  /** Writes stored against one checkpoint, in any order. */
  getWrites(threadId: string, ns: string, checkpointId: string): Promise<WriteRow[]>;
  /**
   * Stores writes. `replace` false: a write whose (task id, idx) exists is left as it is, so a
   * retried task cannot change what an earlier attempt recorded; true: it is overwritten (special
   * writes such as errors and interrupts, which LangGraph keys with negative indices).
   */
  putWrites(threadId: string, ns: string, checkpointId: string, rows: WriteRow[], replace: boolean): Promise<void>;
  deleteThread(threadId: string): Promise<void>;
  /** Turns a driver error into a `CheckpointError` (busy, unavailable) or returns it unchanged. */
  normalizeError(err: unknown): unknown;
  close(): Promise<void>;
}
