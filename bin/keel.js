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

// The engine (`keel start`) runs with a capped young generation, as its agents do: V8 otherwise
// grows it to 128 MB after a burst of allocation (a retention pass) and never gives it back, which
// a 30-minute soak showed as RSS steps of 50-110 MB with a level live heap (docs/operations.md).
const ENGINE_FLAGS = ['--max-semi-space-size=4'];
const isStart = process.argv[2] === 'start';
const flagged = process.execArgv.some((a) => a.startsWith('--max-semi-space-size'));

function rerun(node, flags) {
  const child = spawn(node, [...flags, fileURLToPath(import.meta.url), ...process.argv.slice(2)], { stdio: 'inherit' });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => child.kill(sig));
  child.on('exit', (code, signal) => (signal ? process.kill(process.pid, signal) : process.exit(code ?? 1)));
}

if (major >= 24 && isStart && !flagged) {
  // replace this process (same pid, no 40 MB parent left waiting); spawn where execve is missing
  if (typeof process.execve === 'function') process.execve(process.execPath, [process.execPath, ...process.execArgv, ...ENGINE_FLAGS, fileURLToPath(import.meta.url), ...process.argv.slice(2)], process.env);
  else rerun(process.execPath, ENGINE_FLAGS);
} else if (major >= 24) {
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
  rerun(pinned, isStart ? ENGINE_FLAGS : []);
}
