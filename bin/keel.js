#!/usr/bin/env node
// The `keel` command. Keel runs on Node.js 24 (pinned through the `node` dev dependency);
// when the shell's own node is older, re-run the CLI under the pinned one.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cli = join(root, 'cli', 'keel.ts');
const major = Number(process.versions.node.split('.')[0]);

if (major >= 24) {
  // cache compiled (and type-stripped) modules on disk before the first .ts loads: keel starts
  // in tens of milliseconds instead of hundreds (no-op when NODE_DISABLE_COMPILE_CACHE is set)
  const { enableCompileCache } = await import('node:module');
  enableCompileCache?.();
  await import(pathToFileURL(cli).href);
} else {
  const pinned = join(root, 'node_modules', 'node', 'bin', 'node');
  if (!existsSync(pinned)) {
    console.error(`keel needs Node.js 24; this is ${process.version}. Run \`npm ci\` in ${root} to install the pinned runtime.`);
    process.exit(1);
  }
  const child = spawn(pinned, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], { stdio: 'inherit' });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => child.kill(sig));
  child.on('exit', (code, signal) => (signal ? process.kill(process.pid, signal) : process.exit(code ?? 1)));
}
