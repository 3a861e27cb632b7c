import { statfs } from 'node:fs/promises';
import { StorageFullRefusal } from './errors.ts';

/** Free space under a directory, as the guard last measured it. */
export interface DiskStatus {
  /** `low`: below the reserve, new work is refused; `unknown`: statfs failed (work is not refused for it) */
  status: 'ok' | 'low' | 'unknown';
  path: string;
  freeBytes: number;
  totalBytes: number;
  minFreeBytes: number;
  /** why the status is `unknown` */
  error?: string;
}

export interface DiskGuardOptions {
  /** the directory whose filesystem holds the data (KEEL_DATA_DIR) */
  dir: string;
  /** refuse new work below this many free bytes (KEEL_MIN_FREE_MB); 0 turns the guard off */
  minFreeBytes: number;
  /** a measurement is reused this long (default 1,000 ms) */
  cacheMs?: number;
  /** for tests: the free and total bytes of `dir` */
  measure?: (dir: string) => Promise<{ freeBytes: number; totalBytes: number }>;
}

export interface DiskGuard {
  readonly dir: string;
  readonly minFreeBytes: number;
  /** the free space now (measured at most once per `cacheMs`) */
  status(): Promise<DiskStatus>;
  /** resolves when new work may be taken; throws {@link StorageFullRefusal} when free space is below the reserve */
  admit(): Promise<void>;
}

async function statfsBytes(dir: string): Promise<{ freeBytes: number; totalBytes: number }> {
  const s = await statfs(dir);
  // bavail: the blocks an unprivileged writer may still use
  return { freeBytes: s.bavail * s.bsize, totalBytes: s.blocks * s.bsize };
}

/**
 * Refuses new work before the disk is full, so that what was accepted can still be finished: the
 * agents complete in-flight runs in the reserve that the guard keeps. Channels call `admit()`
 * before they take a message (SMTP answers `452 4.3.1`, HTTP `507 STORAGE_FULL`); the guard
 * lifts by itself as soon as space is freed. Measured with `statfs`, cached ~1 s.
 */
export function createDiskGuard(opts: DiskGuardOptions): DiskGuard {
  const cacheMs = opts.cacheMs ?? 1_000;
  const measure = opts.measure ?? statfsBytes;
  let last: { at: number; value: DiskStatus } | undefined;
  let pending: Promise<DiskStatus> | undefined;
  const status = async (): Promise<DiskStatus> => {
    if (last && Date.now() - last.at < cacheMs) return last.value;
    pending ??= (async () => {
      let value: DiskStatus;
      try {
        const m = await measure(opts.dir);
        value = { status: opts.minFreeBytes > 0 && m.freeBytes < opts.minFreeBytes ? 'low' : 'ok', path: opts.dir, freeBytes: m.freeBytes, totalBytes: m.totalBytes, minFreeBytes: opts.minFreeBytes };
      } catch (err) {
        value = { status: 'unknown', path: opts.dir, freeBytes: 0, totalBytes: 0, minFreeBytes: opts.minFreeBytes, error: (err as Error).message };
      }
      last = { at: Date.now(), value };
      return value;
    })().finally(() => (pending = undefined));
    return pending;
  };
  return {
    dir: opts.dir,
    minFreeBytes: opts.minFreeBytes,
    status,
    admit: async () => {
      if (opts.minFreeBytes <= 0) return;
      const s = await status();
      if (s.status === 'low') throw new StorageFullRefusal(s.path, s.freeBytes, s.minFreeBytes);
    },
  };
}
