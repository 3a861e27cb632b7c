/**
 * `keel deploy nats-config` against a real nats-server started with the generated file
 * (`nats-server -c FILE`): an agent user may publish inside its manifest and is refused outside it
 * by the server; a wrong password is refused; with `--tls-*` (a self-signed certificate made with
 * openssl) a client with the CA connects over TLS and one without it does not.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { findTool, inheritedEnv, REPO_ROOT } from '../../config/index.ts';
import { connectBus, isBusError, subjects, type NatsConnection } from '../../bus/index.ts';
import { natsPermissionsFor } from '../../runtime/index.ts';
import { loadFeatures, resolveAgent, workflowsOf } from '../../agents/index.ts';
import { workflowCapabilities } from '../../workflows/index.ts';
import { freePort, reportSkip, tempDir, waitFor } from '../../testkit/index.ts';
import { startEngineProcess, type EngineProcess } from '../helpers/engine.ts';

const NODE = join(REPO_ROOT, 'node_modules/.bin/node');
const bin = findTool('nats-server');
const OPENSSL = '/usr/bin/openssl';
const dir = tempDir('keel-natscfg-');
const children: ChildProcess[] = [];
const conns: NatsConnection[] = [];
const engines: EngineProcess[] = [];

afterAll(async () => {
  for (const e of engines) {
    await e.stop('SIGTERM').catch(() => undefined);
    e.cleanup();
  }
  for (const nc of conns) await nc.close().catch(() => undefined);
  for (const c of children) {
    if (c.exitCode !== null || c.signalCode !== null) continue;
    const exited = new Promise((r) => c.once('exit', r));
    c.kill('SIGTERM');
    await exited;
  }
  dir.remove();
});

/** Runs `keel deploy nats-config ... --json` with a data dir of its own. */
function generate(name: string, port: number, extra: string[] = []): { out: Record<string, unknown>; conf: string; env: Map<string, string> } {
  const conf = join(dir.path, `${name}.conf`);
  const creds = join(dir.path, `${name}.env`);
  const r = spawnSync(NODE, ['cli/keel.ts', 'deploy', 'nats-config', '--out', conf, '--creds-out', creds, '--listen', `127.0.0.1:${port}`, '--store-dir', join(dir.path, `${name}-js`), '--json', ...extra], {
    cwd: REPO_ROOT,
    encoding: 'utf8',
    env: { ...process.env, KEEL_DATA_DIR: join(dir.path, 'data'), KEEL_NATS_TLS_CA: '' },
  });
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  const env = new Map<string, string>();
  for (const line of readFileSync(creds, 'utf8').split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line);
    if (m) env.set(m[1]!, m[2]!);
  }
  return { out: JSON.parse(r.stdout) as Record<string, unknown>, conf, env };
}

