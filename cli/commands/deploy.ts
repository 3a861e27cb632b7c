/**
 * `keel deploy …`: the production configuration that gives every agent its own credentials.
 *
 * - `nats-config` renders the nats-server configuration with one user per agent, whose
 *   publish/subscribe permissions come from its manifest and the declared workflows exactly as
 *   on the embedded bus (runtime's `natsUsers` → bus's `renderNatsConfig`), plus the admin user of
 *   the engine and the CLI; and an env file (0600) with each agent's password for docker compose.
 * - `mongo-users` prints a mongosh script that creates one role and one user per agent on MongoDB.
 *
 * See docs/deploy-security.md.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { existsSync, mkdirSync, readFileSync, writeFileSync, chmodSync, renameSync, rmSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { Command } from 'commander';
import { findTool, loadConfig, type KeelConfig } from '../../config/index.ts';
import { renderNatsConfig, type LocalNatsUser, type NatsTlsConfig } from '../../bus/index.ts';
import { agentEnvSuffix, ensureCredentials, natsUsers, type AgentDefinition, type CredentialsFile } from '../../runtime/index.ts';
import { agentCatalog, loadFeatures, resolveAgent, workflowsOf } from '../../agents/index.ts';
import { workflowCapabilities } from '../../workflows/index.ts';
import { print, table } from '../context.ts';
import { CliError } from '../errors.ts';
import { enumOption } from '../args.ts';

/** `KEEL_NATS_PASSWORD_<SUFFIX>`: the agent's name in upper case, other characters as `_`. */
export const envSuffix = agentEnvSuffix;

/** The agents named by `--agents` (names or module paths), else every agent the features ship. */
async function agentsFor(cfg: KeelConfig, list: string | undefined): Promise<{ defs: AgentDefinition[]; wfCaps: string[] }> {
  const features = await loadFeatures(cfg.featureModules);
  const specs = list ? list.split(',').map((s) => s.trim()).filter(Boolean) : Object.keys(agentCatalog(features));
  const defs: AgentDefinition[] = [];
  for (const s of specs) {
    try {
      defs.push((await resolveAgent(s, features)).def);
    } catch (err) {
      throw new CliError('CLI_BAD_ARGUMENT', `--agents: ${(err as Error).message}`, { cause: err, details: { agent: s } });
    }
  }
  const seen = new Map<string, string>();
  for (const d of defs) {
    const other = seen.get(envSuffix(d.name));
    if (other && other !== d.name) throw new CliError('CLI_BAD_ARGUMENT', `agents '${other}' and '${d.name}' map to the same variable suffix ${envSuffix(d.name)}: rename one`);
    seen.set(envSuffix(d.name), d.name);
  }
  return { defs, wfCaps: workflowCapabilities(await workflowsOf(features, cfg.workflowModules)) };
}

