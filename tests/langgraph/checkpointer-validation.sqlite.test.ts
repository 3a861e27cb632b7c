import { join } from 'node:path';
import { createCheckpointer, type KeelCheckpointSaver } from '../../agents/langgraph/index.ts';
import { tempDir } from '../helpers/common.ts';
import { installVitestGlobals } from './validation-globals.ts';

// The official LangGraph checkpointer conformance suite against the SQLite backend, on a real
// file. Each checkpointer the suite creates gets its own file, so instances never share rows.
installVitestGlobals();
const { validate } = await import('@langchain/langgraph-checkpoint-validation');

const dir = tempDir('keel-lg-sqlite-');
let n = 0;

validate<KeelCheckpointSaver>({
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
});
