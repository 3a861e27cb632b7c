import { agentProcesses, listAgents, type NatsConnection } from '../bus/index.ts';
import { procSampler, type ProcessFootprint } from '../observability/index.ts';

/**
 * What the engine's /metrics reports besides itself: every live agent process (from the
 * registry, where each reports its own RSS and CPU on every heartbeat) and the local nats-server.
 */
export function engineFootprints(o: { nats: NatsConnection; registryBucket: string; natsServerPid?: () => number | undefined }): () => Promise<ProcessFootprint[]> {
  let nats: { pid: number; sample: ReturnType<typeof procSampler> } | undefined;
  return async () => {
    const out: ProcessFootprint[] = [];
    const manifests = await listAgents(o.nats, o.registryBucket).catch(() => []);
    for (const p of agentProcesses(manifests)) out.push({ process: p.name, pid: p.pid, rssBytes: p.rssBytes, cpu: p.cpu });
    const pid = o.natsServerPid?.();
    if (pid) {
      if (nats?.pid !== pid) nats = { pid, sample: procSampler(pid) };
      const u = nats.sample();
      if (u) out.push({ process: 'nats-server', pid, rssBytes: u.rssBytes, cpu: u.cpu });
    }
    return out;
  };
}
