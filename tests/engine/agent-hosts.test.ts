import { describe, expect, it } from 'vitest';
import { loadConfig, parseAgentHosts } from '../../config/index.ts';
import { agentProcesses, type Manifest } from '../../bus/index.ts';
import { AGENT_NODE_FLAGS, agentProcessSpecs, groupAgentProcesses, type PlannedAgent } from '../../engine/supervisor.ts';
import { isKeelError } from '../../config/index.ts';

const agent = (name: string, replicas = 1): PlannedAgent => ({ name, entry: name, spec: `file:///app/agents/${name}.ts`, replicas });
const SIX = ['intake', 'triage', 'summarizer', 'reply-suggester', 'sender', 'escalation'].map((n) => agent(n));
const creds = (n: string) => ({ user: `agent-${n}`, password: `pw-${n}` });

describe('co-hosting agents (KEEL_AGENT_HOSTS)', () => {
  it('parses `all` and named groups; refuses an agent in two hosts, a bad name, an empty value', () => {
    expect(parseAgentHosts('all')).toBe('all');
    expect(parseAgentHosts('inbound:intake,triage ; out: sender,escalation@2')).toEqual([
      { name: 'inbound', agents: ['intake', 'triage'] },
      { name: 'out', agents: ['sender', 'escalation'] },
    ]);
    expect(parseAgentHosts('intake,triage')).toEqual([{ name: 'host1', agents: ['intake', 'triage'] }]);
    expect(parseAgentHosts('file:///a/x.ts,file:///a/y.ts')).toEqual([{ name: 'host1', agents: ['file:///a/x.ts', 'file:///a/y.ts'] }]);
    expect(parseAgentHosts('a:x;b:x')).toMatch(/'x' is in two hosts/);
    expect(parseAgentHosts('Big:x')).toMatch(/invalid host name/);
    expect(loadConfig({ KEEL_AGENT_HOSTS: 'all' }).agentHosts).toBe('all');
    expect(loadConfig({}).agentHosts).toBeUndefined();
    expect(() => loadConfig({ KEEL_AGENT_HOSTS: 'a:x;b:x' })).toThrow(/KEEL_AGENT_HOSTS/);
    expect(loadConfig({ KEEL_AGENT_NATS_CREDENTIALS: JSON.stringify({ triage: creds('triage') }) }).agentNatsCredentials).toEqual({ triage: creds('triage') });
    expect(() => loadConfig({ KEEL_AGENT_NATS_CREDENTIALS: '{nope' })).toThrow(/KEEL_AGENT_NATS_CREDENTIALS/);
  });

  it('default: one process per agent replica, each with its own bus user and secrets', () => {
    const specs = agentProcessSpecs(groupAgentProcesses([...SIX.slice(0, 5), agent('escalation', 2)], undefined), { common: { KEEL_STATE: 's' }, credentials: creds, secrets: (n): Record<string, string> => (n === 'sender' ? { KEEL_SECRET_SMTP: 'x' } : {}) });
    expect(specs).toHaveLength(7);
    expect(specs.filter((s) => s.name === 'escalation').map((s) => s.replica)).toEqual([1, 2]);
    const sender = specs.find((s) => s.name === 'sender')!;
    expect(sender).toMatchObject({ spec: 'file:///app/agents/sender.ts', env: { KEEL_STATE: 's', KEEL_AGENT_NATS_USER: 'agent-sender', KEEL_AGENT_NATS_PASSWORD: 'pw-sender', KEEL_SECRET_SMTP: 'x' } });
    expect(sender.host).toBeUndefined();
    expect(specs.find((s) => s.name === 'triage')!.env).not.toHaveProperty('KEEL_SECRET_SMTP');
  });

  it('`all`: one host process with every agent, each agent\'s credentials, the union of their secrets', () => {
    const [host, ...rest] = agentProcessSpecs(groupAgentProcesses(SIX, 'all'), { common: {}, credentials: creds, secrets: (n): Record<string, string> => (n === 'sender' ? { KEEL_SECRET_SMTP: 'x' } : {}) });
    expect(rest).toEqual([]);
    expect(host).toMatchObject({ name: 'all', host: 'all', replica: 1, agents: SIX.map((a) => a.name) });
    expect(host!.spec.split(',')).toEqual(SIX.map((a) => a.spec));
    expect(JSON.parse(host!.env.KEEL_AGENT_NATS_CREDENTIALS!)).toEqual(Object.fromEntries(SIX.map((a) => [a.name, creds(a.name)])));
    expect(host!.env).not.toHaveProperty('KEEL_AGENT_NATS_USER');
    expect(host!.env.KEEL_SECRET_SMTP).toBe('x');
  });

  it('named groups: listed agents share a process (by name or KEEL_AGENTS entry), the rest run alone; replicas make more hosts', () => {
    const agents = [agent('intake'), agent('triage', 2), agent('summarizer'), agent('sender')];
    const specs = agentProcessSpecs(groupAgentProcesses(agents, [{ name: 'front', agents: ['intake', 'triage', 'file:///app/agents/summarizer.ts'] }]), { common: {} });
    expect(specs.map((s) => [s.name, s.replica, s.agents ?? [s.name]])).toEqual([
      ['front', 1, ['intake', 'triage', 'summarizer']],
      ['front', 2, ['triage']],
      ['sender', 1, ['sender']],
    ]);
    let err: unknown;
    try {
      groupAgentProcesses(agents, [{ name: 'x', agents: ['billing'] }]);
    } catch (e) {
      err = e;
    }
    expect(isKeelError(err) && err.code).toBe('ENGINE_BAD_AGENT_HOSTS');
    expect((err as Error).message).toMatch(/'billing'.*running: intake, triage, summarizer, sender/);
  });

  it('agent processes start with a small young generation unless NODE_OPTIONS sets one', () => {
    expect(AGENT_NODE_FLAGS).toEqual(['--max-semi-space-size=2']);
  });

  it('the registry folds into one row per OS process with its footprint', () => {
    const m = (agent: string, pid: number, heartbeatAt: string, rssBytes: number, host?: string, agents = [agent]): Manifest => ({
      agent, instanceId: `1-${pid}`, version: '1', host: 'box', pid, startedAt: heartbeatAt, heartbeatAt, capabilities: [],
      process: { rssBytes, cpu: 0.001, cpuSeconds: 1, agents, restarts: 0, ...(host ? { host } : {}) },
    });
    const rows = agentProcesses([
      m('intake', 10, '2026-01-01T00:00:01Z', 90e6, 'all', ['intake', 'triage']),
      m('triage', 10, '2026-01-01T00:00:02Z', 91e6, 'all', ['intake', 'triage']),
      m('sender', 11, '2026-01-01T00:00:01Z', 80e6),
    ]);
    expect(rows).toHaveLength(2);
    expect(rows[0]).toMatchObject({ name: 'all', pid: 10, agents: ['intake', 'triage'], rssBytes: 91e6 });
    expect(rows[0]!.instances.sort()).toEqual(['intake.1-10', 'triage.1-10']);
    expect(rows[1]).toMatchObject({ name: 'sender', pid: 11, rssBytes: 80e6 });
  });
});
