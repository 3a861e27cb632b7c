/**
 * Scenario: a returning customer. The engine runs as a process (`keel start`) with intake,
 * triage, summarizer, reply-suggester and the memorizer; email arrives over real SMTP
 * (nodemailer as the client). The first email becomes a ticket and, through the memory agent,
 * long-term memory; a new email of the same customer on the same matter (a new thread, other
 * words) gets a tier-0 suggested reply and a summary that refer to the earlier ticket, and
 * `keel ticket show` / `keel why` list the memories the steps rested on. Uses the real default
 * embedder; skips, saying so, when it is not provisioned.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { loadConfig, REPO_ROOT } from '../../../config/index.ts';
import { localMiniLMPresent } from '../../../memory/index.ts';
import { ticketDate } from '../../../agents/inbound/ticket.ts';
import { startEngineProcess, waitFor, type EngineProcess } from '../../helpers/index.ts';

const cfg = loadConfig();
const provisioned = await localMiniLMPresent(cfg.modelsDir);
const skip = provisioned ? '' : `the default embedding model is not provisioned in ${cfg.modelsDir} (run npm run provision)`;
let engine: EngineProcess | undefined;

function keel(args: string[]) {
  const r = spawnSync(process.execPath, [join(REPO_ROOT, 'cli', 'keel.ts'), ...args], {
    env: { ...process.env, KEEL_DATA_DIR: engine!.dataDir, KEEL_STATE: '', KEEL_MEMORY: '', KEEL_NATS_PORT: String(engine!.natsPort), KEEL_LOG_LEVEL: 'silent' },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, json: <T = Record<string, unknown>>() => JSON.parse(r.stdout) as T };
}

async function send(subject: string, text: string): Promise<void> {
  const t = nodemailer.createTransport({ host: '127.0.0.1', port: engine!.smtpPort, secure: false, ignoreTLS: true });
  try {
    await t.sendMail({ from: 'Alice Smith <alice@example.com>', to: 'support@keel.local', subject, text });
  } finally {
    t.close();
  }
}

interface Ticket { entityId: string; createdAt: string; state: { subject: string; summary?: string; suggestion?: { text: string; tier: number } } }
const tickets = () => keel(['entity', 'list', '--type', 'ticket', '--json']).json<{ items: Ticket[] }>().items;

beforeAll(async () => {
  if (skip) return;
  engine = await startEngineProcess({ KEEL_AGENTS: 'intake,triage,summarizer,reply-suggester,memorizer', KEEL_LOG_LEVEL: 'warn', KEEL_MEMORY: '', KEEL_MODEL_SMALL: '', KEEL_MODEL_LARGE: '' });
}, 120_000);
afterAll(async () => {
  if (engine) {
    await engine.stop('SIGINT');
    engine.cleanup();
  }
});

describe('a returning customer (scenario)', () => {
  it('the suggested reply and the summary of a new ticket refer to the earlier ticket on the same matter, and the ticket lists the memories shown', async (ctx) => {
    if (skip) return ctx.skip(skip);
    await send('Refund for order 1234', 'Hello, I was charged twice for order 1234. Please refund the second charge.');
    await waitFor(() => keel(['memory', 'search', 'refund order 1234', '--customer', 'alice@example.com', '--json']).json<unknown[]>().length >= 1, { timeoutMs: 90_000, intervalMs: 1_000, what: 'the first email in memory' });
    const first = tickets().find((t) => t.state.subject === 'Refund for order 1234')!;

    await send('Billed two times again', 'Hi, my card was billed two times for the same purchase again. I want the extra payment returned.');
    let second: Ticket | undefined;
    await waitFor(() => !!(second = tickets().find((t) => t.state.subject === 'Billed two times again' && t.state.suggestion && t.state.summary)), { timeoutMs: 90_000, intervalMs: 1_000, what: 'the second ticket drafted and summarized' });
    expect(second!.entityId).not.toBe(first.entityId);
    const firstDay = ticketDate(first.createdAt);
    expect(second!.state.suggestion!.tier).toBe(0);
    expect(second!.state.suggestion!.text).toContain(`As in your ticket of ${firstDay} about "Refund for order 1234"`);
    expect(second!.state.summary).toContain(`Earlier: ticket of ${firstDay} about "Refund for order 1234" (${first.entityId})`);

    // what the steps rested on: the first email's memory, listed by ticket show and why
    const memoryId = keel(['memory', 'search', 'refund order 1234', '--customer', 'alice@example.com', '--json']).json<Array<{ id: string; entityId: string }>>().find((h) => h.entityId === first.entityId)!.id;
    const show = keel(['ticket', 'show', second!.entityId, '--json']).json<{ memoriesShown: Array<{ step: string; memories: string[] }> }>();
    expect(show.memoriesShown.find((m) => m.step === 'suggest')!.memories).toEqual([memoryId]);
    expect(show.memoriesShown.find((m) => m.step === 'summarize')!.memories).toEqual([memoryId]);
    expect(keel(['ticket', 'show', second!.entityId]).stdout).toContain(`memories shown to suggest`);
    const why = keel(['why', second!.entityId, '--json']).json<{ chain: Array<{ steps: Array<{ step: string | null; event: string; memories: string[] | null }> }> }>();
    expect(why.chain[0]!.steps.find((s) => s.step === 'suggest' && s.event === 'step_completed')!.memories).toEqual([memoryId]);
    // the first ticket's own reply (no earlier ticket then) refers to none
    expect(tickets().find((t) => t.entityId === first.entityId)!.state.suggestion!.text).not.toContain('As in your ticket');
  }, 240_000);
});
