/**
 * `keel backup --to PATH`, `keel backup verify PATH`, `keel restore PATH` (docs/backup.md).
 *
 * A backup is a directory:
 *
 * ```
 * PATH/state/keel.db          online SQLite snapshot of the system of record (the point in time of the backup)
 * PATH/memory/memory.db       online snapshot of the sqlite-vec memory (taken just before the state)
 * PATH/streams/<STREAM>.jsonl every Keel stream's messages (the task queue: the tasks the state still waits for)
 * PATH/files/...              the rest of the data dir: outbox, attachments, site, quarantine, operators.json, credentials.json …
 * PATH/manifest.json          written last: versions, times, every file's size and sha256, record counts, audit head
 * ```
 *
 * The order is what makes it consistent while the engine runs: bus positions and a recorder of
 * every task published are taken first, then memory, then the state (the backup's point in
 * time), then the streams' messages (events are kept only when the state copy holds them), the
 * recorded tasks (kept only when the state copy still waits for them) and the files (an outbox
 * mail written after the snapshot stays, so a send redone after a restore finds it and does not
 * send twice).
 */
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, createReadStream, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, openSync, readSync, closeSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Command } from 'commander';
import { findTool, KEEL_VERSION, KeelError, loadConfig, type KeelConfig } from '../../config/index.ts';
import type { StreamMessageRecord, StreamPosition, SkippedStream, ImportStreamResult, NatsConnection } from '../../bus/index.ts';
import type { StateCounts, AuditVerification, StateSnapshotReader } from '../../shared-state/index.ts';
import type { RunState, runCoordinates } from '../../workflows/index.ts';
import { print, requireStore } from '../context.ts';
import { CliError } from '../errors.ts';

export const BACKUP_FORMAT = 'keel-backup/1';
const MANIFEST = 'manifest.json';
/** How long after the state snapshot the task recorder keeps listening (a task is published just after the commit that schedules it). */
const TASK_GRACE_MS = 2_000;

export type BackupErrorCode =
  /** `--to` names a directory that is not empty (a backup never overwrites another) */
  | 'BACKUP_TARGET_NOT_EMPTY'
  /** `--to` is inside the data dir it would copy */
  | 'BACKUP_TARGET_INSIDE_DATA_DIR'
  /** no backup at that path */
  | 'BACKUP_NOT_FOUND'
  /** the directory has no manifest.json: the backup was interrupted (or is not a Keel backup) */
  | 'BACKUP_INCOMPLETE'
  /** a file, a count or the audit chain does not match the manifest */
  | 'BACKUP_VERIFY_FAILED'
  /** this configuration cannot be backed up (or restored) by keel (MongoDB state, Qdrant memory) */
  | 'BACKUP_UNSUPPORTED'
  /** the data dir (or the state file) to restore into is not empty */
  | 'RESTORE_TARGET_NOT_EMPTY'
  /** no nats-server binary to import the streams with */
  | 'RESTORE_NO_NATS_SERVER'
  /** the restore stopped part way (the data dir is incomplete: remove it and run restore again) */
  | 'RESTORE_FAILED';

export class BackupError extends KeelError {
  declare readonly code: BackupErrorCode;
  readonly details: Record<string, unknown> | undefined;
  constructor(code: BackupErrorCode, message: string, opts: { cause?: unknown; details?: Record<string, unknown> } = {}) {
    super(code, message, { cause: opts.cause });
    this.name = 'BackupError';
    this.details = opts.details;
  }
}

export interface ManifestFile {
  /** relative to the backup directory, with `/` */
  path: string;
  bytes: number;
  sha256: string;
  /** permission bits (restored as they were: credentials.json stays 0600) */
  mode: number;
}

export interface ManifestStream {
  name: string;
  file: string;
  retention: StreamPosition['retention'];
  /** restore every message at its sequence (limits streams); the task queue is republished instead */
  preserveSeq: boolean;
  config: Record<string, unknown>;
  consumers: StreamPosition['consumers'];
  /** messages written to the file */
  messages: number;
  /** messages read but left out (events the state copy does not hold; tasks it no longer waits for) */
  dropped: number;
  firstSeq: number;
  lastSeq: number;
  /** the stream when its positions were read */
  source: { messages: number; firstSeq: number; lastSeq: number };
}

export interface Manifest {
  format: typeof BACKUP_FORMAT;
  keelVersion: string;
  createdAt: string;
  /** when the state snapshot was taken: the backup's point in time */
  snapshotAt: string;
  completedAt: string;
  source: { dataDir: string; state: string; memory: string; nats: string; subjectPrefix: string };
  parts: {
    state: { file: string; bytes: number };
    memory: { file: string; bytes: number } | { skipped: string };
    streams: ManifestStream[];
    streamsSkipped: SkippedStream[];
    tasks: { scanned: number; captured: number; kept: number; dropped: Record<string, number>; unmatched: Array<{ runId: string; step: string; attempt: number; role: string }> };
    files: { root: string; count: number; bytes: number };
  };
  counts: {
    state: StateCounts;
    /** workflow runs by status (the `workflow_run` entities of the state) */
    runs: Record<string, number>;
    tickets: number;
    approvals: Record<string, number>;
    audit: { records: number; head: string | null; verified: boolean };
    streams: Record<string, number>;
  };
  files: ManifestFile[];
}

