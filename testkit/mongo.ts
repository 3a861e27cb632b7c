import { spawn, type ChildProcess } from 'node:child_process';
import { MongoClient } from 'mongodb';
import { findTool } from '../config/index.ts';
import { dockerAvailable, freePort, tempDir, waitFor, type Availability, type ServerHandle } from './common.ts';
import { TestkitError } from './errors.ts';

export interface MongoHandle extends ServerHandle {
  /** 'mongodb' for a real MongoDB, 'ferretdb' for the MongoDB-protocol server */
  flavor: 'mongodb' | 'ferretdb';
  /**
   * Local FerretDB only: stops the server (SIGTERM) and keeps its port and data, for outage
   * tests; `resume` starts it again on the same port over the same data and waits until it answers.
   */
  pause?(): Promise<void>;
  resume?(): Promise<void>;
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
  const url = `mongodb://127.0.0.1:${port}/`;
  let child: ChildProcess | undefined;
  let stderr = '';
  const spawnFerret = () => {
    stderr = '';
    child = spawn(
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
    child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  };
  const ready = () =>
    waitFor(
      async () => {
        if (child!.exitCode !== null) throw new TestkitError('TESTKIT_SERVER_EXITED', `ferretdb exited: ${stderr}`);
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
  const halt = async () => {
    const c = child;
    if (c && c.exitCode === null && c.signalCode === null) {
      const exited = new Promise((r) => c.once('exit', r));
      c.kill('SIGTERM');
      const t = setTimeout(() => c.kill('SIGKILL'), 3_000);
      await exited;
      clearTimeout(t);
    }
  };
  const stop = async () => {
    await halt();
    dir.remove();
  };
  spawnFerret();
  try {
    await ready();
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    ok: true,
    server: {
      url,
      source: 'local',
      flavor: 'ferretdb',
      stop,
      // an outage: the process goes away, its port and its data stay for resume()
      pause: halt,
      resume: async () => {
        if (child && child.exitCode === null && child.signalCode === null) return;
        spawnFerret();
        await ready();
      },
    },
  };
}
