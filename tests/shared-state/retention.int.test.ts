import { openStore } from '../../shared-state/index.ts';
import { mongoSuite, uniqueName } from '../helpers/index.ts';
import { retentionContract } from './retention-contract.ts';

// FerretDB (MongoDB wire protocol over SQLite) here; a real MongoDB wherever MONGODB_URL is set.
const mongo = mongoSuite();

retentionContract({
  name: 'mongodb',
  open: async (opts) => (mongo.server ? openStore(mongo.server.url, { ...opts, mongodb: { database: uniqueName('keel') } }) : { skip: mongo.skip }),
});