type Progress = (msg: string) => void;
const progressTo = (what: string, quiet: boolean | undefined): Progress => (msg) => {
  if (!quiet) process.stderr.write(`${what}: ${msg}\n`);
};

const mb = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MB`;
const posix = (p: string) => p.split(sep).join('/');

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

function isSqliteFile(path: string): boolean {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(16);
    return readSync(fd, buf, 0, 16, 0) === 16 && buf.toString('latin1') === 'SQLite format 3\0';
  } finally {
    closeSync(fd);
  }
}

function dirIsEmpty(path: string): boolean {
  return !existsSync(path) || readdirSync(path).length === 0;
}

const inside = (child: string, parent: string) => child === parent || child.startsWith(parent + sep);

/** The sqlite-vec file of KEEL_MEMORY, or null for Qdrant (which keel backup does not copy). */
function memoryPathOf(cfg: KeelConfig): string | null {
  return cfg.memory.startsWith('sqlite-vec:') ? cfg.memory.slice('sqlite-vec:'.length) : null;
}

/** Every regular file under `root` (relative paths), skipping what `skip` names. */
function walk(root: string, skip: (rel: string, dir: boolean) => boolean): string[] {
  const out: string[] = [];
  const visit = (rel: string) => {
    for (const name of readdirSync(join(root, rel)).sort()) {
      const r = rel ? join(rel, name) : name;
      let st;
      try {
        st = lstatSync(join(root, r));
      } catch {
        continue; // gone meanwhile
      }
      if (st.isDirectory()) {
        if (!skip(r, true)) visit(r);
      } else if (st.isFile() && !skip(r, false)) out.push(r);
    }
  };
  if (existsSync(root)) visit('');
  return out;
}

// ---- backup -------------------------------------------------------------------------------

interface TaskVerdict {
  keep: boolean;
  why: string;
}

/** Whether the state copy still waits for a recorded task (else a restore would run work the copy knows nothing of, or has done). */
function taskVerdict(rc: ReturnType<typeof runCoordinates>, reader: StateSnapshotReader): TaskVerdict {
  if (!rc) return { keep: true, why: 'not a workflow task' };
  const run = reader.entityState<RunState>('workflow_run', rc.runId);
  if (!run) return { keep: false, why: 'run started after the snapshot' };
  if (rc.role === 'escalation') return { keep: true, why: 'escalation' };
  if (rc.role === 'compensation') {
    const waits = run.status === 'compensating' && run.compensations.some((c) => c.step === rc.step && c.status === 'scheduled');
    return waits ? { keep: true, why: 'compensation scheduled' } : { keep: false, why: 'compensation done or not yet scheduled at the snapshot' };
  }
  const s = run.steps[rc.step];
  if ((run.status === 'running' || run.status === 'compensating') && s?.status === 'scheduled' && s.attempt === rc.attempt) return { keep: true, why: 'step scheduled' };
  return { keep: false, why: s?.status === 'scheduled' ? 'another attempt of the step' : `step ${s?.status ?? 'unknown'} at the snapshot` };
}

async function backupCommand(o: { to?: string; memory: boolean; json?: boolean; quiet?: boolean }): Promise<void> {
  if (!o.to) throw new CliError('CLI_MISSING_OPTION', 'keel backup needs --to PATH (a new or empty directory), or a subcommand: keel backup verify PATH', { details: { option: '--to' } });
  const log = progressTo('backup', o.quiet);
  const cfg = loadConfig();
  const [bus, st, { connectCli }, { runCoordinates }] = await Promise.all([import('../../bus/index.ts'), import('../../shared-state/index.ts'), import('../connect.ts'), import('../../workflows/index.ts')]);
  const statePath = resolve(st.sqliteStatePath(cfg.state));
  requireStore(cfg);
  const memPath = memoryPathOf(cfg);
  if (!memPath && o.memory) {
    throw new BackupError('BACKUP_UNSUPPORTED', `KEEL_MEMORY is Qdrant (${cfg.memory}): keel backup copies the sqlite-vec memory only. Take a Qdrant snapshot of the collections (POST /collections/<name>/snapshots; see docs/backup.md) and run keel backup --no-memory for the rest.`, { details: { memory: cfg.memory } });
  }
  const dataDir = resolve(cfg.dataDir);
  const target = resolve(o.to);
  if (inside(target, dataDir)) throw new BackupError('BACKUP_TARGET_INSIDE_DATA_DIR', `--to ${target} is inside the data dir ${dataDir} it would copy: put backups elsewhere (another disk is better)`, { details: { target, dataDir } });
  if (!dirIsEmpty(target)) throw new BackupError('BACKUP_TARGET_NOT_EMPTY', `${target} is not empty: a backup goes into a new (or empty) directory, it never overwrites another (e.g. --to /backups/keel-$(date +%F-%H%M))`, { details: { target } });

  const nc: NatsConnection = await connectCli(cfg);
  const createdAt = new Date().toISOString();
  try {
    mkdirSync(target, { recursive: true, mode: 0o700 });
    chmodSync(target, 0o700);
    for (const d of ['state', 'memory', 'streams', 'files']) mkdirSync(join(target, d), { mode: 0o700 });
    const names = bus.subjects(cfg.subjectPrefix);

    // 1. the bus first: stream and consumer positions, a recorder of every task from now on, the task queue now
    const capture = bus.captureMessages(nc, `${cfg.subjectPrefix}.task.>`);
    await nc.flush();
    const positions = await bus.streamPositions(nc, cfg.subjectPrefix);
    const tasksPos = positions.streams.find((p) => p.name === names.streams.tasks);
    const scanned: StreamMessageRecord[] = [];
    if (tasksPos) for await (const r of bus.readStream(nc, tasksPos, { toSeq: tasksPos.lastSeq })) scanned.push(r);
    log(`bus: ${positions.streams.length} streams, ${positions.streams.reduce((n, p) => n + p.consumers.length, 0)} durable consumers; ${scanned.length} tasks queued`);

    // 2. memory, then 3. the state: the backup's point in time
    let memoryPart: Manifest['parts']['memory'];
    if (!o.memory) memoryPart = { skipped: '--no-memory' };
    else if (!existsSync(memPath!) || statSync(memPath!).size === 0) memoryPart = { skipped: `no memory store at ${memPath} yet` };
    else {
      const m = await st.snapshotSqlite(memPath!, join(target, 'memory', 'memory.db'));
      memoryPart = { file: 'memory/memory.db', bytes: m.bytes };
      log(`memory: ${mb(m.bytes)}`);
    }
    const stateCopy = join(target, 'state', 'keel.db');
    const snap = await st.snapshotSqlite(statePath, stateCopy);
    const snapshotAt = new Date().toISOString();
    log(`state: ${mb(snap.bytes)} snapshot at ${snapshotAt}`);

    // 4. the streams' messages, 5. the recorded tasks, both judged against the state copy
    const reader = st.openSnapshotReader(stateCopy);
    const streams: ManifestStream[] = [];
    const taskDrops: Record<string, number> = {};
    let taskInfo: Manifest['parts']['tasks'] = { scanned: scanned.length, captured: 0, kept: 0, dropped: taskDrops, unmatched: [] };
    try {
      for (const p of positions.streams) {
        if (p.retention === 'workqueue') continue;
        const file = `streams/${p.name}.jsonl`;
        const keep = p.name === names.streams.evt ? (r: StreamMessageRecord) => { const id = bus.recordHeader(r, 'Nats-Msg-Id'); return !id || reader.hasEvent(id); } : undefined;
        const w = await bus.writeStreamExport(join(target, file), bus.readStream(nc, p), { keep });
        streams.push({ name: p.name, file, retention: p.retention, preserveSeq: true, config: p.config, consumers: p.consumers, messages: w.messages, dropped: w.dropped, firstSeq: w.firstSeq || p.firstSeq, lastSeq: w.lastSeq, source: { messages: p.messages, firstSeq: p.firstSeq, lastSeq: p.lastSeq } });
        log(`${p.name}: ${w.messages} messages${w.dropped ? ` (${w.dropped} events newer than the snapshot left out)` : ''}`);
      }
      const wait = Date.parse(snapshotAt) + TASK_GRACE_MS - Date.now();
      if (wait > 0) await sleep(wait);
      const captured = await capture.stop();
      taskInfo.captured = captured.length;
      if (tasksPos) {
        // queued then, or published since; once each (by message id)
        const seen = new Set<string>();
        const kept: StreamMessageRecord[] = [];
        for (const r of [...scanned, ...captured]) {
          const id = bus.recordHeader(r, 'Nats-Msg-Id') ?? createHash('sha256').update(`${r.subject}\n${r.data}`).digest('hex');
          if (seen.has(id)) continue;
          seen.add(id);
          const v = taskVerdict(runCoordinates(bus.recordHeaders(r)), reader);
          if (v.keep) kept.push(r);
          else taskDrops[v.why] = (taskDrops[v.why] ?? 0) + 1;
        }
        const file = `streams/${tasksPos.name}.jsonl`;
        const w = await bus.writeStreamExport(join(target, file), kept);
        const dropped = Object.values(taskDrops).reduce((a, b) => a + b, 0);
        streams.push({ name: tasksPos.name, file, retention: tasksPos.retention, preserveSeq: false, config: tasksPos.config, consumers: tasksPos.consumers, messages: w.messages, dropped, firstSeq: w.firstSeq, lastSeq: w.lastSeq, source: { messages: tasksPos.messages, firstSeq: tasksPos.firstSeq, lastSeq: tasksPos.lastSeq } });
        taskInfo = { ...taskInfo, kept: kept.length, unmatched: unmatchedSteps(reader, kept.map((r) => runCoordinates(bus.recordHeaders(r)))) };
        log(`${tasksPos.name}: ${kept.length} tasks the state waits for (${scanned.length} queued, ${captured.length} published during the backup, ${dropped} no longer needed)${taskInfo.unmatched.length ? `; ${taskInfo.unmatched.length} scheduled steps have no task on the bus (their timers resume them)` : ''}`);
      }
    } finally {
      reader.close();
    }
    streams.sort((a, b) => a.name.localeCompare(b.name));

    // 6. the rest of the data dir
    const filesPart = await copyDataFiles(dataDir, join(target, 'files'), { exclude: [statePath, ...(memPath ? [resolve(memPath)] : [])], snapshot: st.snapshotSqlite });
    log(`files: ${filesPart.count} (${mb(filesPart.bytes)})`);

    // 7. counts and the audit chain of the copy, every file's hash, then the manifest
    const counts = st.countState(stateCopy);
    const audit = await st.verifyAuditCopy(stateCopy);
    if (!audit.ok) throw new BackupError('BACKUP_VERIFY_FAILED', `the audit chain of the state is broken at record ${audit.brokenAt} (${audit.reason}): the backup was written, but \`keel audit verify\` fails on the source too`, { details: { audit } });
    const files = await hashTree(target);
    const manifest: Manifest = {
      format: BACKUP_FORMAT,
      keelVersion: KEEL_VERSION,
      createdAt,
      snapshotAt,
      completedAt: new Date().toISOString(),
      source: { dataDir, state: `sqlite:${statePath}`, memory: cfg.memory, nats: cfg.natsUrl ?? `embedded (port ${cfg.natsPort})`, subjectPrefix: cfg.subjectPrefix },
      parts: { state: { file: 'state/keel.db', bytes: snap.bytes }, memory: memoryPart, streams, streamsSkipped: positions.skipped, tasks: taskInfo, files: filesPart },
      counts: summarize(counts, audit, streams),
      files,
    };
    writeManifest(target, manifest);
    st.fsyncPath(target);
    const bytes = files.reduce((n, f) => n + f.bytes, 0);
    log(`done: ${files.length} files, ${mb(bytes)} in ${target}`);
    print(o.json, { backup: target, ...manifestSummary(manifest), bytes }, () => {
      console.log(`backup written to ${target} (point in time ${snapshotAt})`);
      console.log(`  state: ${counts.events} events, ${Object.values(manifest.counts.runs).reduce((a, b) => a + b, 0)} runs, ${manifest.counts.tickets} tickets, ${Object.values(manifest.counts.approvals).reduce((a, b) => a + b, 0)} approvals; audit ${audit.records} records, head ${audit.head ?? '-'}`);
      console.log(`  streams: ${streams.map((x) => `${x.name} ${x.messages}`).join(', ')}`);
      console.log(`  files: ${filesPart.count}; ${mb(bytes)} in all. It holds secrets (credentials.json, operators.json): keep it private.`);
      console.log(`check it: keel backup verify ${target}`);
    });
  } finally {
    // an interrupted backup has no manifest.json (verify and restore refuse it); the task
    // recorder's subscription ends with the connection
    await nc.drain().catch(() => undefined);
  }
}

