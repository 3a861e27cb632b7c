import { openStore, type StateStore } from '../../shared-state/index.ts';
import { mongoSuite, uniqueName } from '../helpers/index.ts';
import { stateStoreContract } from './contract.ts';
import { ALL_ENTITY_TYPES } from '../helpers/types.ts';

// FerretDB (MongoDB wire protocol over SQLite) here; a real MongoDB wherever MONGODB_URL is set.
const mongo = mongoSuite();

const dbs = new WeakMap<object, string>();

stateStoreContract({
  name: 'mongodb',
  async open(opts) {
    if (!mongo.server) return { skip: mongo.skip };
    const database = uniqueName('keel');
    const s = await openStore(mongo.server.url, { types: ALL_ENTITY_TYPES, ...opts, mongodb: { database } });
    dbs.set(s, database);
    return s;
  },
  async tamperAudit(store: StateStore, seq, set) {
    const { MongoClient } = await import('mongodb');
    const c = new MongoClient(mongo.server!.url);
    try {
      await c.db(dbs.get(store)!).collection<{ _id: number }>('audit').updateOne({ _id: seq }, set ? { $set: { detailsJson: JSON.stringify(set.details), ...(set.erased ? { erased: set.erased } : {}) }, ...(set.erased === null ? { $unset: { erased: '' } } : {}) } : { $set: { action: 'email.not-sent' } });
    } finally {
      await c.close();
    }
  },
});
