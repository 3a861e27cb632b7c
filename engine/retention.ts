/**
 * The engine's retention policy (docs/operations.md): finished workflow runs and idle concurrency
 * lanes unchanged for KEEL_RUN_RETENTION get their histories compacted, and idempotency records
 * completed that long ago are deleted. A pass runs shortly after start and every
 * KEEL_RETENTION_INTERVAL; its watermarks and last report are kept in KEEL_DATA_DIR/retention.json.
 */
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { KeelConfig } from '../config/index.ts';
import { startRetention, type RetentionPolicy, type StateStore } from '../shared-state/index.ts';
import { LANE } from '../workflows/index.ts';

/** Run statuses a run never leaves on its own (a retry appends to it again, compacted or not). */
export const FINISHED_RUN_STATUSES = ['completed', 'failed', 'cancelled', 'superseded'];

export function enginePolicy(runsMs: number): RetentionPolicy {
  return {
    histories: [
      { entityType: 'workflow_run', filter: { status: { $in: FINISHED_RUN_STATUSES } }, olderThanMs: runsMs },
      { entityType: LANE, olderThanMs: runsMs },
    ],
    idempotencyOlderThanMs: runsMs,
  };
}

/** Starts the retention timer (nothing with KEEL_RUN_RETENTION=off); returns its stop function. */
export function startEngineRetention(store: StateStore, cfg: KeelConfig, log: Logger): () => Promise<void> {
  const runsMs = cfg.retention.runsMs;
  if (runsMs === null) {
    log.info('KEEL_RUN_RETENTION=off: run histories and idempotency records are kept for good');
    return async () => undefined;
  }
  const timer = startRetention(store, {
    policy: enginePolicy(runsMs),
    intervalMs: cfg.retention.intervalMs,
    firstDelayMs: Math.min(10_000, cfg.retention.intervalMs),
    stateFile: join(cfg.dataDir, 'retention.json'),
    onReport: (r) => {
      const compacted = r.histories.reduce((n, h) => n + h.compacted, 0);
      const pruned = (r.idempotency?.completed ?? 0) + (r.idempotency?.abandoned ?? 0);
      (compacted || pruned ? log.info.bind(log) : log.debug.bind(log))({ retention: { ms: r.ms, histories: r.histories, idempotency: r.idempotency } }, `retention pass: ${compacted} histories compacted, ${pruned} idempotency records deleted`);
    },
    onError: (err) => log.warn({ err }, `retention pass failed: the next one runs in ${Math.round(cfg.retention.intervalMs / 1000)} s`),
  });
  return () => timer.stop();
}