/** `nats-server -c FILE`, resolved once it says it is ready. */
async function serve(conf: string): Promise<void> {
  const child = spawn(bin!, ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(child);
  let log = '';
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  await waitFor(() => {
    if (child.exitCode !== null) throw new Error(`nats-server exited ${child.exitCode}: ${log}`);
    return log.includes('Server is ready');
  }, { timeoutMs: 15_000, what: 'nats-server -c to be ready' });
}

/** The server's asynchronous permission errors on a connection. */
function permissionErrors(nc: NatsConnection): string[] {
  const seen: string[] = [];
  void (async () => {
    for await (const s of nc.status()) if (s.type === 'error') seen.push(`${(s.error as Error).name}: ${(s.error as Error).message}`);
  })().catch(() => undefined);
  return seen;
}

const connect = async (url: string, user: string | undefined, pass: string | undefined, tlsCaFile = '') => {
  const nc = await connectBus({ servers: url, user, pass, tlsCaFile, connectTimeoutMs: 3_000, maxReconnectAttempts: 0 });
  conns.push(nc);
  return nc;
};

const refusal = async (p: Promise<unknown>): Promise<Error> => {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('the connection was accepted');
};

describe.skipIf(!bin)('keel deploy nats-config with a real nats-server', () => {
  if (!bin) reportSkip('deploy nats-config', 'no nats-server binary: run `npm run provision`');
  const prefix = 'keel';
  const s = subjects(prefix);

  it('gives each agent the permissions of its manifest; the server enforces them', async () => {
    const port = await freePort();
    const { out, conf, env } = generate('plain', port);
    expect(statSync(conf).mode & 0o777).toBe(0o600);
    // passwords: bcrypt hashes made with the nats CLI when it is there (provisioned with nats-server), else plaintext
    const text = readFileSync(conf, 'utf8');
    if (findTool('nats')) {
      expect(out.passwords).toBe('bcrypt');
      expect(text).not.toContain(env.get('KEEL_NATS_PASSWORD_TRIAGE')!);
      expect(text.match(/password: "\$2a\$11\$/g)?.length).toBe((out.users as unknown[]).length);
    } else {
      expect(out.passwords).toBe('plaintext');
      expect(text).toContain(env.get('KEEL_NATS_PASSWORD_TRIAGE')!);
    }
    expect(statSync(String(out.credentials)).mode & 0o777).toBe(0o600);

    // the same permissions as the embedded bus: natsPermissionsFor over the manifest and the workflows
    const features = await loadFeatures();
    const triage = (await resolveAgent('triage', features)).def;
    const expected = natsPermissionsFor(triage, prefix, workflowCapabilities(await workflowsOf(features)));
    const allowed = expected.publish?.allow ?? [];
    expect(allowed.length).toBeGreaterThan(5);
    const users = out.users as Array<{ user: string; agent: string | null; publish: number | null }>;
    expect(users[0]).toMatchObject({ user: env.get('KEEL_NATS_USER'), agent: null, publish: null });
    expect(users.find((u) => u.agent === 'triage')?.publish).toBe(allowed.length);
    expect(readFileSync(conf, 'utf8')).toContain(JSON.stringify(allowed));

    await serve(conf);
    const url = `nats://127.0.0.1:${port}`;
    const admin = await connect(url, env.get('KEEL_NATS_USER'), env.get('KEEL_NATS_PASSWORD'));
    const got: string[] = [];
    const sub = admin.subscribe(`$KV.${s.registryBucket}.>`, { callback: (_e, m) => void got.push(m.subject) });
    await admin.flush();

    const agent = await connect(url, env.get('KEEL_NATS_USER_TRIAGE'), env.get('KEEL_NATS_PASSWORD_TRIAGE'));
    const errors = permissionErrors(agent);
    const own = `$KV.${s.registryBucket}.triage.i1`; // its own registry entry: allowed
    const other = `$KV.${s.registryBucket}.sender.i1`; // another agent's: not in its manifest
    expect(allowed).toContain(`$KV.${s.registryBucket}.triage.*`);
    expect(allowed).not.toContain(other);
    agent.publish(other, 'impersonation');
    agent.publish(own, 'announce');
    await agent.flush();
    await waitFor(() => got.includes(own) && errors.length > 0, { timeoutMs: 5_000, what: 'the allowed message and the refusal' });
    expect(got).toEqual([own]);
    expect(errors.join('\n')).toMatch(/Permissions Violation for Publish to "?\$KV\.KEEL_agents\.sender\.i1/);
    sub.unsubscribe();

    // a wrong password, and no credentials at all, are refused
    const wrong = await refusal(connect(url, env.get('KEEL_NATS_USER_TRIAGE'), 'not-the-password'));
    expect(isBusError(wrong, 'BUS_AUTH_REFUSED')).toBe(true);
    const anonymous = await refusal(connect(url, undefined, undefined));
    expect(isBusError(anonymous, 'BUS_AUTH_REFUSED')).toBe(true);

    // regenerating keeps every password (the running services keep working), and a file someone
    // widened to 0644 is 0600 again (written to a new 0600 file renamed over it)
    chmodSync(conf, 0o644);
    chmodSync(String(out.credentials), 0o644);
    const again = generate('plain', port);
    expect(statSync(conf).mode & 0o777).toBe(0o600);
    expect(statSync(String(out.credentials)).mode & 0o777).toBe(0o600);
    expect(again.env.get('KEEL_NATS_PASSWORD_TRIAGE')).toBe(env.get('KEEL_NATS_PASSWORD_TRIAGE'));
    expect(again.env.get('KEEL_NATS_PASSWORD')).toBe(env.get('KEEL_NATS_PASSWORD'));
  });

  it('--sync sets the JetStream fsync policy (default KEEL_NATS_SYNC=always); a bad value is refused', async () => {
    const port = await freePort();
    const { out, conf } = generate('sync', port, ['--sync', '1s', '--passwords', 'plaintext']);
    expect(out.sync).toBe('1s');
    expect(readFileSync(conf, 'utf8')).toMatch(/^ {2}sync_interval: "1s"$/m);
    const t = spawnSync(bin!, ['-c', conf, '-t'], { encoding: 'utf8' });
    expect(`${t.stdout}${t.stderr}`).toMatch(/is valid/);
    const bad = spawnSync(NODE, ['cli/keel.ts', 'deploy', 'nats-config', '--out', join(dir.path, 'bad.conf'), '--creds-out', join(dir.path, 'bad.env'), '--sync', 'sometimes', '--json'], { cwd: REPO_ROOT, encoding: 'utf8', env: { ...process.env, KEEL_DATA_DIR: join(dir.path, 'data') } });
    expect(bad.status).not.toBe(0);
    expect(JSON.parse(bad.stdout)).toMatchObject({ error: 'CLI_BAD_ARGUMENT' });
    expect(existsSync(join(dir.path, 'bad.conf'))).toBe(false);
  });

  it.skipIf(!existsSync(OPENSSL))('with --tls-*: a client with the CA connects over TLS, one without it is refused', async () => {
    const cert = join(dir.path, 'server.pem');
    const key = join(dir.path, 'server-key.pem');
    const ssl = spawnSync(OPENSSL, ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], { encoding: 'utf8' });
    expect(ssl.status, ssl.stderr).toBe(0);
    const port = await freePort();
    const { out, conf, env } = generate('tls', port, ['--tls-cert', cert, '--tls-key', key, '--tls-ca', cert, '--passwords', 'plaintext']);
    expect(out.passwords).toBe('plaintext');
    expect(readFileSync(conf, 'utf8')).toContain(`password: "${env.get('KEEL_NATS_PASSWORD_TRIAGE')}"`);
    expect(out.tls).toBe(true);
    expect(readFileSync(conf, 'utf8')).toMatch(/tls \{\n {2}cert_file: .*server\.pem"\n {2}key_file: .*server-key\.pem"\n {2}ca_file:/);
    await serve(conf);

    const user = env.get('KEEL_NATS_USER_TRIAGE');
    const pass = env.get('KEEL_NATS_PASSWORD_TRIAGE');
    const nc = await connect(`tls://127.0.0.1:${port}`, user, pass, cert);
    expect(nc.info?.tls_required).toBe(true);
    expect(await nc.rtt()).toBeGreaterThanOrEqual(0);

    const noCa = await refusal(connect(`nats://127.0.0.1:${port}`, user, pass));
    expect(isBusError(noCa, 'BUS_UNAVAILABLE')).toBe(true);
    expect(noCa.message).toMatch(/certificate/i);

    // KEEL_NATS_TLS_CA is the default of every connection (engine, CLI, agents)
    const before = process.env.KEEL_NATS_TLS_CA;
    process.env.KEEL_NATS_TLS_CA = cert;
    try {
      const viaEnv = await connectBus({ servers: `nats://127.0.0.1:${port}`, user, pass, connectTimeoutMs: 3_000, maxReconnectAttempts: 0 });
      conns.push(viaEnv);
      expect(viaEnv.info?.tls_required).toBe(true);
    } finally {
      if (before === undefined) delete process.env.KEEL_NATS_TLS_CA;
      else process.env.KEEL_NATS_TLS_CA = before;
    }
  });

  it('keel start with KEEL_NATS_URL hands each supervised agent its own user from the generated env file', async () => {
    const port = await freePort();
    const { conf, env } = generate('engine', port);
    await serve(conf);
    const url = `nats://127.0.0.1:${port}`;
    const admin = await connect(url, env.get('KEEL_NATS_USER'), env.get('KEEL_NATS_PASSWORD'));
    const seen: string[] = [];
    const sub = admin.subscribe(`$KV.${s.registryBucket}.triage.>`, { callback: (_e, m) => void seen.push(m.subject) });
    await admin.flush();
    const engine = await startEngineProcess({ ...Object.fromEntries(env), KEEL_NATS_URL: url, KEEL_AGENTS: 'triage', KEEL_AGENT_SANDBOX: '0' });
    engines.push(engine);
    // the triage process announces itself: only its own user may write its registry entry
    await waitFor(() => seen.length > 0, { timeoutMs: 30_000, what: 'the triage agent to announce itself with its own user' });
    expect(engine.output()).not.toMatch(/Permissions Violation|Authorization Violation/);
    expect(engine.output()).not.toMatch(/exited; restarting/);
    sub.unsubscribe();
    // no agent process inherits the admin's or another agent's bus credentials
    expect(inheritedEnv({ ...Object.fromEntries(env), KEEL_LOG_LEVEL: 'info' })).toEqual({ KEEL_LOG_LEVEL: 'info' });
  });
});
