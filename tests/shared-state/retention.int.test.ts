import { afterAll, beforeAll } from 'vitest';
import { openStore } from '../../shared-state/index.ts';
import { startMongo, uniqueName, type MongoHandle } from '../helpers/index.ts';
import { retentionContract } from './retention-contract.ts';

// FerretDB (MongoDB wire protocol over SQLite) here; a real MongoDB wherever MONGODB_URL is set.
let server: MongoHandle | undefined;
let reason = '';
beforeAll(async () => {
  const m = await startMongo();
  if (m.ok) server = m.server;
  else reason = m.reason;
});
afterAll(async () => {
  await server?.stop();
});

retentionContract({
  name: 'mongodb',
  open: async (opts) => (server ? openStore(server.url, { ...opts, mongodb: { database: uniqueName('keel') } }) : { skip: reason }),
});
