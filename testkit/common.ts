import { createServer } from 'node:net';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { TestkitError } from './errors.ts';

/** Where a test server came from: an address in the environment, a container, or a local binary. */
export type ServerSource = 'env' | 'container' | 'local';

export interface ServerHandle {
  url: string;
  source: ServerSource;
  stop(): Promise<void>;
}

/** Either a server, or the reason a test that needs it must skip (printed by the test). */
export type Availability<T extends ServerHandle> = { ok: true; server: T } | { ok: false; reason: string };

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/** A fresh temp directory and a function that removes it. */
export function tempDir(prefix = 'keel-test-'): { path: string; remove: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** A name no other test uses: streams, consumers, collections, data dirs. */
export function uniqueName(prefix = 't'): string {
  return `${prefix}_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
}

let dockerAnswers: Promise<boolean> | undefined;
/** True when a Docker engine answers (then testcontainers can start servers). */
export function dockerAvailable(): Promise<boolean> {
  dockerAnswers ??= (async () => {
    if (process.env.KEEL_TEST_NO_DOCKER === '1') return false;
    if (!process.env.DOCKER_HOST && !existsSync('/var/run/docker.sock')) return false;
    try {
      const { getContainerRuntimeClient } = await import('testcontainers');
      await getContainerRuntimeClient();
      return true;
    } catch {
      return false;
    }
  })();
  return dockerAnswers;
}

/** Polls `probe` until it returns true or the deadline passes. */
export async function waitFor(probe: () => Promise<boolean> | boolean, opts: { timeoutMs?: number; intervalMs?: number; what?: string } = {}): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? 15_000);
  let lastErr: unknown;
  while (Date.now() < deadline) {
    try {
      if (await probe()) return;
    } catch (err) {
      lastErr = err;
    }
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 50));
  }
  throw new TestkitError('TESTKIT_TIMEOUT', `timed out waiting for ${opts.what ?? 'condition'}${lastErr ? `: ${(lastErr as Error).message}` : ''}`, { cause: lastErr });
}

/** Prints why a test file skipped, so a skip is never silent. */
export function reportSkip(what: string, reason: string): void {
  console.warn(`[SKIPPED] ${what}: ${reason}`);
}