/** Scheduled steps of running runs that no kept task answers (a restore cannot run them until their timers do). */
function unmatchedSteps(reader: StateSnapshotReader, kept: Array<ReturnType<typeof runCoordinates>>): Manifest['parts']['tasks']['unmatched'] {
  const have = new Set(kept.filter((rc) => !!rc).map((rc) => `${rc.runId}\n${rc.step}\n${rc.role === 'compensation' ? 0 : rc.attempt}\n${rc.role}`));
  const out: Manifest['parts']['tasks']['unmatched'] = [];
  for (const { id, state } of reader.entitiesWithStatus<RunState>('workflow_run', ['running', 'compensating'])) {
    for (const [step, s] of Object.entries(state.steps ?? {})) {
      if (state.status === 'running' && s.status === 'scheduled' && !have.has(`${id}\n${step}\n${s.attempt}\nstep`)) out.push({ runId: id, step, attempt: s.attempt, role: 'step' });
    }
    for (const c of state.compensations ?? []) {
      if (state.status === 'compensating' && c.status === 'scheduled' && !have.has(`${id}\n${c.step}\n0\ncompensation`)) out.push({ runId: id, step: c.step, attempt: 0, role: 'compensation' });
    }
  }
  return out;
}

function summarize(state: StateCounts, audit: AuditVerification, streams: ManifestStream[]): Manifest['counts'] {
  return {
    state,
    runs: state.entities.workflow_run?.byStatus ?? {},
    tickets: state.entities.ticket?.total ?? 0,
    approvals: state.approvals,
    audit: { records: state.audit.records, head: state.audit.head, verified: audit.ok },
    streams: Object.fromEntries(streams.map((x) => [x.name, x.messages])),
  };
}

