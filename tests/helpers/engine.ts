import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { REPO_ROOT } from '../../config/index.ts';
import { freePort, tempDir, waitFor } from '../../testkit/common.ts';

export interface EngineProcess {
  child: ChildProcess;
  httpUrl: string;
  natsPort: number;
  smtpPort: number;
  dataDir: string;
  /**
   * The engine's KEEL_OPERATOR_TOKEN (of operator {@link operator}) for the operator routes of the
   * HTTP API: `Authorization: Bearer ${operatorToken}`. Empty when the test passed `KEEL_OPERATOR_TOKEN: ''`.
   */
  operatorToken: string;
  operator: string;
  /** `{ authorization: 'Bearer <operatorToken>' }` */
  auth: Record<string, string>;
  output(): string;
  /** sends the signal and resolves with the exit code */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  cleanup(): void;
}

/**
 * Runs `keel start` as its own OS process on free ports with a temp data dir. The engine gets a
 * KEEL_OPERATOR_TOKEN of its own (operator `test-operator` unless `env` names KEEL_OPERATOR):
 * send {@link EngineProcess.auth} to the operator routes (`/v1/runs`, `/v1/approvals` …).
 */
export async function startEngineProcess(env: Record<string, string> = {}, opts: { dataDir?: string } = {}): Promise<EngineProcess> {
  const dir = opts.dataDir ? { path: opts.dataDir, remove: () => undefined } : tempDir('keel-engine-');
  const httpPort = await freePort();
  const natsPort = await freePort();
  const smtpPort = await freePort();
  const operatorToken = env.KEEL_OPERATOR_TOKEN ?? `keel-test-${randomBytes(24).toString('base64url')}`;
  const operator = env.KEEL_OPERATOR ?? 'test-operator';
  let out = '';
  const child = spawn(process.execPath, [join(REPO_ROOT, 'cli', 'keel.ts'), 'start'], {
    cwd: REPO_ROOT,
    env: { ...process.env, KEEL_DATA_DIR: dir.path, KEEL_HTTP_PORT: String(httpPort), KEEL_NATS_PORT: String(natsPort), KEEL_SMTP_PORT: String(smtpPort), KEEL_AGENTS: 'none', KEEL_LOG_LEVEL: 'info', ...env, KEEL_OPERATOR_TOKEN: operatorToken, KEEL_OPERATOR: operator },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const httpUrl = `http://127.0.0.1:${httpPort}`;
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  await waitFor(
    async () => {
      if (child.exitCode !== null) throw new Error(`keel start exited with ${child.exitCode}:\n${out}`);
      const r = await fetch(`${httpUrl}/healthz`).catch(() => undefined);
      return r?.status === 200;
    },
    { timeoutMs: 60_000, what: 'keel start to serve /healthz' },
  );
  return {
    child,
    httpUrl,
    natsPort,
    smtpPort,
    dataDir: dir.path,
    operatorToken,
    operator,
    auth: operatorToken ? { authorization: `Bearer ${operatorToken}` } : {},
    output: () => out,
    stop: async (signal = 'SIGINT') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
    cleanup: () => dir.remove(),
  };
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
