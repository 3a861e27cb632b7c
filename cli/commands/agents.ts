import type { Command } from 'commander';
import { loadConfig } from '../../config/index.ts';
import { agentProcesses, listAgents, subjects } from '../../bus/index.ts';
import { connectCli } from '../connect.ts';
import { CliError } from '../errors.ts';

export function registerAgents(program: Command): void {
  program
    .command('agents')
    .description('List the live agent instances and their capabilities (the capability registry on the bus). Needs a running engine or KEEL_NATS_URL.')
    .option('--json', 'print JSON: { agents: Manifest[], processes: [{ name, host, pid, agents, rssBytes, rssMb, cpuPct, cpuSeconds, instances }] } (RSS and CPU as of each process\'s last heartbeat; CPU as % of one core)')
    .action(async (opts: { json?: boolean }) => {
      const cfg = loadConfig();
      const nc = await connectCli(cfg);
      try {
        const agents = await listAgents(nc, subjects(cfg.subjectPrefix).registryBucket).catch((err: unknown) => {
          if (/authoriz|permission/i.test((err as Error).message)) {
            throw new CliError('CLI_BUS_AUTH', `the bus at ${cfg.natsUrl ?? `nats://127.0.0.1:${cfg.natsPort}`} let the CLI in but refused to show the capability registry (${(err as Error).message}): the credentials in ${cfg.dataDir} are not the engine's admin credentials. Set KEEL_DATA_DIR to the data dir \`keel start\` printed, or KEEL_SUBJECT_PREFIX to the engine's (now '${cfg.subjectPrefix}').`, { cause: err, details: { dataDir: cfg.dataDir, prefix: cfg.subjectPrefix } });
          }
          if (/not found|no stream|bucket/i.test((err as Error).message)) return [];
          throw err;
        });
        // each OS process once (a host runs several agents), with its footprint
        const processes = agentProcesses(agents).map((p) => ({ ...p, rssMb: Math.round(p.rssBytes / 104_857.6) / 10, cpuPct: Math.round(p.cpu * 1000) / 10 }));
        if (opts.json) {
          console.log(JSON.stringify({ agents, processes }));
          return;
        }
        if (agents.length === 0) {
          console.log('no live agent instances');
          return;
        }
        const usage = (a: (typeof agents)[number]) => {
          const p = processes.find((x) => x.host === a.host && x.pid === a.pid);
          return p ? [`${p.rssMb} MB`, `${p.cpuPct}%`] : ['-', '-'];
        };
        const rows = agents.map((a) => [a.agent, a.instanceId, `${a.host}:${a.pid}`, ...usage(a), a.capabilities.map((c) => `${c.name}@${c.version}`).join(', '), a.heartbeatAt]);
        const head = ['AGENT', 'INSTANCE', 'HOST:PID', 'RSS', 'CPU', 'CAPABILITIES', 'LAST HEARTBEAT'];
        const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
        for (const r of [head, ...rows]) console.log(r.map((c, i) => c.padEnd(widths[i]!)).join('  '));
      } finally {
        await nc.close();
      }
    });
}
