/**
 * Scenario: managing inbound customers, with the engine run as processes (`keel start` with every
 * agent in its own process), a real SMTP client (swaks), HTTP chat, the CLI for approvals and
 * cost, and Jaeger for the trace. The tests are in scenario.ts (shared with the co-hosted layout).
 */
import { describeInboundScenario } from './scenario.ts';

describeInboundScenario({
  name: 'one process per agent',
  env: {},
  agentProcesses: 10,
  traceServices: ['keel-engine', 'intake', 'triage', 'summarizer', 'reply-suggester', 'sender'],
});
