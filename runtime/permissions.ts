import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { subjects, durableFor, leaseDurable, WORKFLOW_TIMER_LEASE, type LocalNatsUser } from '../bus/index.ts';
import type { AgentDefinition } from './define.ts';
import { AgentError } from './errors.ts';

/**
 * nats-server permissions for one agent, generated from its manifest: it may pull and ack its
 * own capabilities' tasks, dead-letter them, enqueue tasks for the capabilities it declared,
 * publish/subscribe the extra subjects it declared, and write its own registry entries.
 * Everything else is refused by the server.
 */
export function natsPermissionsFor(agent: AgentDefinition, prefix = 'keel', workflowCapabilities: readonly string[] = []): Pick<LocalNatsUser, 'publish' | 'subscribe'> {
  const s = subjects(prefix);
  const T = s.streams.tasks;
  const pub = new Set<string>(['$JS.API.INFO', `$JS.API.STREAM.INFO.KV_${s.registryBucket}`, `$KV.${s.registryBucket}.${agent.name}.*`]);
  const sub = new Set<string>(['_INBOX.>']);
  // the runtime (not the handler) dispatches workflow steps: any agent may complete a step or
  // fire a timer, so each may publish the tasks of the declared workflows' capabilities
  for (const c of workflowCapabilities) pub.add(s.task(c));
  pub.add(s.runFinishedAll);
  // the workflow timer lease: wait for its token, renew it (+WPI) or hand it back (-NAK), check it
  const leaseConsumer = `${s.streams.leases}.${leaseDurable(WORKFLOW_TIMER_LEASE)}`;
  for (const api of ['CONSUMER.INFO', 'CONSUMER.MSG.NEXT']) pub.add(`$JS.API.${api}.${leaseConsumer}`);
  pub.add(`$JS.ACK.${leaseConsumer}.>`);
  for (const c of agent.capabilities) {
    const d = durableFor(c.name);
    for (const api of ['CONSUMER.INFO', 'CONSUMER.DURABLE.CREATE', 'CONSUMER.MSG.NEXT']) pub.add(`$JS.API.${api}.${T}.${d}`);
    pub.add(`$JS.API.CONSUMER.CREATE.${T}.${d}`);
    pub.add(`$JS.API.CONSUMER.CREATE.${T}.${d}.>`);
    pub.add(`$JS.ACK.${T}.${d}.>`);
    pub.add(s.dlq(c.name));
    for (const e of c.permissions?.enqueue ?? []) pub.add(s.task(e));
    for (const p of c.permissions?.publish ?? []) pub.add(`${prefix}.${p}`);
    for (const p of c.permissions?.subscribe ?? []) sub.add(`${prefix}.${p}`);
  }
  return { publish: { allow: [...pub].sort() }, subscribe: { allow: [...sub].sort() } };
}

export interface Credentials {
  user: string;
  password: string;
}

export interface CredentialsFile {
  admin: Credentials;
  agents: Record<string, Credentials>;
}

const newPassword = () => randomBytes(18).toString('base64url');

/**
 * Credentials for the admin (the engine, the CLI) and these agents: those `previous` holds are
 * kept (regenerating a config after adding an agent changes no existing password), the missing
 * ones get a random 144-bit password.
 */
export function ensureCredentials(previous: CredentialsFile | undefined, agentNames: readonly string[]): { file: CredentialsFile; changed: boolean } {
  const file: CredentialsFile = previous ? { admin: previous.admin, agents: { ...previous.agents } } : { admin: { user: 'keel-admin', password: newPassword() }, agents: {} };
  let changed = !previous;
  for (const n of agentNames) {
    if (!file.agents[n]) {
      file.agents[n] = { user: `agent-${n}`, password: newPassword() };
      changed = true;
    }
  }
  return { file, changed };
}

/**
 * The local bus's users: one admin (the engine, the CLI) and one per agent. Kept in a 0600
 * file under the data dir so restarts keep the same credentials.
 */
export function loadOrCreateCredentials(path: string, agentNames: readonly string[]): CredentialsFile {
  const { file, changed } = ensureCredentials(readCredentials(path), agentNames);
  if (changed) {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, JSON.stringify(file, null, 2), { mode: 0o600 });
  }
  return file;
}

export function readCredentials(path: string): CredentialsFile | undefined {
  return existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as CredentialsFile) : undefined;
}

/** The users to configure on the local nats-server for these agents. */
export function natsUsers(creds: CredentialsFile, agents: readonly AgentDefinition[], prefix: string, workflowCapabilities: readonly string[] = []): LocalNatsUser[] {
  return [
    { user: creds.admin.user, password: creds.admin.password },
    ...agents.map((a) => {
      const c = creds.agents[a.name];
      if (!c) throw new AgentError('AGENT_NO_CREDENTIALS', `no credentials for agent '${a.name}'`);
      return { user: c.user, password: c.password, ...natsPermissionsFor(a, prefix, workflowCapabilities) };
    }),
  ];
}

/** `reply-suggester` → `REPLY_SUGGESTER`: the suffix of an agent's `KEEL_NATS_USER_<AGENT>` / `KEEL_NATS_PASSWORD_<AGENT>`. */
export function agentEnvSuffix(agent: string): string {
  return agent.toUpperCase().replace(/[^A-Z0-9]+/g, '_');
}

/** An agent's bus credentials from `KEEL_NATS_USER_<AGENT>` / `KEEL_NATS_PASSWORD_<AGENT>` (the env file `keel deploy nats-config` writes). */
export function credentialsFromEnv(agent: string, env: Readonly<Record<string, string | undefined>> = process.env): Credentials | undefined {
  const s = agentEnvSuffix(agent);
  const user = env[`KEEL_NATS_USER_${s}`];
  const password = env[`KEEL_NATS_PASSWORD_${s}`];
  return user && password ? { user, password } : undefined;
}
