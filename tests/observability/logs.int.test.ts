/**
 * `keel start` on a terminal prints readable lines (its own and its agent processes', which
 * inherit the terminal) and a summary line that stands out; on a pipe, or with
 * KEEL_LOG_FORMAT=json, every log line is JSON. The terminal is a real pseudo-TTY: util-linux's
 * `script`.
 */
import { describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { REPO_ROOT } from '../../config/index.ts';
import { freePort, startEngineProcess, tempDir, waitFor } from '../helpers/index.ts';

const hasScript = spawnSync('script', ['--version']).status === 0;
// an ANSI colour sequence, and a carriage return the terminal adds
const ESC = String.fromCharCode(27);
const strip = (s: string) => s.replace(new RegExp(`${ESC}\\[[0-9;]*m`, 'g'), '').replace(/\r/g, '');

/** Runs `keel start` (one agent: intake) inside a pseudo-terminal until `until` shows in its output. */
async function onTerminal(env: Record<string, string>, until: RegExp): Promise<string> {
  const dir = tempDir('keel-tty-');
  const [http, nats, smtp] = [await freePort(), await freePort(), await freePort()];
  const cmd = `${JSON.stringify(process.execPath)} ${JSON.stringify(join(REPO_ROOT, 'cli', 'keel.ts'))} start`;
  const child = spawn('script', ['-qfec', cmd, '/dev/null'], {
    cwd: REPO_ROOT,
    env: { ...process.env, KEEL_DATA_DIR: dir.path, KEEL_HTTP_PORT: String(http), KEEL_NATS_PORT: String(nats), KEEL_SMTP_PORT: String(smtp), KEEL_AGENTS: 'intake', KEEL_LOG_LEVEL: 'info', KEEL_LOG_FORMAT: '', KEEL_OPERATOR_TOKEN: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise((r) => child.once('exit', r));
  try {
    await waitFor(() => until.test(strip(out)), { timeoutMs: 90_000, intervalMs: 200, what: `${until} on the terminal` });
    return out;
  } finally {
    // script hangs the terminal up: keel start stops (SIGHUP) and its agent drains
    child.kill('SIGTERM');
    await exited;
    await waitFor(() => spawnSync('pgrep', ['-f', dir.path]).status !== 0, { timeoutMs: 30_000, intervalMs: 200, what: 'keel start to stop' }).catch(() => undefined);
    dir.remove();
  }
}

describe('logs for people', () => {
  it('on a terminal: readable lines from the engine and its agent process, and the summary line in bold', async (ctx) => {
    if (!hasScript) return ctx.skip('script (util-linux) is not installed');
    const raw = await onTerminal({}, /intake +agent running/);
    const lines = strip(raw).split('\n');
    expect(lines.find((l) => l.includes('keel engine ready'))).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: keel +keel engine ready {2}url=http:\/\/127\.0\.0\.1:\d+ nats=nats:\/\/127\.0\.0\.1:\d+ dataDir=/);
    expect(lines.find((l) => / intake +agent running/.test(l))).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: intake +agent running {2}agent=intake instance=\S+ capabilities=\["inbound\.intake"\] metrics=http:\/\/127\.0\.0\.1:\d+\/metrics$/);
    expect(lines.filter((l) => l.startsWith('{'))).toEqual([]);
    // coloured levels, and the one summary line bold green
    expect(raw).toContain(`${ESC}[32mINFO${ESC}[39m`);
    expect(raw).toMatch(new RegExp(`${ESC}\\[1;32m▶ Keel is running: http://127\\.0\\.0\\.1:\\d+/healthz · SMTP .* · 1 agent process · data .*${ESC}\\[0m`));
  }, 180_000);

  it('on a terminal with KEEL_LOG_FORMAT=json: JSON lines, the summary plain', async (ctx) => {
    if (!hasScript) return ctx.skip('script (util-linux) is not installed');
    const raw = await onTerminal({ KEEL_LOG_FORMAT: 'json' }, /"msg":"agent running"/);
    const logs = strip(raw).split('\n').filter((l) => l.startsWith('{'));
    const recs = logs.map((l) => JSON.parse(l) as { service: string; msg: string });
    expect(recs.find((r) => r.msg === 'keel engine ready')?.service).toBe('keel');
    expect(recs.find((r) => r.msg === 'agent running')?.service).toBe('intake');
    expect(raw).not.toContain(`${ESC}[`);
    expect(strip(raw)).toMatch(/^Keel is running: /m);
  }, 180_000);

  it('on a pipe (no TTY): every log line of the engine and its agents is JSON', async () => {
    const e = await startEngineProcess({ KEEL_AGENTS: 'intake', KEEL_LOG_FORMAT: '' });
    try {
      await waitFor(() => e.output().includes('"msg":"agent running"'), { timeoutMs: 60_000, intervalMs: 200, what: 'the agent to run' });
      const lines = e.output().split('\n').filter((l) => l.startsWith('['));
      expect(lines).toEqual([]);
      const recs = e.output().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { service: string; msg: string });
      expect(recs.some((r) => r.service === 'keel' && r.msg === 'keel engine ready')).toBe(true);
      expect(recs.some((r) => r.service === 'intake' && r.msg === 'agent running')).toBe(true);
      expect(e.output()).not.toContain(`${ESC}[`);
    } finally {
      await e.stop('SIGINT');
      e.cleanup();
    }
  }, 120_000);
});
