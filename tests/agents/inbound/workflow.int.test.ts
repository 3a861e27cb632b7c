import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { connectBus, createBus } from '../../../bus/index.ts';
import { openStore, type Entity } from '../../../shared-state/index.ts';
import { type RunState } from '../../../workflows/index.ts';
import { runAgent } from '../../../runtime/index.ts';
import { WorkflowEngine } from '../../../workflows/index.ts';
import { inboundEmail } from '../../helpers/inbound-email.ts';
import intakeAgent from '../../../agents/inbound/intake.ts';
import triageAgent from '../../../agents/inbound/triage.ts';
import summarizerAgent from '../../../agents/inbound/summarizer.ts';
import replySuggesterAgent from '../../../agents/inbound/reply-suggester.ts';
import senderAgent from '../../../agents/inbound/sender.ts';
import escalationAgent from '../../../agents/inbound/escalation.ts';
import { closeMailSenders } from '../../../agents/inbound/mail.ts';
import { customerIdFor, inboundMessage, type TicketState } from '../../../agents/inbound/index.ts';
import { startNats, tempDir, uniqueName, waitFor, type NatsHandle } from '../../helpers/index.ts';
import { ALL_ENTITY_TYPES } from '../../helpers/types.ts';

// The six agents under the lead's `inbound-message` workflow: the contract between the workflow's
// input mappings and the agents' schemas, end to end, with the human approval in the middle.

let nats: NatsHandle | undefined;
let skip = '';
const dir = tempDir('keel-inbound-wf-');
const closers: Array<() => Promise<unknown>> = [];
const savedEnv = { ...process.env };
beforeAll(async () => {
  const n = await startNats();
  if (n.ok) nats = n.server;
  else skip = n.reason;
});
afterAll(async () => {
  for (const c of closers.reverse()) await c().catch(() => undefined);
  await closeMailSenders();
  await nats?.stop();
  process.env = savedEnv;
  dir.remove();
});

const email = inboundEmail;

describe('inbound-message workflow over the inbound agents', () => {
  it('a refund email: triage, summary and suggestion, approval by the operator, one threaded reply; an angry one also escalates', async (ctx) => {
    if (!nats) return ctx.skip(skip);
    const prefix = uniqueName('inwf');
    const dataDir = join(dir.path, prefix);
    process.env.KEEL_DATA_DIR = dataDir;
    delete process.env.KEEL_SMTP_RELAY;
    const nc = await connectBus({ servers: nats.url });
    closers.push(() => nc.close());
    const bus = createBus(nc, { prefix });
    await bus.provision();
    const store = await openStore(`sqlite:${join(dir.path, `${prefix}.db`)}`, { types: ALL_ENTITY_TYPES });
    closers.push(() => store.close());
    for (const d of [intakeAgent, triageAgent, summarizerAgent, replySuggesterAgent, senderAgent, escalationAgent]) {
      const a = await runAgent(d, { natsUrl: nats.url, state: store, prefix, sweepMs: 200 });
      closers.push(() => a.stop(1_000));
    }
    const engine = new WorkflowEngine({ store, bus, actor: { kind: 'system', id: 'test' }, catalog: { [inboundMessage.name]: inboundMessage } });
    const outbox = join(dataDir, 'outbox');
    const emls = () => (existsSync(outbox) ? readdirSync(outbox).filter((f) => f.endsWith('.eml')) : []);
    const run = async (id: string) => (await store.get<RunState>('workflow_run', id)) as Entity<RunState> | null;

    const msg = email({ from: 'ada@example.com', name: 'Ada Lovelace', subject: 'Refund for order 48213', messageId: '<wf1@example.com>', text: 'Could I get a refund please? Order #48213 does not fit our needs.' });
    const { runId } = await engine.start('inbound-message', { message: msg }, { runId: `in-${randomUUID()}`, customer: customerIdFor(msg.customer) });
    await waitFor(async () => (await run(runId))?.state.steps.approve?.status === 'waiting_approval', { timeoutMs: 30_000, what: 'the approval gate' });
    const r1 = (await run(runId))!.state;
    expect(r1.steps.escalate?.status).toBe('skipped');
    const ticketId = (r1.steps.intake?.output as { ticketId: string }).ticketId;
    let ticket = (await store.get<TicketState>('ticket', ticketId))!.state;
    expect(ticket.triage).toMatchObject({ intent: 'refund', tier: 0 });
    expect(ticket.summary).toBeTruthy();
    expect(ticket.suggestion?.text).toMatch(/^Hi Ada,/);
    expect(emls()).toHaveLength(0); // nothing goes out before the operator approves

    await engine.decideApproval(r1.steps.approve!.approvalId!, 'approved', { kind: 'human', id: 'operator' });
    await waitFor(async () => (await run(runId))?.state.status === 'completed', { timeoutMs: 30_000, what: 'the run to complete' });
    expect(emls()).toHaveLength(1);
    ticket = (await store.get<TicketState>('ticket', ticketId))!.state;
    expect(ticket.status).toBe('pending');
    expect(ticket.messages.map((m) => m.direction)).toEqual(['in', 'out']);
    expect(ticket.lastRunId).toBe(runId);

    const angry = email({ from: 'bob@example.com', subject: 'SITE DOWN', messageId: '<wf2@example.com>', text: "Your service is DOWN!!! This is UNACCEPTABLE. Fix it immediately or I'm calling my lawyer." });
    const r2 = await engine.start('inbound-message', { message: angry }, { runId: `in-${randomUUID()}`, customer: customerIdFor(angry.customer) });
    await waitFor(async () => (await run(r2.runId))?.state.steps.escalate?.status === 'completed', { timeoutMs: 30_000, what: 'the escalation' });
    const t2 = ((await run(r2.runId))!.state.steps.intake?.output as { ticketId: string }).ticketId;
    expect((await store.get<TicketState>('ticket', t2))!.state).toMatchObject({ escalated: true, status: 'escalated', priority: 'urgent' });
    expect(emls()).toHaveLength(2); // the reply above and the operator's notification
  });
});