function manifestSummary(m: Manifest) {
  return {
    format: m.format,
    keelVersion: m.keelVersion,
    createdAt: m.createdAt,
    snapshotAt: m.snapshotAt,
    completedAt: m.completedAt,
    counts: { runs: m.counts.runs, tickets: m.counts.tickets, approvals: m.counts.approvals, audit: m.counts.audit, streams: m.counts.streams, entities: Object.fromEntries(Object.entries(m.counts.state.entities).map(([k, v]) => [k, v.total])), events: m.counts.state.events },
    tasks: m.parts.tasks,
    memory: m.parts.memory,
    files: m.files.length,
  };
}

/**
 * Copies the data dir's files (modes kept) except the stores backed up on their own, the bus's
 * store (exported through the bus), pid files and partial writes (`.tmp/`). Any other SQLite
 * file gets an online snapshot rather than a byte copy.
 */
async function copyDataFiles(dataDir: string, dest: string, o: { exclude: string[]; snapshot: (src: string, dest: string) => Promise<unknown> }): Promise<Manifest['parts']['files']> {
  const excluded = new Set(o.exclude.flatMap((p) => [p, `${p}-wal`, `${p}-shm`, `${p}-journal`]));
  const rels = walk(dataDir, (rel, dir) => {
    const base = rel.split(sep).pop()!;
    if (dir) return rel === 'nats' || base === '.tmp' || base === 'node_modules';
    return excluded.has(join(dataDir, rel)) || base.endsWith('.pid') || /-(wal|shm|journal)$/.test(base);
  });
  let count = 0;
  let bytes = 0;
  for (const rel of rels) {
    const src = join(dataDir, rel);
    const to = join(dest, rel);
    mkdirSync(dirname(to), { recursive: true, mode: 0o700 });
    try {
      const mode = statSync(src).mode & 0o777;
      if (isSqliteFile(src)) await o.snapshot(src, to);
      else copyFileSync(src, to);
      chmodSync(to, mode);
      bytes += statSync(to).size;
      count++;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // removed meanwhile (an erasure, a rotated file)
      throw err;
    }
  }
  return { root: 'files', count, bytes };
}

