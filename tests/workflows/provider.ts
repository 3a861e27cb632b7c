import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

/** A fake external API for workflow tests: applies each idempotency key once and records what happened. */
export async function startCountingProvider() {
  const applied = new Map<string, { path: string; body: Record<string, unknown>; seq: number }>();
  // each key's calls: where they went, for which run and step, when they arrived (performance.now()
  // of this process) and which process made them (the `pid` the caller sends, when it does)
  const received = new Map<string, { path: string; run: string; step: string; times: number[]; pids: Array<number | undefined> }>();
  let calls = 0;
  let seq = 0;
  const server = createServer((req, res) => {
    let raw = '';
    req.on('data', (c: Buffer) => (raw += c.toString()));
    req.on('end', () => {
      calls++;
      const body = JSON.parse(raw || '{}') as Record<string, unknown>;
      const key = String(body.key);
      const r = received.get(key) ?? { path: req.url ?? '', run: String(body.run), step: String(body.step), times: [], pids: [] };
      r.times.push(performance.now());
      r.pids.push(typeof body.pid === 'number' ? body.pid : undefined);
      received.set(key, r);
      if (!applied.has(key)) applied.set(key, { path: req.url ?? '', body, seq: ++seq });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ id: `fx-${applied.get(key)!.seq}` }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const of = (run: string, path: string) => [...applied.values()].filter((a) => a.body.run === run && a.path === path).sort((x, y) => x.seq - y.seq);
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    calls: () => calls,
    byStep(run: string): Record<string, number> {
      const out: Record<string, number> = {};
      for (const a of of(run, '/effect')) out[String(a.body.step)] = (out[String(a.body.step)] ?? 0) + 1;
      return out;
    },
    /** every key the API received, with its run and step, and the arrival time and caller of each of its calls */
    received: () => [...received].map(([key, v]) => ({ key, ...v, times: [...v.times], pids: [...v.pids] })),
    undos: (run: string) => of(run, '/undo').map((a) => String(a.body.step)),
    escalations: (run: string) => of(run, '/escalate').map((a) => a.body),
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
