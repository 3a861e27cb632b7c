import { hostname } from 'node:os';
import { z } from 'zod';
import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/nats-core';
import type { Logger } from 'pino';

/** One capability as an agent announces it. */
export const CapabilitySchema = z.object({
  name: z.string().regex(/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/),
  version: z.string().min(1),
  description: z.string().optional(),
  /** JSON Schema of the input and output (from the zod schemas) */
  input: z.record(z.string(), z.unknown()).optional(),
  output: z.record(z.string(), z.unknown()).optional(),
  permissions: z
    .object({
      publish: z.array(z.string()).default([]),
      subscribe: z.array(z.string()).default([]),
      entityTypes: z.array(z.string()).default([]),
      secrets: z.array(z.string()).default([]),
    })
    .default({ publish: [], subscribe: [], entityTypes: [], secrets: [] }),
  costClass: z.string().default('none'),
});
export type Capability = z.infer<typeof CapabilitySchema>;

/** What one agent instance writes to the registry bucket, rewritten on every heartbeat. */
export const ManifestSchema = z.object({
  agent: z.string().regex(/^[A-Za-z0-9_-]+$/),
  instanceId: z.string().regex(/^[A-Za-z0-9_-]+$/),
  version: z.string().min(1),
  host: z.string(),
  pid: z.number().int(),
  startedAt: z.string(),
  heartbeatAt: z.string(),
  capabilities: z.array(CapabilitySchema),
  /**
   * the process the instance runs in, refreshed on every heartbeat: resident memory, CPU (a
   * fraction of one core since the previous heartbeat), the agents it hosts (more than one when
   * co-hosted) and how often this agent was restarted inside it
   */
  process: z
    .object({
      rssBytes: z.number(),
      cpu: z.number(),
      cpuSeconds: z.number(),
      host: z.string().optional(),
      agents: z.array(z.string()),
      restarts: z.number().int().default(0),
      /** the process's own Prometheus endpoint, when it serves one (`http://host:port/metrics`) */
      metricsUrl: z.string().optional(),
    })
    .optional(),
  /** the leases this instance holds (e.g. `workflow-timers`: it fires due workflow timers) */
  leases: z.array(z.string()).optional(),
  /** the circuit breakers around its connectors, refreshed on every heartbeat */
  breakers: z.array(z.object({ name: z.string(), state: z.enum(['closed', 'open', 'half_open']), failures: z.number().int(), openedAt: z.string().optional() })).optional(),
});
export type Manifest = z.infer<typeof ManifestSchema>;

export type RegistryEvent = { op: 'put'; instanceId: string; manifest: Manifest } | { op: 'gone'; agent: string; instanceId: string };

/**
 * Registry key of an instance: `<agent>.<instanceId>`, so nats-server permissions can let an
 * agent write its own entries only (`$KV.<bucket>.<agent>.*`).
 */
export function registryKey(agent: string, instanceId: string): string {
  return `${agent}.${instanceId}`;
}

export interface Announcement {
  manifest: Manifest;
  /** rewrite the entry now (after a change such as a lease taken or lost), not at the next heartbeat */
  refresh(): Promise<void>;
  /** stop heartbeating and remove the entry (graceful shutdown) */
  withdraw(): Promise<void>;
}

async function openBucket(nc: NatsConnection, bucket: string): Promise<KV> {
  return new Kvm(nc).open(bucket);
}

/**
 * Writes an instance's manifest to the registry bucket and rewrites it every `heartbeatMs`.
 * The bucket's TTL removes the entry soon after the instance dies (no heartbeat); a graceful
 * shutdown removes it at once.
 */
export async function announce(
  nc: NatsConnection,
  bucket: string,
  m: Omit<Manifest, 'host' | 'pid' | 'startedAt' | 'heartbeatAt'> & Partial<Pick<Manifest, 'host' | 'pid'>>,
  opts: { heartbeatMs?: number; logger?: Logger; /** refreshed on every heartbeat */ process?: () => Manifest['process']; /** refreshed on every heartbeat */ leases?: () => string[]; /** refreshed on every heartbeat */ breakers?: () => NonNullable<Manifest['breakers']> } = {},
): Promise<Announcement> {
  const kv = await openBucket(nc, bucket);
  const manifest: Manifest = ManifestSchema.parse({
    ...m,
    host: m.host ?? hostname(),
    pid: m.pid ?? process.pid,
    startedAt: new Date().toISOString(),
    heartbeatAt: new Date().toISOString(),
  });
  const put = async () => {
    manifest.heartbeatAt = new Date().toISOString();
    if (opts.process) manifest.process = opts.process();
    if (opts.leases) manifest.leases = opts.leases();
    if (opts.breakers) manifest.breakers = opts.breakers();
    await kv.put(registryKey(manifest.agent, manifest.instanceId), JSON.stringify(manifest));
  };
  await put();
  const timer = setInterval(() => {
    put().catch((err: unknown) => opts.logger?.warn({ err }, 'capability heartbeat failed'));
  }, opts.heartbeatMs ?? 5_000);
  timer.unref();
  return {
    manifest,
    refresh: () => put().catch((err: unknown) => opts.logger?.warn({ err }, 'capability announcement failed')),
    withdraw: async () => {
      clearInterval(timer);
      await kv.delete(registryKey(manifest.agent, manifest.instanceId)).catch(() => undefined);
    },
  };
}