async function hashTree(root: string): Promise<ManifestFile[]> {
  const out: ManifestFile[] = [];
  for (const rel of walk(root, () => false)) {
    if (rel === MANIFEST) continue;
    const abs = join(root, rel);
    const st = statSync(abs);
    out.push({ path: posix(rel), bytes: st.size, sha256: await sha256File(abs), mode: st.mode & 0o777 });
  }
  return out;
}

function writeManifest(dir: string, m: Manifest): void {
  const tmp = join(dir, `.${MANIFEST}.tmp`);
  writeFileSync(tmp, JSON.stringify(m, null, 2) + '\n', { mode: 0o600 });
  renameSync(tmp, join(dir, MANIFEST));
}

// ---- verify -------------------------------------------------------------------------------

export interface VerifyReport {
  ok: boolean;
  backup: string;
  problems: string[];
  checked: { files: number; bytes: number; sqlite: Record<string, string>; audit: AuditVerification | null; streams: Record<string, number> };
  manifest?: Manifest;
}

function readManifest(dir: string): Manifest {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new BackupError('BACKUP_NOT_FOUND', `no backup at ${dir}`, { details: { backup: dir } });
  const path = join(dir, MANIFEST);
  if (!existsSync(path)) throw new BackupError('BACKUP_INCOMPLETE', `${dir} has no ${MANIFEST}: the backup was interrupted before it finished (the manifest is written last), or this is not a Keel backup. Take a new one.`, { details: { backup: dir } });
  let m: Manifest;
  try {
    m = JSON.parse(readFileSync(path, 'utf8')) as Manifest;
  } catch (err) {
    throw new BackupError('BACKUP_VERIFY_FAILED', `${path} is not valid JSON: ${(err as Error).message}`, { cause: err, details: { backup: dir, problems: [`${MANIFEST} is not valid JSON`] } });
  }
  if (m.format !== BACKUP_FORMAT) throw new BackupError('BACKUP_VERIFY_FAILED', `${path} has format ${JSON.stringify(m.format)}; this keel reads ${BACKUP_FORMAT}`, { details: { backup: dir, problems: ['unknown format'] } });
  return m;
}

