import { afterAll, beforeAll } from 'vitest';
import { startNats, type NatsHandle } from '../../testkit/nats.ts';
import { tempDir } from '../../testkit/common.ts';
import { startMongo, type MongoHandle } from '../../testkit/mongo.ts';

export interface NatsSuite {
  /** the server, once beforeAll ran (undefined when none could be had: see `skip`) */
  nats: NatsHandle | undefined;
  /** why tests must skip when `nats` is undefined */
  skip: string;
  /** a temp dir for this file, removed after it */
  dir: string;
  /** cleanups run after the file's tests, last registered first */
  defer(fn: () => Promise<unknown> | unknown): void;
}

/** One nats-server (and temp dir) per test file, started before its tests and torn down after. */
export function natsSuite(name: string): NatsSuite {
  const dir = tempDir(`keel-${name}-`);
  const closers: Array<() => Promise<unknown> | unknown> = [];
  const suite: NatsSuite = { nats: undefined, skip: '', dir: dir.path, defer: (fn) => void closers.push(fn) };
  beforeAll(async () => {
    const n = await startNats();
    if (n.ok) suite.nats = n.server;
    else suite.skip = n.reason;
  });
  afterAll(async () => {
    for (const c of closers.reverse()) await Promise.resolve(c()).catch(() => undefined);
    await suite.nats?.stop();
    dir.remove();
  });
  return suite;
}

export interface MongoSuite {
  /** the MongoDB-protocol server (FerretDB here, a real MongoDB wherever MONGODB_URL is set), once beforeAll ran */
  server: MongoHandle | undefined;
  /** why tests must skip when `server` is undefined */
  skip: string;
}

/** One MongoDB-protocol server per test file, started before its tests and stopped after. */
export function mongoSuite(): MongoSuite {
  const suite: MongoSuite = { server: undefined, skip: '' };
  beforeAll(async () => {
    const m = await startMongo();
    if (m.ok) suite.server = m.server;
    else suite.skip = m.reason;
  });
  afterAll(async () => {
    await suite.server?.stop();
  });
  return suite;
}