/** The agent processes behind a registry listing: one row per OS process (a host lists several agents), with its RSS and CPU. */
export interface AgentProcess {
  host: string;
  pid: number;
  /** the host's name (KEEL_AGENT_HOSTS), else its agents joined by `+` */
  name: string;
  agents: string[];
  rssBytes: number;
  /** fraction of one core over the last heartbeat interval */
  cpu: number;
  cpuSeconds: number;
  /** `<agent>.<instanceId>` of each registry entry in it */
  instances: string[];
  /** its Prometheus endpoint, when it serves one */
  metricsUrl?: string;
}

export function agentProcesses(manifests: readonly Manifest[]): AgentProcess[] {
  const byProcess = new Map<string, { host: string; pid: number; name: string; agents: string[]; rssBytes: number; cpu: number; cpuSeconds: number; instances: string[]; heartbeatAt: string; metricsUrl?: string }>();
  for (const m of manifests) {
    if (!m.process) continue;
    const key = `${m.host}:${m.pid}`;
    const seen = byProcess.get(key);
    // the freshest heartbeat of the process's agents speaks for it
    if (seen && seen.heartbeatAt >= m.heartbeatAt) {
      seen.instances.push(`${m.agent}.${m.instanceId}`);
      continue;
    }
    const agents = m.process.agents.length ? m.process.agents : [m.agent];
    byProcess.set(key, {
      host: m.host,
      pid: m.pid,
      name: m.process.host ?? agents.join('+'),
      agents,
      rssBytes: m.process.rssBytes,
      cpu: m.process.cpu,
      cpuSeconds: m.process.cpuSeconds,
      instances: [...(seen?.instances ?? []), `${m.agent}.${m.instanceId}`],
      heartbeatAt: m.heartbeatAt,
      ...(m.process.metricsUrl ? { metricsUrl: m.process.metricsUrl } : {}),
    });
  }
  return [...byProcess.values()].map(({ heartbeatAt: _h, ...p }) => p).sort((a, b) => a.name.localeCompare(b.name) || a.pid - b.pid);
}

/** The live registry: every instance whose entry has not expired. */
export async function listAgents(nc: NatsConnection, bucket: string): Promise<Manifest[]> {
  const kv = await openBucket(nc, bucket);
  const out: Manifest[] = [];
  for await (const key of await kv.keys()) {
    const e = await kv.get(key);
    if (!e || e.operation !== 'PUT') continue;
    const parsed = ManifestSchema.safeParse(e.json());
    if (parsed.success) out.push(parsed.data);
  }
  return out.sort((a, b) => a.agent.localeCompare(b.agent) || a.instanceId.localeCompare(b.instanceId));
}

/**
 * Follows the registry: the current entries first, then every change. An instance that dies
 * shows up as `gone` when its entry expires (the bucket leaves a delete marker).
 */
export async function watchAgents(nc: NatsConnection, bucket: string): Promise<AsyncIterable<RegistryEvent> & { stop(): void }> {
  const kv = await openBucket(nc, bucket);
  const iter = await kv.watch();
  async function* events(): AsyncGenerator<RegistryEvent> {
    for await (const e of iter) {
      if (e.operation === 'PUT') {
        const parsed = ManifestSchema.safeParse(e.json());
        if (parsed.success) yield { op: 'put', instanceId: parsed.data.instanceId, manifest: parsed.data };
      } else {
        const dot = e.key.indexOf('.');
        yield { op: 'gone', agent: e.key.slice(0, dot), instanceId: e.key.slice(dot + 1) };
      }
    }
  }
  const gen = events();
  return Object.assign(gen, { stop: () => iter.stop() });
}
