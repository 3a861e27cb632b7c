import { loadConfig, type KeelConfig } from '../config/index.ts';
import { createBus, type Bus } from '../bus/index.ts';
import { openStore, type StateStore } from '../shared-state/index.ts';
import { WorkflowEngine } from '../workflows/index.ts';
import { loadFeatures, entityTypesOf, workflowsOf } from '../agents/index.ts';
import type { Feature } from '../runtime/index.ts';
import { connectCli } from './connect.ts';
import { CliError } from './errors.ts';

/** The system of record as the CLI sees it: every feature's entity types (KEEL_FEATURES included). */
export async function openCliStore(cfg: KeelConfig = loadConfig(), features?: Feature[]): Promise<StateStore> {
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

/** Opens what a command needs: always the state store; the bus and the workflow engine on request. */
export async function openCli(opts: { bus?: boolean } = {}): Promise<CliContext> {
  const cfg = loadConfig();
  const features = await loadFeatures(cfg.featureModules);
  const store = await openCliStore(cfg, features);
  if (!opts.bus) return { cfg, features, store, close: () => store.close() };
  const nc = await connectCli(cfg).catch(async (err: unknown) => {
    await store.close();
    throw err;
  });
  const bus = createBus(nc, { prefix: cfg.subjectPrefix });
  const workflows = new WorkflowEngine({ store, bus, actor: { kind: 'human', id: cfg.operator }, catalog: await workflowsOf(features, cfg.workflowModules), policies: cfg.policies });
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
