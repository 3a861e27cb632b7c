import { afterAll, beforeAll } from 'vitest';
import { openStore, type StateStore } from '../../shared-state/index.ts';
import { startMongo, uniqueName, type MongoHandle } from '../helpers/index.ts';
import { stateStoreContract } from './contract.ts';
import { ALL_ENTITY_TYPES } from '../helpers/types.ts';

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

const dbs = new WeakMap<object, string>();

stateStoreContract({
  name: 'mongodb',
  async open(opts) {
    if (!server) return { skip: reason };
    const database = uniqueName('keel');
    const s = await openStore(server.url, { types: ALL_ENTITY_TYPES, ...opts, mongodb: { database } });
    dbs.set(s, database);
    return s;
  },
  async tamperAudit(store: StateStore, seq, set) {
    const { MongoClient } = await import('mongodb');
    const c = new MongoClient(server!.url);
    try {
      await c.db(dbs.get(store)!).collection<{ _id: number }>('audit').updateOne({ _id: seq }, set ? { $set: { detailsJson: JSON.stringify(set.details), ...(set.erased ? { erased: set.erased } : {}) }, ...(set.erased === null ? { $unset: { erased: '' } } : {}) } : { $set: { action: 'email.not-sent' } });
    } finally {
      await c.close();
    }
  },
});
