/**
 * The catalog of features: every feature folder under agents/ that ships with Keel, plus those
 * named in `KEEL_FEATURES` (module paths that default-export `defineFeature(...)`). The engine
 * and the CLI compose everything from here: the store's entity types, the workflows, the agents
 * `keel start` supervises and the ingress it hosts.
 *
 * ```ts
 * import { loadFeatures, entityTypesOf, agentCatalog } from './agents/index.ts';
 * const features = await loadFeatures(cfg.featureModules);
 * const store = await openStore(cfg.state, { types: entityTypesOf(features) });
 * ```
 *
 * A new feature is one folder (see docs/add-an-agent.md) and one line in BUILTIN_FEATURES.
 */
import { DefinitionError, loadAgent, loadFeatureModule, type AgentDefinition, type Feature, type FeatureAgent } from '../runtime/index.ts';
import { loadWorkflowCatalog, WORKFLOW_ENTITY_TYPES, type WorkflowDef } from '../workflows/index.ts';
import type { EntityTypeDef } from '../shared-state/index.ts';
import { MODEL_ENTITY_TYPES } from '../models/entities/index.ts';
import { inbound } from './inbound/index.ts';
import { launch } from './launch/index.ts';
import { memoryFeature, MEMORY_FEATURE } from './memory/index.ts';

/** Customers as the operator names them (id, email or chat handle): the inbound feature owns the customer entity. */
export { resolveCustomer, type ResolvedCustomer, type TicketState } from './inbound/index.ts';
/** The launch feature's entities, as the CLI's product, launch, content and calendar commands read them. */
export { PRODUCT, TASK, CONTENT_ASSET, CALENDAR_ITEM, LIFECYCLE, LAUNCH_WORKFLOW, LaunchInput, productLaunch } from './launch/index.ts';
export type { ProductState, AssetState, TaskState, CalendarState, ProductException, Lifecycle, AssetVersion } from './launch/index.ts';

/** The features that ship with Keel; the memory feature remembers what the others' memory rules say. */
export const BUILTIN_FEATURES: readonly Feature[] = [inbound, launch, memoryFeature([inbound, launch])];

/** The built-in features plus those loaded from module paths (`KEEL_FEATURES`). */
export async function loadFeatures(modulePaths: readonly string[] = []): Promise<Feature[]> {
  const out = [...BUILTIN_FEATURES];
  for (const p of modulePaths) {
    const f = await loadFeatureModule(p);
    if (out.some((x) => x.name === f.name)) throw new DefinitionError(`feature '${f.name}' (${p}) is already loaded`);
    out.push(f);
  }
  // features loaded from modules may have memory rules too: the memory feature covers them all
  if (out.length > BUILTIN_FEATURES.length) {
    const rest = out.filter((f) => f.name !== MEMORY_FEATURE);
    return [...rest, memoryFeature(rest)];
  }
  return out;
}

/** Every entity type the features declare, plus the workflow engine's (runs, lanes) and the model budgets'. */
export function entityTypesOf(features: readonly Feature[]): EntityTypeDef[] {
  const byName = new Map<string, EntityTypeDef>();
  for (const f of [...features, { name: 'workflows', entities: [...WORKFLOW_ENTITY_TYPES] }, { name: 'models', entities: [...MODEL_ENTITY_TYPES] }])
    for (const t of f.entities) {
      const seen = byName.get(t.name);
      if (seen && seen !== t) throw new DefinitionError(`entity type '${t.name}' is declared by two features`);
      byName.set(t.name, t);
    }
  return [...byName.values()];
}

/** Every workflow the features declare, plus the modules named in `KEEL_WORKFLOWS`. */
export function workflowsOf(features: readonly Feature[], modulePaths: readonly string[] = []): Promise<Record<string, WorkflowDef>> {
  const owner = new Map<string, string>();
  for (const f of features)
    for (const w of f.workflows) {
      const other = owner.get(w.name);
      if (other) throw new DefinitionError(`workflow '${w.name}' is declared by two features (${other}, ${f.name})`);
      owner.set(w.name, f.name);
    }
  return loadWorkflowCatalog(features.flatMap((f) => f.workflows), modulePaths);
}

export type CatalogAgent = FeatureAgent & { feature: string };

/** Every agent the features ship, by name. */
export function agentCatalog(features: readonly Feature[]): Record<string, CatalogAgent> {
  const out: Record<string, CatalogAgent> = {};
  for (const f of features)
    for (const [name, a] of Object.entries(f.agents)) {
      if (out[name]) throw new DefinitionError(`agent '${name}' is shipped by two features (${out[name].feature}, ${f.name})`);
      out[name] = { ...a, feature: f.name };
    }
  return out;
}

/** An agent by catalog name, or from a module path. */
export async function resolveAgent(nameOrPath: string, features: readonly Feature[]): Promise<{ def: AgentDefinition; module: string }> {
  const entry = agentCatalog(features)[nameOrPath];
  if (!entry && !/\.(ts|js|mjs)$/.test(nameOrPath)) {
    throw new DefinitionError(`unknown agent '${nameOrPath}': known agents are ${Object.keys(agentCatalog(features)).join(', ') || '(none)'}; or give a module path (.ts/.js) that default-exports defineAgent(...)`);
  }
  const module = entry?.module ?? nameOrPath;
  return { def: await loadAgent(module), module };
}

/** Agents `keel start` runs: `KEEL_AGENTS` (names or module paths, `none`) or every default agent. */
export function enabledAgents(features: readonly Feature[], list: readonly string[] | 'none' | undefined): string[] {
  if (list === 'none') return [];
  if (list && list.length) return [...list];
  return Object.entries(agentCatalog(features)).filter(([, e]) => e.default).map(([n]) => n);
}
