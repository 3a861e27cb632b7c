import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ProviderCall {
  path: string;
  body: Record<string, unknown>;
}

/** A fake external payment API: dedupes charges by idempotency key, as real ones do, and records every call. */
export async function startProvider(): Promise<{ url: string; calls: ProviderCall[]; applied: Map<string, string>; close(): Promise<void> }> {
  const calls: ProviderCall[] = [];
  const applied = new Map<string, string>();
  const server: Server = createServer((req, res) => {
    let raw = '';
    req.on('data', (c: Buffer) => (raw += c.toString()));
    req.on('end', () => {
      const body = JSON.parse(raw || '{}') as Record<string, unknown>;
      calls.push({ path: req.url ?? '', body });
      let out: unknown = { ok: true };
      if (req.url === '/charge') {
        const key = String(body.key);
        if (!applied.has(key)) applied.set(key, `ch_${applied.size + 1}`);
        out = { chargeId: applied.get(key) };
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(out));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, calls, applied, close: () => new Promise<void>((r) => server.close(() => r())) };
}
