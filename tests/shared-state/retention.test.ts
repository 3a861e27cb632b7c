import { afterAll } from 'vitest';
import { join } from 'node:path';
import { openStore } from '../../shared-state/index.ts';
import { tempDir, uniqueName } from '../helpers/index.ts';
import { retentionContract } from './retention-contract.ts';

const dir = tempDir('keel-retention-sqlite-');
afterAll(() => dir.remove());

retentionContract({
  name: 'sqlite',
  open: (opts) => openStore(`sqlite:${join(dir.path, `${uniqueName('db')}.db`)}`, opts),
});
