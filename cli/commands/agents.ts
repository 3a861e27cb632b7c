import type { Command } from 'commander';
import { loadConfig } from '../../config/index.ts';
import { listAgents, subjects } from '../../bus/index.ts';
import { connectCli } from '../connect.ts';

export function registerAgents(program: Command): void {
  program
    .command('agents')
    .description('List the live agent instances and their capabilities (the capability registry on the bus). Needs a running engine or KEEL_NATS_URL.')
    .option('--json', 'print JSON: { agents: Manifest[] }')
    .action(async (opts: { json?: boolean }) => {
      const cfg = loadConfig();
      const nc = await connectCli(cfg);
      try {
        const agents = await listAgents(nc, subjects(cfg.subjectPrefix).registryBucket).catch((err: unknown) => {
          if (/not found|no stream|bucket/i.test((err as Error).message)) return [];
          throw err;
        });
        if (opts.json) {
          console.log(JSON.stringify({ agents }));
          return;
        }
        if (agents.length === 0) {
          console.log('no live agent instances');
          return;
        }
        const rows = agents.map((a) => [a.agent, a.instanceId, `${a.host}:${a.pid}`, a.capabilities.map((c) => `${c.name}@${c.version}`).join(', '), a.heartbeatAt]);
        const head = ['AGENT', 'INSTANCE', 'HOST:PID', 'CAPABILITIES', 'LAST HEARTBEAT'];
        const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
        for (const r of [head, ...rows]) console.log(r.map((c, i) => c.padEnd(widths[i]!)).join('  '));
      } finally {
        await nc.close();
      }
    });
}