/** KEY=VALUE lines of an env file (comments and blank lines skipped). */
function readEnvFile(path: string): Map<string, string> {
  const out = new Map<string, string>();
  if (!existsSync(path)) return out;
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const m = /^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$/.exec(line);
    if (m) out.set(m[1]!, m[2]!.replace(/^(['"])(.*)\1$/, '$2'));
  }
  return out;
}

/** The credentials an earlier run wrote to the env file, so regenerating keeps every password. */
function credentialsFromEnv(env: Map<string, string>, agents: readonly string[]): CredentialsFile | undefined {
  const user = env.get('KEEL_NATS_USER');
  const password = env.get('KEEL_NATS_PASSWORD');
  if (!user || !password) return undefined;
  const file: CredentialsFile = { admin: { user, password }, agents: {} };
  for (const a of agents) {
    const u = env.get(`KEEL_NATS_USER_${envSuffix(a)}`);
    const p = env.get(`KEEL_NATS_PASSWORD_${envSuffix(a)}`);
    if (u && p) file.agents[a] = { user: u, password: p };
  }
  return file;
}

/** The env file docker compose interpolates: the admin's credentials, then each agent's under its suffix. */
function credentialsEnv(creds: CredentialsFile, agents: readonly string[], kept: Map<string, string>): string {
  const ours = new Map<string, string>([
    ['KEEL_NATS_USER', creds.admin.user],
    ['KEEL_NATS_PASSWORD', creds.admin.password],
    // the operator's token for the engine's HTTP API in compose (kept across regenerations)
    ['KEEL_OPERATOR_TOKEN', kept.get('KEEL_OPERATOR_TOKEN') || `keel-${randomBytes(32).toString('base64url')}`],
  ]);
  for (const a of agents) {
    const c = creds.agents[a]!;
    ours.set(`KEEL_NATS_USER_${envSuffix(a)}`, c.user);
    ours.set(`KEEL_NATS_PASSWORD_${envSuffix(a)}`, c.password);
  }
  const lines = [
    '# Keel bus credentials, written by `keel deploy nats-config`. Secret: keep it 0600, never commit it.',
    '# docker compose reads it: docker compose --env-file deploy/secrets/keel.env up -d',
    '# KEEL_NATS_USER / KEEL_NATS_PASSWORD: the admin (engine, CLI); _<AGENT>: that agent only (its container gets',
    '# them as KEEL_AGENT_NATS_USER / KEEL_AGENT_NATS_PASSWORD). KEEL_OPERATOR_TOKEN: the HTTP API token of the keel service.',
    ...[...ours].map(([k, v]) => `${k}=${v}`),
  ];
  // other variables an operator keeps in the same file survive a regeneration
  const others = [...kept].filter(([k]) => !ours.has(k) && !/^KEEL_NATS_(USER|PASSWORD)_/.test(k));
  if (others.length) lines.push('# kept from the previous file', ...others.map(([k, v]) => `${k}=${v}`));
  return lines.join('\n') + '\n';
}

/**
 * Writes a secret file 0600, also over one that existed with a wider mode: the text goes to a new
 * 0600 file that is renamed over the old one, so it is never readable by others, not even briefly.
 */
function writeSecret(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  rmSync(tmp, { force: true });
  writeFileSync(tmp, text, { mode: 0o600, flag: 'wx' });
  chmodSync(tmp, 0o600); // a umask cannot widen it, but be explicit
  renameSync(tmp, path);
}

const run = promisify(execFile);

/**
 * bcrypt hashes of the users' passwords for the server config (nats-server accepts `$2a$…`), made
 * by the nats CLI (`nats server passwd`, provisioned with nats-server): Keel has no bcrypt library.
 * The password goes through the environment, never argv.
 */
async function bcryptUsers(natsCli: string, users: LocalNatsUser[]): Promise<LocalNatsUser[]> {
  return Promise.all(
    users.map(async (u) => {
      const { stdout } = await run(natsCli, ['server', 'passwd', '--cost', '11'], { env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', PASSWORD: u.password }, timeout: 30_000 });
      const hash = stdout.trim();
      if (!/^\$2a\$\d\d\$[./A-Za-z0-9]{53}$/.test(hash)) throw new CliError('CLI_BAD_ARGUMENT', `\`${natsCli} server passwd\` did not print a bcrypt hash (got ${JSON.stringify(hash.slice(0, 40))}); use --passwords plaintext`);
      return { ...u, password: hash };
    }),
  );
}

type PasswordMode = 'auto' | 'bcrypt' | 'plaintext';

interface NatsConfigOptions {
  out: string;
  credsOut: string;
  agents?: string;
  listen: string;
  storeDir: string;
  serverName?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  passwords: PasswordMode;
  sync?: string;
  json?: boolean;
}

async function natsConfig(o: NatsConfigOptions): Promise<void> {
  if (!!o.tlsCert !== !!o.tlsKey) throw new CliError('CLI_BAD_ARGUMENT', '--tls-cert and --tls-key go together (the server\'s certificate and its private key)', { details: { tlsCert: o.tlsCert ?? null, tlsKey: o.tlsKey ?? null } });
  if (o.tlsCa && !o.tlsCert) throw new CliError('CLI_BAD_ARGUMENT', '--tls-ca needs --tls-cert and --tls-key');
  if (!/^[^\s:]+:\d+$/.test(o.listen)) throw new CliError('CLI_BAD_ARGUMENT', `--listen takes host:port (e.g. 0.0.0.0:4222); got '${o.listen}'`);
  if (o.sync !== undefined && !/^(always|\d+(ms|s|m|h))$/.test(o.sync)) throw new CliError('CLI_BAD_ARGUMENT', `--sync takes \`always\` or an interval such as 1s or 2m; got '${o.sync}'`);
  const cfg = loadConfig();
  const sync = o.sync ?? cfg.natsSync;
  const { defs, wfCaps } = await agentsFor(cfg, o.agents);
  const names = defs.map((d) => d.name);
  const credsPath = resolve(o.credsOut);
  const outPath = resolve(o.out);
  const kept = readEnvFile(credsPath);
  const { file: creds } = ensureCredentials(credentialsFromEnv(kept, names), names);
  const users = natsUsers(creds, defs, cfg.subjectPrefix, wfCaps);
  const natsCli = o.passwords === 'plaintext' ? undefined : findTool('nats');
  if (o.passwords === 'bcrypt' && !natsCli) throw new CliError('CLI_BAD_ARGUMENT', '--passwords bcrypt needs the nats CLI to hash them: run `deploy/provision.sh nats` (or put `nats` on PATH), or use --passwords plaintext');
  const serverUsers = natsCli ? await bcryptUsers(natsCli, users) : users;
  const hashed = !!natsCli;
  const tls: NatsTlsConfig | undefined = o.tlsCert && o.tlsKey ? { certFile: o.tlsCert, keyFile: o.tlsKey, ...(o.tlsCa ? { caFile: o.tlsCa } : {}) } : undefined;
  // paths are written as the server will see them (in a container they need not exist here)
  const warnings = [o.tlsCert, o.tlsKey, o.tlsCa].filter((f): f is string => !!f && !existsSync(f)).map((f) => `${f} does not exist on this machine: the server must find it at that path`);
  const text = renderNatsConfig({
    comments: [
      `Keel's nats-server configuration, written by \`keel deploy nats-config\` for subject prefix '${cfg.subjectPrefix}'.`,
      'One user per agent, its permissions generated from its manifest and the declared workflows; the first user is',
      hashed
        ? 'the admin (engine, CLI). Passwords are bcrypt hashes (the plaintext is in the env file); keep this file 0600 anyway.'
        : 'the admin (engine, CLI). Passwords are in PLAINTEXT (no nats CLI to hash them with bcrypt): keep this file 0600.',
      'Regenerate after adding an agent or changing a manifest, then reload: nats-server --signal reload (or SIGHUP).',
      `JetStream sync_interval ${sync}${sync === 'always' ? ': every write is fsynced before it is acknowledged' : ': an OS crash or power loss can lose what was acknowledged since the last sync'} (KEEL_NATS_SYNC, docs/bus.md).`,
    ],
    ...(o.serverName ? { serverName: o.serverName } : {}),
    listen: o.listen,
    jetStreamDir: o.storeDir,
    maxMemoryStore: '1GB',
    syncInterval: sync,
    users: serverUsers,
    ...(tls ? { tls } : {}),
  });
  writeSecret(outPath, text);
  writeSecret(credsPath, credentialsEnv(creds, names, kept));
  const summary = users.map((u, i) => ({
    user: u.user,
    agent: i === 0 ? null : names[i - 1]!,
    publish: u.publish?.allow?.length ?? null,
    subscribe: u.subscribe?.allow?.length ?? null,
  }));
  print(o.json, { config: outPath, credentials: credsPath, prefix: cfg.subjectPrefix, passwords: hashed ? 'bcrypt' : 'plaintext', tls: !!tls, sync, users: summary, warnings }, () => {
    console.log(`wrote ${outPath} (0600): nats-server config, JetStream (sync_interval ${sync}), ${users.length} users${tls ? ', TLS' : ''}, passwords ${hashed ? 'as bcrypt hashes' : 'in PLAINTEXT'}`);
    console.log(`wrote ${credsPath} (0600): KEEL_NATS_USER/PASSWORD (admin) and KEEL_NATS_USER_<AGENT>/PASSWORD_<AGENT>\n`);
    table(
      ['USER', 'AGENT', 'PUBLISH', 'SUBSCRIBE'],
      summary.map((s) => [s.user, s.agent ?? '(admin: all subjects)', s.publish === null ? 'all' : `${s.publish} subjects`, s.subscribe === null ? 'all' : `${s.subscribe} subjects`]),
    );
    for (const w of warnings) console.log(`warning: ${w}`);
    console.log('\nNext: docker compose --env-file deploy/secrets/keel.env up -d   (see docs/deploy-security.md)');
  });
}

/** The collections Keel's MongoDB adapter (shared-state/mongo-store.ts) and LangGraph checkpointer (runtime/langgraph/mongo-backend.ts) use. */
export const MONGO_COLLECTIONS: readonly string[] = [
  'log',
  'log_hints',
  'commits',
  'entities',
  'idempotency',
  'idempotency_attempts',
  'idempotency_done',
  'approval_decisions',
  'costs',
  'approvals',
  'audit',
  'lg_checkpoints',
  'lg_blobs',
  'lg_writes',
];

/** What an agent does on those collections: read and write documents, create them and their indexes at start; nothing else. */
export const MONGO_AGENT_ACTIONS: readonly string[] = ['find', 'insert', 'update', 'remove', 'createCollection', 'createIndex', 'listIndexes'];

interface MongoPlan {
  database: string;
  collections: readonly string[];
  roles: Array<{ role: string; privileges: Array<{ resource: { db: string; collection: string }; actions: string[] }> }>;
  users: Array<{ user: string; password: string; roles: Array<{ role: string; db: string }>; agent: string | null }>;
}

function mongoPlan(database: string, agents: readonly string[]): MongoPlan {
  const pw = () => randomBytes(18).toString('base64url');
  const privileges = [
    ...MONGO_COLLECTIONS.map((collection) => ({ resource: { db: database, collection }, actions: [...MONGO_AGENT_ACTIONS] })),
    { resource: { db: database, collection: '' }, actions: ['listCollections'] },
  ];
  return {
    database,
    collections: MONGO_COLLECTIONS,
    roles: agents.map((a) => ({ role: `keel_agent_${a}`, privileges })),
    users: [
      { user: 'keel-engine', password: pw(), roles: [{ role: 'readWrite', db: database }], agent: null },
      ...agents.map((a) => ({ user: `agent-${a}`, password: pw(), roles: [{ role: `keel_agent_${a}`, db: database }], agent: a })),
    ],
  };
}

/** A mongosh script: idempotent (drops and re-creates each role and user). */
function mongoScript(p: MongoPlan): string {
  const j = (v: unknown) => JSON.stringify(v);
  const lines = [
    '// Keel: one MongoDB role and user per agent, written by `keel deploy mongo-users`. Run as an admin:',
    `//   mongosh "mongodb://ADMIN:PASSWORD@HOST:27017/admin" --file keel-users.js`,
    '// Each agent may find/insert/update/remove and create the collections and indexes of Keel\'s store in',
    `// database '${p.database}', and nothing else (no other database or collection, no drop, no user admin).`,
    '// The limit is per collection, not per entity type: every agent records its events, entities, idempotency',
    '// keys and costs in the same collections. Needs real MongoDB (FerretDB 1.24 has no createRole).',
    '// Then give each agent its own KEEL_STATE: mongodb://agent-NAME:PASSWORD@HOST:27017/' + p.database + '?authSource=' + p.database,
    `const kdb = db.getSiblingDB(${j(p.database)});`,
  ];
  for (const r of p.roles) {
    lines.push(`if (kdb.getRole(${j(r.role)})) kdb.dropRole(${j(r.role)});`, `kdb.createRole({ role: ${j(r.role)}, privileges: ${j(r.privileges)}, roles: [] });`);
  }
  for (const u of p.users) {
    lines.push(`if (kdb.getUser(${j(u.user)})) kdb.dropUser(${j(u.user)});`, `kdb.createUser({ user: ${j(u.user)}, pwd: ${j(u.password)}, roles: ${j(u.roles)} });`);
  }
  lines.push(`print(${j(`keel: ${p.roles.length} roles, ${p.users.length} users in ${p.database}`)});`);
  return lines.join('\n') + '\n';
}

async function mongoUsers(o: { out?: string; agents?: string; database?: string; json?: boolean }): Promise<void> {
  const cfg = loadConfig();
  const { defs } = await agentsFor(cfg, o.agents);
  const fromUrl = /^mongodb(?:\+srv)?:\/\/[^/]+\/([^?]+)/.exec(cfg.state)?.[1];
  const database = o.database ?? fromUrl ?? 'keel';
  const plan = mongoPlan(database, defs.map((d) => d.name));
  const script = mongoScript(plan);
  if (o.out) writeSecret(resolve(o.out), script);
  if (o.json) {
    print(true, { database, collections: plan.collections, actions: MONGO_AGENT_ACTIONS, roles: plan.roles.map((r) => r.role), users: plan.users.map(({ user, agent, roles }) => ({ user, agent, roles })), script: o.out ? resolve(o.out) : script }, () => undefined);
  } else if (o.out) {
    console.log(`wrote ${resolve(o.out)} (0600): ${plan.roles.length} roles, ${plan.users.length} users in database '${database}' (passwords inside). Run it with mongosh as an admin.`);
  } else {
    process.stdout.write(script);
  }
}

export function registerDeploy(program: Command): void {
  const deploy = program.command('deploy').description('Production configuration: per-agent credentials for NATS and MongoDB (see docs/deploy-security.md).');

  deploy
    .command('nats-config')
    .description(
      'Write a nats-server config (JetStream with the KEEL_NATS_SYNC fsync policy, one user per agent whose publish/subscribe permissions come from its manifest and the workflows, exactly as on the embedded bus, plus the admin user of the engine and CLI) and an env file with the passwords for docker compose. Both files are 0600; passwords already in the env file are kept.',
    )
    .option('--out <file>', 'the nats-server config', 'deploy/secrets/nats/nats-server.conf')
    .option('--creds-out <file>', 'the env file: KEEL_NATS_USER / KEEL_NATS_PASSWORD (admin), KEEL_NATS_USER_<AGENT> / KEEL_NATS_PASSWORD_<AGENT>', 'deploy/secrets/keel.env')
    .option('--agents <list>', 'comma-separated agent names or module paths (default: every agent of the features, KEEL_FEATURES included)')
    .option('--listen <host:port>', 'client listen address', '0.0.0.0:4222')
    .option('--store-dir <dir>', 'JetStream store directory as the server sees it', '/data')
    .option('--server-name <name>', 'server_name (compose passes --name per node instead)')
    .option('--tls-cert <file>', 'server certificate (PEM), as the server sees the path: adds a tls block (clients must then use TLS)')
    .option('--tls-key <file>', 'the certificate\'s private key (PEM)')
    .option('--tls-ca <file>', 'CA certificate (PEM) of the chain; clients verify with the same file (KEEL_NATS_TLS_CA)')
    .addOption(
      enumOption('--passwords <mode>', 'how the server config stores passwords: bcrypt (hashed with the nats CLI, `nats server passwd`), plaintext, or auto (bcrypt when the nats CLI is found)', ['auto', 'bcrypt', 'plaintext']).default('auto'),
    )
    .option('--sync <policy>', 'JetStream sync_interval: `always` (fsync before every acknowledgement) or an interval such as 1s (default KEEL_NATS_SYNC, always); see docs/bus.md')
    .option('--json', 'print JSON: { config, credentials, prefix, passwords, tls, sync, users: [{ user, agent, publish, subscribe }], warnings }')
    .action((o: NatsConfigOptions) => natsConfig(o));

  deploy
    .command('mongo-users')
    .description('Print (or write) a mongosh script creating one role and one user per agent, limited to the collections of Keel\'s store in its database, plus a readWrite user for the engine. Roles need real MongoDB (FerretDB 1.24 has no createRole).')
    .option('--out <file>', 'write the script here (0600: it holds the passwords) instead of printing it')
    .option('--agents <list>', 'comma-separated agent names or module paths (default: every agent of the features)')
    .option('--database <name>', 'the database (default: the one in KEEL_STATE, else keel)')
    .option('--json', 'print JSON: { database, collections, actions, roles, users: [{ user, agent, roles }], script }')
    .action((o: { out?: string; agents?: string; database?: string; json?: boolean }) => mongoUsers(o));
}
