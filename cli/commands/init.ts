import { existsSync, mkdirSync, statSync } from 'node:fs';
import type { Command } from 'commander';
import { loadConfig } from '../../config/index.ts';
import { openStore, parseStateUrl } from '../../shared-state/index.ts';
import { loadFeatures, entityTypesOf } from '../../agents/index.ts';
import { print, storeOrigin } from '../context.ts';

/** `keel init`: create the data dir and an empty store on purpose (other commands refuse a data dir without one). */
export function registerInit(program: Command): void {
  program
    .command('init')
    .description('Create the data dir (KEEL_DATA_DIR) and an empty Keel store (KEEL_STATE) there. Other commands refuse a data dir without a store, so a mistyped KEEL_DATA_DIR fails loudly instead of showing an empty system; `keel start` creates its store itself. Idempotent.')
    .option('--json', 'print JSON: { state, dataDir, created }')
    .action(async (o: { json?: boolean }) => {
      const cfg = loadConfig();
      mkdirSync(cfg.dataDir, { recursive: true });
      const parsed = parseStateUrl(cfg.state);
      const existed = parsed.kind === 'sqlite' ? existsSync(parsed.path) && statSync(parsed.path).size > 0 : true;
      const store = await openStore(cfg.state, { types: entityTypesOf(await loadFeatures(cfg.featureModules)), sqlite: { synchronous: cfg.sqliteSync } });
      try {
        await store.headCursor();
      } finally {
        await store.close();
      }
      const where = parsed.kind === 'sqlite' ? parsed.path : store.info.location;
      print(o.json, { state: cfg.state, dataDir: cfg.dataDir, created: !existed }, () =>
        console.log(existed ? `a Keel store is already at ${where} (${storeOrigin(cfg)})` : `created an empty Keel store at ${where} (${storeOrigin(cfg)})`),
      );
    });
}
