import { existsSync, statSync } from 'node:fs';
import { loadConfig, type KeelConfig } from '../config/index.ts';
import type { Bus } from '../bus/index.ts';
import { openStore, parseStateUrl, type StateStore } from '../shared-state/index.ts';
import type { WorkflowEngine } from '../workflows/index.ts';
import { loadFeatures, entityTypesOf } from '../agents/index.ts';
import type { Feature } from '../runtime/index.ts';
import { CliError } from './errors.ts';

/**
 * Where the CLI looks for the store, in words: which variable chose it. Used by every message
 * about a wrong data dir.
 */
export function storeOrigin(cfg: KeelConfig, env: Record<string, string | undefined> = process.env): string {
  if (env.KEEL_STATE) return `KEEL_STATE=${env.KEEL_STATE}`;
  return env.KEEL_DATA_DIR ? `KEEL_DATA_DIR=${env.KEEL_DATA_DIR} (${cfg.dataDir})` : `KEEL_DATA_DIR unset: the default ./.keel in ${process.cwd()} (${cfg.dataDir})`;
}

/**
 * Refuses to read a data dir without a Keel store: opening it would create a fresh empty store
 * and every command would answer "nothing" as if all were well. `keel init` creates one on
 * purpose; `keel start` and agents create theirs. (A MongoDB URL is taken as given.)
 */
export function requireStore(cfg: KeelConfig): void {
  const parsed = parseStateUrl(cfg.state);
  if (parsed.kind !== 'sqlite') return;
  if (existsSync(parsed.path) && statSync(parsed.path).size > 0) return;
  throw new CliError(
    'CLI_NO_STORE',
    `no Keel store at ${parsed.path} (${storeOrigin(cfg)}). Point KEEL_DATA_DIR at the running engine's data dir (\`keel start\` prints it: "data …"), or run keel from the directory the engine runs in; KEEL_STATE names a store directly. To start an empty store here on purpose: keel init`,
    { details: { state: cfg.state, dataDir: cfg.dataDir } },
  );
}

/** The system of record as the CLI sees it: every feature's entity types (KEEL_FEATURES included). Refuses a missing store. */
export async function openCliStore(cfg: KeelConfig = loadConfig(), features?: Feature[]): Promise<StateStore> {
  requireStore(cfg);
  return openStore(cfg.state, { types: entityTypesOf(features ?? (await loadFeatures(cfg.featureModules))), sqlite: { synchronous: cfg.sqliteSync } });
}

export interface CliContext {
  cfg: KeelConfig;
  features: Feature[];
  store: StateStore;
  bus?: Bus;
  workflows?: WorkflowEngine;
  close(): Promise<void>;
}

/** Opens what a command needs: always the state store (which must exist); the bus and the workflow engine on request. */
export async function openCli(opts: { bus?: boolean } = {}): Promise<CliContext> {
  const cfg = loadConfig();
  const features = await loadFeatures(cfg.featureModules);
  const store = await openCliStore(cfg, features);
  if (!opts.bus) return { cfg, features, store, close: () => store.close() };
  // the bus and the workflow engine load only for commands that act (approve, run start …)
  const [{ connectCli }, { createBus }, { WorkflowEngine }, { workflowsOf }] = await Promise.all([import('./connect.ts'), import('../bus/index.ts'), import('../workflows/index.ts'), import('../agents/index.ts')]);
  const nc = await connectCli(cfg).catch(async (err: unknown) => {
    await store.close();
    throw err;
  });
  const bus = createBus(nc, { prefix: cfg.subjectPrefix });
  // run inputs and edited approval texts are checked against what the live agents announce
  const { registryTaskSchemas } = await import('../workflows/index.ts');
  const workflows = new WorkflowEngine({ store, bus, actor: { kind: 'human', id: cfg.operator }, catalog: await workflowsOf(features, cfg.workflowModules), policies: cfg.policies, taskSchemas: registryTaskSchemas(bus) });
  return {
    cfg,
    features,
    store,
    bus,
    workflows,
    close: async () => {
      await nc.drain().catch(() => undefined);
      await store.close();
    },
  };
}

export function print(json: boolean | undefined, value: unknown, human: () => void): void {
  if (json) console.log(JSON.stringify(value));
  else human();
}

export function table(head: string[], rows: string[][]): void {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  for (const r of [head, ...rows]) console.log(r.map((c, i) => (c ?? '').padEnd(widths[i]!)).join('  ').trimEnd());
}

export function parseJsonOption(name: string, v: string | undefined): unknown {
  if (v === undefined) return undefined;
  try {
    return JSON.parse(v);
  } catch (err) {
    throw new CliError('CLI_BAD_JSON', `${name} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
}
