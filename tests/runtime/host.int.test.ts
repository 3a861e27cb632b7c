/**
 * Co-hosting (runtime/host.ts): several agents in one process, each with its own bus connection,
 * registry entry and restart accounting; one agent's failure restarts that agent alone.
 */
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { z } from 'zod';
import { connectBus, createBus, defineMessage, listAgents, type Bus } from '../../bus/index.ts';
import { openStore } from '../../shared-state/index.ts';
import { defineAgent, defineCapability, hostAgents, type AgentDefinition } from '../../runtime/index.ts';
import { workflowRunType } from '../../workflows/index.ts';
import { createLogger } from '../../observability/index.ts';
import { natsSuite, uniqueName, waitFor } from '../helpers/index.ts';

const suite = natsSuite('host');
const silent = createLogger('host-test', { level: 'silent' });

function agentFor(name: string, seen: string[]): AgentDefinition {
  return defineAgent({
    name,
    version: '1.0.0',
    capabilities: [defineCapability({ name: `${name}.work`, version: '1', input: z.object({ n: z.number() }), output: z.object({ ok: z.boolean() }), handler: async (ctx) => (seen.push(`${name}:${ctx.input.n}`), { ok: true }) })],
  });
}

async function newBus(): Promise<Bus> {
  const nc = await connectBus({ servers: suite.nats!.url });
  suite.defer(() => nc.close());
  const bus = createBus(nc, { prefix: uniqueName('h') });
  await bus.provision();
  return bus;
}

describe('agent host', () => {
  it('runs two agents in one process, each on its own connection; a closed connection restarts that agent alone', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const bus = await newBus();
    const store = await openStore(`sqlite:${join(suite.dir, `${bus.subjects.prefix}.db`)}`, { types: [workflowRunType] });
    suite.defer(() => store.close());
    const seen: string[] = [];
    const defs = [agentFor('h-one', seen), agentFor('h-two', seen)];
    const host = await hostAgents(
      defs.map((def) => ({ def, options: { natsUrl: suite.nats!.url, state: store, prefix: bus.subjects.prefix, logger: silent, heartbeatMs: 500, sweepMs: 0 } })),
      { logger: silent, name: 'pair', restartBaseMs: 100 },
    );
    suite.defer(() => host.stop(0));
    expect(host.status().map((s) => [s.agent, s.status, s.restarts])).toEqual([['h-one', 'running', 0], ['h-two', 'running', 0]]);
    const [one, two] = host.running();
    expect(one!.bus.nc).not.toBe(two!.bus.nc);
    const entries = await listAgents(bus.nc, bus.subjects.registryBucket);
    expect(entries.map((m) => [m.agent, m.process?.host, m.process?.agents])).toEqual([['h-one', 'pair', ['h-one', 'h-two']], ['h-two', 'pair', ['h-one', 'h-two']]]);

    // h-one's connection closes for good: it is restarted inside the host; h-two is untouched
    await one!.bus.nc.close();
    await waitFor(() => host.status()[0]!.status === 'running' && host.status()[0]!.restarts === 1, { timeoutMs: 10_000, what: 'h-one restarted' });
    expect(host.status()[1]).toMatchObject({ status: 'running', restarts: 0 });
    expect(host.running()[1]).toBe(two);
    // same instance, same registry entry, now counting the restart
    expect(host.running()[0]!.instanceId).toBe(one!.instanceId);
    await waitFor(async () => (await listAgents(bus.nc, bus.subjects.registryBucket)).filter((m) => m.agent === 'h-one').map((m) => m.process?.restarts).join() === '1', { what: 'the restart in the registry' });

    // both still work
    const msg = (n: string) => defineMessage(`task.${n}.work`, z.object({ n: z.number() }));
    await bus.publish(bus.subjects.task('h-one.work'), msg('h-one'), { n: 1 }, { correlationId: 'c1' });
    await bus.publish(bus.subjects.task('h-two.work'), msg('h-two'), { n: 2 }, { correlationId: 'c2' });
    await waitFor(() => seen.includes('h-one:1') && seen.includes('h-two:2'), { what: 'both agents handling tasks' });
  });

  it('an agent that cannot start is retried inside the host while the others run; a lone agent fails fast', async (ctx) => {
    if (!suite.nats) return ctx.skip(suite.skip);
    const bus = await newBus();
    const store = await openStore(`sqlite:${join(suite.dir, `${bus.subjects.prefix}.db`)}`, { types: [workflowRunType] });
    suite.defer(() => store.close());
    const seen: string[] = [];
    const good = agentFor('h-good', seen);
    const bad = agentFor('h-bad', seen);
    const common = { state: store, prefix: bus.subjects.prefix, logger: silent, sweepMs: 0 };
    const host = await hostAgents(
      [
        { def: good, options: { natsUrl: suite.nats!.url, ...common } },
        { def: bad, options: { natsUrl: 'nats://127.0.0.1:1', ...common } }, // nothing listens there
      ],
      { logger: silent, restartBaseMs: 50 },
    );
    suite.defer(() => host.stop(0));
    await waitFor(() => host.status()[1]!.restarts >= 2, { timeoutMs: 10_000, what: 'h-bad retried' });
    expect(host.status()[0]).toMatchObject({ agent: 'h-good', status: 'running', restarts: 0 });
    expect(host.status()[1]).toMatchObject({ agent: 'h-bad', status: 'restarting' });
    expect(host.status()[1]!.lastError).toMatch(/127\.0\.0\.1:1/);

    await expect(hostAgents([{ def: bad, options: { natsUrl: 'nats://127.0.0.1:1', ...common } }], { logger: silent })).rejects.toThrow(/127\.0\.0\.1:1/);
  });
});
