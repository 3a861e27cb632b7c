import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCheckpointer, type GraphRunResult } from '../../../runtime/langgraph/index.ts';
import { startMongo, tempDir, uniqueName, waitFor, type MongoHandle } from '../../helpers/index.ts';

// "A LangGraph agent killed between two nodes resumes at the second node, not from the start."
// The agent is a separate process (fixtures/two-node-graph.ts): node A, then node B that sleeps.
// We SIGKILL it while B sleeps, start a fresh process on the same thread, and check that A ran
// exactly once, B ran once to completion, and the state is ['a', 'b'].

const FIXTURE = fileURLToPath(new URL('./fixtures/two-node-graph.ts', import.meta.url));

interface Agent {
  child: ChildProcess;
  lines: string[];
  exited: Promise<number | null>;
}

function startAgent(stateUrl: string, threadId: string, counterDir: string, bSleepMs: number): Agent {
  const child = spawn(process.execPath, [FIXTURE, stateUrl, threadId, counterDir, String(bSleepMs)], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let buf = '';
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    const parts = buf.split('\n');
    buf = parts.pop() ?? '';
    lines.push(...parts);
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) =>
    child.on('exit', (code) => {
      if (code !== 0 && code !== null) console.error(`two-node-graph exited ${code}: ${stderr}`);
      resolve(code);
    }),
  );
  return { child, lines, exited };
}

function count(dir: string, file: string): number {
  const p = join(dir, file);
  return existsSync(p) ? readFileSync(p, 'utf8').split('\n').filter(Boolean).length : 0;
}

async function killAndResume(stateUrl: string): Promise<void> {
  const dir = tempDir('keel-lg-kill-');
  const threadId = uniqueName('task');
  try {
    // 1. First process: node A completes, node B starts and sleeps; kill it there.
    const first = startAgent(stateUrl, threadId, dir.path, 60_000);
    await waitFor(() => first.lines.includes('B-started'), { timeoutMs: 30_000, what: 'node B to start' });
    // The checkpoint after A is persisted before B starts (runGraph's durability 'sync').
    const saver = await createCheckpointer(stateUrl);
    try {
      const tuple = await saver.getTuple({ configurable: { thread_id: threadId } });
      expect(tuple?.checkpoint.channel_values.items).toEqual(['a']);
      expect(tuple?.metadata?.step).toBe(1);
    } finally {
      await saver.close();
    }
    first.child.kill('SIGKILL');
    await first.exited;
    expect(first.child.signalCode).toBe('SIGKILL');
    expect(count(dir.path, 'a.log')).toBe(1);
    expect(count(dir.path, 'b.log')).toBe(0);

    // 2. A fresh process on the same thread resumes at B.
    const second = startAgent(stateUrl, threadId, dir.path, 10);
    expect(await second.exited).toBe(0);
    expect(second.lines).not.toContain('A-done');
    expect(second.lines).toContain('B-started');
    const result = JSON.parse(second.lines.at(-1)!) as GraphRunResult<{ items: string[] }>;
    expect(result).toMatchObject({ status: 'done', mode: 'resumed', values: { items: ['a', 'b'] } });
    expect(count(dir.path, 'a.log')).toBe(1);
    expect(count(dir.path, 'b.log')).toBe(1);

    // 3. A redelivery after completion runs nothing and returns the stored result.
    const third = startAgent(stateUrl, threadId, dir.path, 10);
    expect(await third.exited).toBe(0);
    const again = JSON.parse(third.lines.at(-1)!) as GraphRunResult<{ items: string[] }>;
    expect(again).toMatchObject({ status: 'done', mode: 'completed-before', values: { items: ['a', 'b'] } });
    expect(third.lines).not.toContain('B-started');
    expect(count(dir.path, 'a.log')).toBe(1);
    expect(count(dir.path, 'b.log')).toBe(1);
  } finally {
    dir.remove();
  }
}

describe('LangGraph agent killed between two nodes', () => {
  it('resumes at the second node on SQLite', async () => {
    const db = tempDir('keel-lg-db-');
    try {
      await killAndResume(`sqlite:${join(db.path, 'keel.db')}`);
    } finally {
      db.remove();
    }
  });

  it('runs several agent processes on one SQLite file', async () => {
    const db = tempDir('keel-lg-db-');
    const counters = tempDir('keel-lg-counters-');
    const stateUrl = `sqlite:${join(db.path, 'keel.db')}`;
    try {
      const threads = [uniqueName('a'), uniqueName('b'), uniqueName('c')];
      const agents = threads.map((t) => startAgent(stateUrl, t, counters.path, 50));
      expect(await Promise.all(agents.map((a) => a.exited))).toEqual([0, 0, 0]);
      const saver = await createCheckpointer(stateUrl);
      try {
        for (const t of threads) {
          const tuple = await saver.getTuple({ configurable: { thread_id: t } });
          expect(tuple?.checkpoint.channel_values.items).toEqual(['a', 'b']);
        }
      } finally {
        await saver.close();
      }
      expect(count(counters.path, 'a.log')).toBe(3);
      expect(count(counters.path, 'b.log')).toBe(3);
    } finally {
      db.remove();
      counters.remove();
    }
  });

  describe('on MongoDB', () => {
    let server: MongoHandle | undefined;
    let reason = '';
    beforeAll(async () => {
      const m = await startMongo();
      if (m.ok) server = m.server;
      else reason = m.reason;
    });
    afterAll(async () => {
      await server?.stop();
    });

    it('resumes at the second node', async (ctx) => {
      if (!server) return ctx.skip(reason);
      const url = new URL(server.url);
      url.pathname = `/${uniqueName('lg')}`;
      await killAndResume(url.toString());
    });
  });
});