/** Re-hashes every file, checks the SQLite copies, the counts, the audit chain and the stream files against the manifest. */
export async function verifyBackup(dirArg: string, log: Progress = () => undefined): Promise<VerifyReport> {
  const dir = resolve(dirArg);
  const m = readManifest(dir);
  const [bus, st] = await Promise.all([import('../../bus/index.ts'), import('../../shared-state/index.ts')]);
  const problems: string[] = [];
  const listed = new Map(m.files.map((f) => [f.path, f]));
  let bytes = 0;
  for (const f of m.files) {
    const abs = join(dir, f.path);
    if (!existsSync(abs)) {
      problems.push(`${f.path}: missing`);
      continue;
    }
    const size = statSync(abs).size;
    bytes += size;
    if (size !== f.bytes) problems.push(`${f.path}: ${size} bytes, the manifest says ${f.bytes}`);
    else if ((await sha256File(abs)) !== f.sha256) problems.push(`${f.path}: content changed (sha256 differs from the manifest)`);
  }
  for (const rel of walk(dir, () => false).map(posix)) if (rel !== MANIFEST && !listed.has(rel)) problems.push(`${rel}: not in the manifest`);
  log(`files: ${m.files.length} hashed`);

  const sqlite: Record<string, string> = {};
  const dbs = [m.parts.state.file, ...('file' in m.parts.memory ? [m.parts.memory.file] : []), ...m.files.filter((f) => f.path.startsWith('files/') && existsSync(join(dir, f.path)) && isSqliteFile(join(dir, f.path))).map((f) => f.path)];
  for (const f of dbs) {
    if (!existsSync(join(dir, f))) continue;
    const c = st.checkSqlite(join(dir, f));
    sqlite[f] = c.ok ? 'ok' : c.problems.join('; ');
    if (!c.ok) problems.push(`${f}: SQLite integrity check failed: ${c.problems.join('; ')}`);
  }

  let audit: AuditVerification | null = null;
  const stateCopy = join(dir, m.parts.state.file);
  if (existsSync(stateCopy) && sqlite[m.parts.state.file] === 'ok') {
    const counts = st.countState(stateCopy);
    for (const d of diffCounts(m.counts.state, counts)) problems.push(`state counts: ${d}`);
    audit = await st.verifyAuditCopy(stateCopy);
    if (!audit.ok) problems.push(`audit chain broken at record ${audit.brokenAt}: ${audit.reason}`);
    else if (audit.records !== m.counts.audit.records || audit.head !== m.counts.audit.head) problems.push(`audit chain: ${audit.records} records, head ${audit.head}; the manifest says ${m.counts.audit.records}, head ${m.counts.audit.head}`);
    log(`state: integrity ok, audit chain ${audit.ok ? `intact (${audit.records} records)` : 'BROKEN'}`);
  }

  const streams: Record<string, number> = {};
  for (const s of m.parts.streams) {
    const abs = join(dir, s.file);
    if (!existsSync(abs)) continue;
    let n = 0;
    let last = 0;
    try {
      for await (const r of bus.readStreamExport(abs)) {
        if (s.preserveSeq && r.seq <= last) throw new Error(`sequence ${r.seq} after ${last}`);
        last = r.seq;
        n++;
      }
    } catch (err) {
      problems.push(`${s.file}: ${(err as Error).message}`);
    }
    streams[s.name] = n;
    if (n !== s.messages) problems.push(`${s.file}: ${n} messages, the manifest says ${s.messages}`);
  }
  log(`streams: ${Object.entries(streams).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}`);
  return { ok: problems.length === 0, backup: dir, problems, checked: { files: m.files.length, bytes, sqlite, audit, streams }, manifest: m };
}

function diffCounts(want: unknown, have: unknown, path = ''): string[] {
  if (typeof want !== 'object' || want === null || typeof have !== 'object' || have === null) return JSON.stringify(want) === JSON.stringify(have) ? [] : [`${path || '(all)'}: ${JSON.stringify(have)}, the manifest says ${JSON.stringify(want)}`];
  const keys = new Set([...Object.keys(want), ...Object.keys(have)]);
  return [...keys].sort().flatMap((k) => diffCounts((want as Record<string, unknown>)[k], (have as Record<string, unknown>)[k], path ? `${path}.${k}` : k));
}

function failIfBad(r: VerifyReport): void {
  if (r.ok) return;
  const shown = r.problems.slice(0, 10).join('; ');
  throw new BackupError('BACKUP_VERIFY_FAILED', `backup ${r.backup} does not match its manifest (${r.problems.length} problem${r.problems.length === 1 ? '' : 's'}): ${shown}${r.problems.length > 10 ? ' …' : ''}. Do not restore it; take a new backup.`, { details: { backup: r.backup, problems: r.problems, checked: r.checked } });
}

// ---- restore ------------------------------------------------------------------------------

