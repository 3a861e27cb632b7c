import { join } from 'node:path';
import { createCheckpointer, type KeelCheckpointSaver } from '../../../runtime/langgraph/index.ts';
import { tempDir } from '../../../testkit/common.ts';
import type { CheckpointSaverTestInitializer } from '@langchain/langgraph-checkpoint-validation';
import { installVitestGlobals } from './validation-globals.ts';

// The official LangGraph checkpointer conformance suite against the SQLite backend, on a real
// file. Each checkpointer the suite creates gets its own file, so instances never share rows.
installVitestGlobals();
const { validate, deltaChannelHistoryTests } = await import('@langchain/langgraph-checkpoint-validation');

const dir = tempDir('keel-lg-sqlite-');
let n = 0;

const initializer: CheckpointSaverTestInitializer<KeelCheckpointSaver> = {
  checkpointerName: 'keel-sqlite',
  async createCheckpointer() {
    return createCheckpointer(`sqlite:${join(dir.path, `cp-${++n}.db`)}`);
  },
  async destroyCheckpointer(saver) {
    await saver.close();
  },
  afterAll() {
    dir.remove();
  },
};
validate(initializer);
// opt-in part of the suite (not run by validate); LangGraph's own savers run it too
deltaChannelHistoryTests(initializer);
