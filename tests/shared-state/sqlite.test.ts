import { afterAll } from 'vitest';
import { DatabaseSync } from 'node:sqlite';
import { join } from 'node:path';
import { openStore } from '../../shared-state/index.ts';
import { tempDir, uniqueName } from '../helpers/index.ts';
import { stateStoreContract } from './contract.ts';
import { ALL_ENTITY_TYPES } from '../helpers/types.ts';

const dir = tempDir('keel-state-sqlite-');
afterAll(() => dir.remove());
const paths = new WeakMap<object, string>();

stateStoreContract({
  name: 'sqlite',
  async open(opts) {
    const path = join(dir.path, `${uniqueName('db')}.db`);
    const s = await openStore(`sqlite:${path}`, { types: ALL_ENTITY_TYPES, ...(opts) });
    paths.set(s, path);
    return s;
  },
  async tamperAudit(store, seq, set) {
    const db = new DatabaseSync(paths.get(store)!);
    if (set) {
      db.prepare('UPDATE audit SET details = ? WHERE seq = ?').run(JSON.stringify(set.details), seq);
      if (set.erased !== undefined) db.prepare('UPDATE audit SET erased = ? WHERE seq = ?').run(set.erased ? JSON.stringify(set.erased) : null, seq);
    }
    else db.prepare('UPDATE audit SET action = ? WHERE seq = ?').run('email.not-sent', seq);
    db.close();
  },
});