async function restoreCommand(path: string, o: { dataDir?: string; json?: boolean; quiet?: boolean }): Promise<void> {
  const log = progressTo('restore', o.quiet);
  const report = await verifyBackup(path, (msg) => log(`verify ${msg}`));
  failIfBad(report);
  const m = report.manifest!;
  const backupDir = report.backup;
  const cfg = loadConfig({ ...process.env, ...(o.dataDir ? { KEEL_DATA_DIR: o.dataDir } : {}) });
  const st = await import('../../shared-state/index.ts');
  const dataDir = resolve(cfg.dataDir);
  const statePath = resolve(st.sqliteStatePath(cfg.state));
  const memPath = memoryPathOf(cfg);
  if (!dirIsEmpty(dataDir)) throw new BackupError('RESTORE_TARGET_NOT_EMPTY', `the data dir ${dataDir} is not empty: restore goes into an empty (or new) data dir, never over a live one. Use --data-dir DIR (then start the engine with KEEL_DATA_DIR=DIR)`, { details: { dataDir } });
  for (const p of [statePath, ...(memPath ? [resolve(memPath)] : [])]) {
    if (existsSync(p) && statSync(p).size > 0) throw new BackupError('RESTORE_TARGET_NOT_EMPTY', `${p} exists: restore writes a new store, never over one (KEEL_STATE / KEEL_MEMORY name it)`, { details: { path: p } });
  }
  if (m.source.subjectPrefix !== cfg.subjectPrefix) throw new BackupError('BACKUP_UNSUPPORTED', `the backup's streams are under subject prefix '${m.source.subjectPrefix}', this configuration uses '${cfg.subjectPrefix}': restore (and start the engine) with KEEL_SUBJECT_PREFIX=${m.source.subjectPrefix}`, { details: { backupPrefix: m.source.subjectPrefix, prefix: cfg.subjectPrefix } });
  if (m.keelVersion !== KEEL_VERSION) log(`note: the backup was written by keel ${m.keelVersion}, this is ${KEEL_VERSION}`);
  // an external bus (KEEL_NATS_URL) is checked before anything is written
  const bus = await import('../../bus/index.ts');
  let external: NatsConnection | undefined;
  if (m.parts.streams.length && cfg.natsUrl) {
    external = await bus.connectBus({ servers: cfg.natsUrl, name: 'keel-restore', connectTimeoutMs: 5_000, maxReconnectAttempts: 0, user: cfg.natsUser, pass: cfg.natsPassword });
    const busy = await bus.nonEmptyStreams(external, m.parts.streams.map((s) => s.name));
    if (busy.length) {
      await external.drain().catch(() => undefined);
      throw new BackupError('RESTORE_TARGET_NOT_EMPTY', `the bus at ${cfg.natsUrl} already holds Keel messages (${busy.map((b) => `${b.name}: ${b.messages}`).join(', ')}): restore into an empty bus`, { details: { streams: busy } });
    }
  }

  let files = 0;
  let memory = 'none in the backup';
  let streams: ImportStreamResult[] = [];
  try {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    const filesRoot = join(backupDir, m.parts.files.root);
    for (const f of m.files) {
      if (!f.path.startsWith(`${m.parts.files.root}/`)) continue;
      const to = join(dataDir, relative(filesRoot, join(backupDir, f.path)));
      mkdirSync(dirname(to), { recursive: true });
      copyFileSync(join(backupDir, f.path), to);
      chmodSync(to, f.mode);
      files++;
    }
    log(`files: ${files}`);
    const modeOf = (rel: string) => m.files.find((f) => f.path === rel)?.mode ?? 0o600;
    mkdirSync(dirname(statePath), { recursive: true });
    copyFileSync(join(backupDir, m.parts.state.file), statePath);
    chmodSync(statePath, modeOf(m.parts.state.file));
    st.fsyncPath(statePath);
    log(`state: ${statePath}`);
    if ('file' in m.parts.memory) {
      if (memPath) {
        mkdirSync(dirname(resolve(memPath)), { recursive: true });
        copyFileSync(join(backupDir, m.parts.memory.file), memPath);
        chmodSync(memPath, modeOf(m.parts.memory.file));
        memory = resolve(memPath);
      } else memory = `not restored: KEEL_MEMORY is Qdrant (${cfg.memory}); the sqlite-vec copy stays at ${join(backupDir, m.parts.memory.file)}`;
      log(`memory: ${memory}`);
    }
    if (m.parts.streams.length) streams = await importStreams(cfg, dataDir, backupDir, m, log, external);
  } catch (err) {
    if (err instanceof BackupError) throw err;
    throw new BackupError('RESTORE_FAILED', `restore into ${dataDir} stopped: ${(err as Error).message}. The data dir is incomplete: remove it${external ? ' (and the Keel streams on the bus)' : ''} and run keel restore again`, { cause: err, details: { dataDir } });
  } finally {
    await external?.drain().catch(() => undefined);
  }
  const out = {
    restored: dataDir,
    backup: backupDir,
    snapshotAt: m.snapshotAt,
    state: `sqlite:${statePath}`,
    memory,
    files,
    streams: Object.fromEntries(streams.map((s) => [s.name, { messages: s.messages, gaps: s.gaps, consumers: s.consumers, refused: s.refused.length }])),
    counts: manifestSummary(m).counts,
  };
  print(o.json, out, () => {
    console.log(`restored ${backupDir} (point in time ${m.snapshotAt}) into ${dataDir}`);
    console.log(`  state ${statePath}; memory: ${memory}; ${files} files`);
    console.log(`  streams: ${streams.map((s) => `${s.name} ${s.messages}`).join(', ') || 'none'}`);
    console.log(`start it: KEEL_DATA_DIR=${dataDir} keel start   (then: keel audit verify)`);
  });
}

