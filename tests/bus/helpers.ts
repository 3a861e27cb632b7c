import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { NatsConnection } from '@nats-io/nats-core';
import { REPO_ROOT } from '../../config/index.ts';

export interface WorkerEvent {
  worker: string;
  event: 'ready' | 'start' | 'done';
  pid: number;
  id?: string;
  n?: number;
  delivery?: number;
  traceId?: string;
  spanId?: string;
  traceparent?: string;
}

/** Collects the events the worker fixtures report on `<prefix>.test.events`. */
export function collectEvents(nc: NatsConnection, prefix: string): { events: WorkerEvent[]; stop(): void } {
  const events: WorkerEvent[] = [];
  const sub = nc.subscribe(`${prefix}.test.events`, { callback: (_e, m) => void events.push(m.json<WorkerEvent>()) });
  return { events, stop: () => sub.unsubscribe() };
}

export function spawnWorker(env: Record<string, string>): ChildProcess {
  const child = spawn(process.execPath, [join(REPO_ROOT, 'tests', 'bus', 'fixtures', 'worker.ts')], {
    env: { ...process.env, KEEL_LOG_LEVEL: 'silent', ...env },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  return child;
}

export async function killAndWait(child: ChildProcess, sig: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const done = new Promise((r) => child.once('exit', r));
  child.kill(sig);
  await done;
}
