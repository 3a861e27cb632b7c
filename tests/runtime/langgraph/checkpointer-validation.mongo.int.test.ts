import { it } from 'vitest';
import { MongoClient } from 'mongodb';
import { createCheckpointer, type KeelCheckpointSaver } from '../../../runtime/langgraph/index.ts';
import { reportSkip, startMongo, uniqueName } from '../../helpers/index.ts';
import type { CheckpointSaverTestInitializer } from '@langchain/langgraph-checkpoint-validation';
import { installVitestGlobals } from './validation-globals.ts';

// The official LangGraph checkpointer conformance suite against the MongoDB backend: FerretDB
// (MongoDB wire protocol over SQLite) here, a real MongoDB wherever MONGODB_URL is set. Each
// checkpointer the suite creates gets its own database, dropped when the suite destroys it.
installVitestGlobals();
const { validate, deltaChannelHistoryTests } = await import('@langchain/langgraph-checkpoint-validation');

const mongo = await startMongo();

if (!mongo.ok) {
  reportSkip('LangGraph checkpointer validation on MongoDB', mongo.reason);
  it('validates the MongoDB checkpointer', (ctx) => ctx.skip(mongo.reason));
} else {
  const server = mongo.server;
  const client = new MongoClient(server.url);
  const databases = new WeakMap<KeelCheckpointSaver, string>();
  const initializer: CheckpointSaverTestInitializer<KeelCheckpointSaver> = {
    checkpointerName: `keel-mongodb (${server.flavor})`,
    async createCheckpointer() {
      const database = uniqueName('lg');
      const saver = await createCheckpointer(server.url, { mongodb: { client, database } });
      databases.set(saver, database);
      return saver;
    },
    async destroyCheckpointer(saver) {
      await saver.close();
      const database = databases.get(saver);
      if (database) await client.db(database).dropDatabase();
    },
    async afterAll() {
      await client.close();
      await server.stop();
    },
  };
  validate(initializer);
  // opt-in part of the suite (not run by validate); LangGraph's own savers run it too
  deltaChannelHistoryTests(initializer);
}
