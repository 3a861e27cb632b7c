/**
 * A real `keel start` (every agent its own process, a scripted priced model) and Debian's chromium
 * driven by playwright-core: what the console's browser tests and `npm run screenshots` share.
 */
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createTransport } from 'nodemailer';
import type { BrowserContext, Page } from 'playwright-core';
import { REPO_ROOT } from '../../config/index.ts';
import { startEngineProcess, tempDir, waitFor, type EngineProcess } from '../helpers/index.ts';

export const CHROMIUM = process.env.KEEL_TEST_CHROMIUM ?? '/usr/bin/chromium';
export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** Why the browser tests cannot run here, or '' when they can. */
export function browserMissing(): string {
  if (!existsSync(CHROMIUM)) return `no chromium at ${CHROMIUM} (Debian: apt-get install chromium; .ci/run installs it)`;
  return '';
}

/** $2 input, $0.50 cached input, $8 output per 1M tokens for the scripted model */
export const PRICE_ENV = { KEEL_PRICE_SCRIPTED: '2,0.5,8' };
export const USAGE = { input_tokens: 1200, output_tokens: 80, cached_tokens: 200 };
/** What one scripted call costs at {@link PRICE_ENV}. */
export const CALL_USD = ((USAGE.input_tokens - USAGE.cached_tokens) * 2 + USAGE.cached_tokens * 0.5 + USAGE.output_tokens * 8) / 1e6;
export const SUGGESTED = 'Hello,\n\nThank you for writing. We have looked into it and will sort it out today.\n\nBest regards';

export interface ConsoleWorld {
  engine: EngineProcess;
  context: BrowserContext;
  page: Page;
  dir: { path: string; remove(): void };
  /** `keel ...` against the engine's data dir (JSON parsed when asked) */
  keel(args: string[]): { status: number | null; stdout: string; stderr: string };
  /** an operator API call with the bearer token */
  api<T = unknown>(path: string, init?: { method?: string; body?: unknown }): Promise<{ status: number; body: T }>;
  sendEmail(o: { from: string; subject: string; text: string }): Promise<void>;
  emlsTo(to: string): string[];
  login(page?: Page): Promise<void>;
  close(): Promise<void>;
}

/**
 * Starts the engine with every agent and a scripted small model, priced, that answers every call
 * with {@link SUGGESTED} (each agent process plays the script from its start, so one reply for
 * all: the reply suggester drafts it; triage, when unsure, gets no JSON and keeps tier 0, its
 * call still in the ledger).
 */
export async function startConsoleWorld(o: { viewport?: { width: number; height: number } } = {}): Promise<ConsoleWorld> {
  const dir = tempDir('keel-console-');
  const script = join(dir.path, 'replies.json');
  writeFileSync(script, JSON.stringify({ model: 'scripted-small', loop: true, replies: [{ content: SUGGESTED, usage: USAGE }] }));
  const engine = await startEngineProcess({ KEEL_AGENTS: '', KEEL_AGENT_METRICS: '0', KEEL_LOG_LEVEL: 'warn', KEEL_WORKFLOW_SWEEP_MS: '500', KEEL_MODEL_SMALL: `scripted:${script}`, ...PRICE_ENV, KEEL_TRACES_UI: 'http://127.0.0.1:16686' });
  const api: ConsoleWorld['api'] = async (path, init = {}) => {
    const r = await fetch(`${engine.httpUrl}${path}`, { method: init.method ?? 'GET', headers: { ...engine.auth, ...(init.body !== undefined ? { 'content-type': 'application/json' } : {}) }, body: init.body === undefined ? undefined : JSON.stringify(init.body) });
    const text = await r.text();
    return { status: r.status, body: (text ? JSON.parse(text) : null) as never };
  };
  try {
    await waitFor(async () => ((await api<{ agents: unknown[] }>('/v1/agents')).body.agents?.length ?? 0) >= 6, { timeoutMs: 90_000, intervalMs: 500, what: 'six agent processes' });
  } catch (err) {
    await engine.stop();
    engine.cleanup();
    dir.remove();
    throw err;
  }
  const { chromium } = await import('playwright-core');
  const context = await chromium.launchPersistentContext(join(dir.path, 'chromium-profile'), { executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, viewport: o.viewport ?? { width: 1280, height: 860 } });
  const page = context.pages()[0] ?? (await context.newPage());
  const mail = createTransport({ host: '127.0.0.1', port: engine.smtpPort, secure: false, ignoreTLS: true });
  const world: ConsoleWorld = {
    engine,
    context,
    page,
    dir,
    keel: (args) => {
      const r = spawnSync(process.execPath, [join(REPO_ROOT, 'cli', 'keel.ts'), ...args], { cwd: REPO_ROOT, env: { ...process.env, KEEL_DATA_DIR: engine.dataDir, KEEL_NATS_PORT: String(engine.natsPort), KEEL_LOG_LEVEL: 'silent' }, encoding: 'utf8', timeout: 60_000 });
      return { status: r.status, stdout: r.stdout, stderr: r.stderr };
    },
    api,
    sendEmail: async (m) => {
      await mail.sendMail({ from: m.from, to: 'support@keel.local', subject: m.subject, text: m.text });
    },
    emlsTo: (to) => {
      const outbox = join(engine.dataDir, 'outbox');
      if (!existsSync(outbox)) return [];
      return readdirSync(outbox).filter((f) => f.endsWith('.eml')).map((f) => readFileSync(join(outbox, f), 'utf8')).filter((t) => new RegExp(`^To: ${to.replace(/\./g, '\\.')}\\r?$`, 'm').test(t));
    },
    login: async (p = page) => {
      await p.goto(engine.httpUrl);
      await p.getByLabel('Operator token').fill(engine.operatorToken);
      await p.getByRole('button', { name: 'Log in' }).click();
      await p.getByRole('navigation', { name: 'Views' }).waitFor();
    },
    close: async () => {
      mail.close();
      await context.close().catch(() => undefined);
      await engine.stop('SIGINT');
      engine.cleanup();
      dir.remove();
    },
  };
  return world;
}

/** A message that names nobody: intake refuses it for good, so its task is dead-lettered. */
export function nobodyMessage() {
  return {
    id: randomUUID(), channel: 'email', receivedAt: new Date().toISOString(), customer: { name: 'Nobody' }, text: 'who am I?', references: [], headers: {}, attachments: [],
    flags: { autoReply: false, bulk: false, htmlOnly: false, encodingRepaired: false, attachmentsDropped: false, truncated: false, fromMismatch: false },
  };
}
