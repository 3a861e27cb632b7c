/**
 * The inbound-customers scenario with every agent co-hosted in one supervised process
 * (KEEL_AGENT_HOSTS=all): each agent keeps its own bus user, registry entry and restarts, so the
 * scenario behaves exactly as with one process per agent. The tests are in scenario.ts.
 */
import { describeInboundScenario } from './scenario.ts';

describeInboundScenario({
  name: 'co-hosted: KEEL_AGENT_HOSTS=all',
  env: { KEEL_AGENT_HOSTS: 'all' },
  agentProcesses: 1,
  // one process: its spans carry the host's service name (each span still names its agent: keel.agent)
  traceServices: ['keel-engine', 'keel-host-all'],
});