async function importStreams(cfg: KeelConfig, dataDir: string, backupDir: string, m: Manifest, log: Progress, external: NatsConnection | undefined): Promise<ImportStreamResult[]> {
  const bus = await import('../../bus/index.ts');
  const { readCredentials } = await import('../../runtime/index.ts');
  let server: InstanceType<typeof bus.LocalNatsServer> | undefined;
  let nc = external;
  if (!nc) {
    // the embedded bus: a temporary nats-server on the restored data dir's store, with its admin user
    const bin = cfg.natsServerBin ?? findTool('nats-server');
    if (!bin) throw new BackupError('RESTORE_NO_NATS_SERVER', `no nats-server binary to import the streams with: run \`npm run provision\` or set KEEL_NATS_SERVER_BIN. The state and files are in ${dataDir}: remove it and run keel restore again`, { details: { dataDir } });
    const admin = readCredentials(join(dataDir, 'credentials.json'))?.admin;
    server = new bus.LocalNatsServer({ bin, port: 0, storeDir: join(dataDir, 'nats'), serverName: 'keel-embedded', users: admin ? [{ user: admin.user, password: admin.password }] : undefined, maxPayload: 8 * 1024 * 1024, supervise: false });
    await server.start();
    nc = await bus.connectBus({ servers: server.url, name: 'keel-restore', connectTimeoutMs: 5_000, maxReconnectAttempts: 0, user: admin?.user, pass: admin?.password });
  }
  try {
    const out: ImportStreamResult[] = [];
    for (const s of m.parts.streams) {
      const t0 = performance.now();
      const r = await bus.importStream(nc, { name: s.name, config: s.config, consumers: s.consumers, preserveSeq: s.preserveSeq, firstSeq: s.firstSeq }, bus.readStreamExport(join(backupDir, s.file)), {
        replicas: server ? 1 : undefined,
        onProgress: (n) => log(`${s.name}: ${n} of ${s.messages}`),
      });
      out.push(r);
      log(`${s.name}: ${r.messages} messages in ${Math.round(performance.now() - t0)} ms${r.gaps ? `, ${r.gaps} gaps kept` : ''}${r.consumers.length ? `, consumers ${r.consumers.join(', ')} at their positions` : ''}${r.refused.length ? `, ${r.refused.length} refused` : ''}`);
    }
    return out;
  } finally {
    if (server) {
      await nc.drain().catch(() => undefined);
      await server.stop();
      // the engine writes its own configuration (with every agent's user) at start
      rmSync(join(dataDir, 'nats', 'nats-server.conf'), { force: true });
    }
  }
}

// ---- commands -----------------------------------------------------------------------------

export function registerBackup(program: Command): void {
  const backup = program
    .command('backup')
    .description('Online, consistent backup of the running engine: state, memory, JetStream streams, audit chain, outbox and the rest of the data dir (docs/backup.md). It holds secrets: keep it private.')
    .option('--to <path>', 'a new (or empty) directory for the backup')
    .option('--no-memory', 'leave long-term memory out (needed when KEEL_MEMORY is Qdrant: snapshot its collections with Qdrant\'s API)')
    .option('--quiet', 'no progress lines on stderr')
    .option('--json', 'print JSON: { backup, snapshotAt, counts: { runs, tickets, approvals, audit, streams, entities, events }, tasks, files, bytes }')
    .action(async (o: { to?: string; memory: boolean; json?: boolean; quiet?: boolean }) => backupCommand(o));

  backup
    .command('verify')
    .argument('<path>', 'the backup directory')
    .option('--quiet', 'no progress lines on stderr')
    .option('--json', 'print JSON: { ok, backup, problems, checked: { files, bytes, sqlite, audit, streams } }')
    .description('Re-hash every file, run SQLite\'s integrity check on the copies, compare the record counts and the audit chain head with the manifest, and verify the audit chain inside the backup. Exit 1 naming each mismatch.')
    .action(async (path: string, o: { json?: boolean; quiet?: boolean }) => {
      const r = await verifyBackup(path, progressTo('verify', o.quiet));
      failIfBad(r);
      const m = r.manifest!;
      print(o.json, { ok: r.ok, backup: r.backup, problems: r.problems, checked: r.checked, snapshotAt: m.snapshotAt, keelVersion: m.keelVersion }, () => {
        console.log(`backup ${r.backup} is intact: ${r.checked.files} files (${mb(r.checked.bytes)}) match the manifest, SQLite copies ok, audit chain ${r.checked.audit?.records ?? 0} records (head ${r.checked.audit && r.checked.audit.ok ? r.checked.audit.head : '-'})`);
        console.log(`  point in time ${m.snapshotAt}, written by keel ${m.keelVersion}; streams ${Object.entries(r.checked.streams).map(([k, v]) => `${k} ${v}`).join(', ')}`);
      });
    });

  program
    .command('restore')
    .argument('<path>', 'the backup directory (from keel backup --to)')
    .option('--data-dir <dir>', 'restore into this data dir (default KEEL_DATA_DIR); it must be empty or new')
    .option('--quiet', 'no progress lines on stderr')
    .option('--json', 'print JSON: { restored, backup, snapshotAt, state, memory, files, streams, counts }')
    .description('Verify a backup, then restore it into an empty data dir: state, memory, files (modes kept) and the streams (imported through a temporary nats-server on the restored store, or into KEEL_NATS_URL). Then start the engine on it.')
    .action(async (path: string, o: { dataDir?: string; json?: boolean; quiet?: boolean }) => restoreCommand(path, o));
}
