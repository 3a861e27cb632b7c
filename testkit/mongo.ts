import { spawn } from 'node:child_process';
import { MongoClient } from 'mongodb';
import { findTool } from '../config/index.ts';
import { dockerAvailable, freePort, tempDir, waitFor, type Availability, type ServerHandle } from './common.ts';
import { TestkitError } from './errors.ts';

export interface MongoHandle extends ServerHandle {
  /** 'mongodb' for a real MongoDB, 'ferretdb' for the MongoDB-protocol server */
  flavor: 'mongodb' | 'ferretdb';
}

/**
 * A MongoDB wire-protocol server: `MONGODB_URL` first (a real MongoDB), then a MongoDB replica
 * set in a container when a Docker engine answers, then the provisioned FerretDB (SQLite
 * backend) on a free port with a temp store.
 */
export async function startMongo(): Promise<Availability<MongoHandle>> {
  if (process.env.MONGODB_URL) {
    return { ok: true, server: { url: process.env.MONGODB_URL, source: 'env', flavor: 'mongodb', stop: async () => undefined } };
  }
  if (await dockerAvailable()) {
    const { GenericContainer, Wait } = await import('testcontainers');
    const c = await new GenericContainer('mongo:8')
      .withCommand(['--replSet', 'rs0', '--bind_ip_all'])
      .withExposedPorts(27017)
      .withWaitStrategy(Wait.forLogMessage(/Waiting for connections/))
      .start();
    await c.exec(['mongosh', '--quiet', '--eval', "rs.initiate({_id:'rs0',members:[{_id:0,host:'localhost:27017'}]})"]);
    const url = `mongodb://${c.getHost()}:${c.getMappedPort(27017)}/?directConnection=true`;
    return { ok: true, server: { url, source: 'container', flavor: 'mongodb', stop: async () => void (await c.stop()) } };
  }
  const bin = findTool('ferretdb');
  if (!bin) return { ok: false, reason: 'no MongoDB-protocol server: set MONGODB_URL, start a Docker engine, or run `npm run provision` (builds FerretDB; needs Go)' };
  const dir = tempDir('keel-ferret-');
  const port = await freePort();
  const child = spawn(
    bin,
    [
      '--handler=sqlite',
      `--sqlite-url=file:${dir.path}/`,
      `--state-dir=${dir.path}`,
      `--listen-addr=127.0.0.1:${port}`,
      '--debug-addr=-',
      '--telemetry=disable',
      '--log-level=error',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const url = `mongodb://127.0.0.1:${port}/`;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 3_000);
      await exited;
      clearTimeout(t);
    }
    dir.remove();
  };
  try {
    await waitFor(
      async () => {
        if (child.exitCode !== null) throw new TestkitError('TESTKIT_SERVER_EXITED', `ferretdb exited: ${stderr}`);
        const client = new MongoClient(url, { serverSelectionTimeoutMS: 500 });
        try {
          await client.db('admin').command({ ping: 1 });
          return true;
        } finally {
          await client.close();
        }
      },
      { timeoutMs: 20_000, what: 'FerretDB to accept connections' },
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return { ok: true, server: { url, source: 'local', flavor: 'ferretdb', stop } };
}
