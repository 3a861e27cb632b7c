import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, dirname, delimiter } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawn } from 'node:child_process';
import { KeelError } from './errors.ts';

/** The servers deploy/provision.sh builds (`nats` is natscli), and the local model it fetches. */
export type ToolName = 'nats-server' | 'ferretdb' | 'jaeger' | 'nats' | 'all-minilm-l6-v2';

export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const PROVISION_SCRIPT = join(REPO_ROOT, 'deploy', 'provision.sh');

export function toolsDir(env: Record<string, string | undefined> = process.env): string {
  return env.KEEL_TOOLS_DIR ?? join(env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'keel', 'tools');
}

function onPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, name);
    if (existsSync(p)) return p;
  }
  return undefined;
}

/**
 * Where a tool's binary is: the provisioned cache first (its manifest pins the version),
 * then the PATH. Returns undefined when it cannot be found.
 */
export function findTool(name: ToolName, env: Record<string, string | undefined> = process.env): string | undefined {
  const manifest = join(toolsDir(env), 'manifest.json');
  if (existsSync(manifest)) {
    try {
      const m = JSON.parse(readFileSync(manifest, 'utf8')) as Record<string, { path?: string }>;
      const p = m[name]?.path;
      if (p && existsSync(p)) return p;
    } catch {
      /* a torn manifest is rebuilt by the next provision run */
    }
  }
  return onPath(name);
}

/** deploy/provision.sh exited with an error (its own messages went to stderr). */
export class ProvisionError extends KeelError {
  declare readonly code: 'KEEL_PROVISION_FAILED';
  readonly tools: ToolName[];
  readonly exitCode: number | null;
  constructor(tools: ToolName[], exitCode: number | null) {
    super('KEEL_PROVISION_FAILED', `deploy/provision.sh ${tools.join(' ')} failed (exit ${exitCode}); see its messages above`);
    this.name = 'ProvisionError';
    this.tools = tools;
    this.exitCode = exitCode;
  }
}

/** Runs deploy/provision.sh for the given tools, streaming its progress to stderr. */
export function provision(tools: ToolName[], env: Record<string, string | undefined> = process.env): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [PROVISION_SCRIPT, ...tools], { stdio: ['ignore', 'inherit', 'inherit'], env: env as NodeJS.ProcessEnv });
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0 ? resolve() : reject(new ProvisionError(tools, code)),
    );
  });
}
