import { pathToFileURL } from 'node:url';
import { isAbsolute, resolve } from 'node:path';
import type { AgentDefinition } from './define.ts';
import type { Feature } from './feature.ts';
import { DefinitionError } from './errors.ts';

const href = (spec: string) => (/^(file|data):/.test(spec) ? spec : pathToFileURL(isAbsolute(spec) ? spec : resolve(spec)).href);
const isModule = (spec: string) => /^(file|data):/.test(spec) || /\.(ts|js|mjs)$/.test(spec);

/** Loads the agent a module default-exports (or exports as `agent`): a path or a file URL. */
export async function loadAgent(spec: string): Promise<AgentDefinition> {
  if (!isModule(spec)) throw new DefinitionError(`'${spec}' is not a module path (.ts/.js) that default-exports defineAgent(...)`);
  const mod = (await import(href(spec))) as { default?: AgentDefinition; agent?: AgentDefinition };
  const def = mod.default ?? mod.agent;
  if (!def || typeof def !== 'object' || !Array.isArray(def.capabilities)) throw new DefinitionError(`${spec} does not export an agent definition (export default defineAgent({...}))`);
  return def;
}

/** Every agent definition a module exports: `export const agents = [...]`, or its default. */
export async function loadAgentModule(spec: string): Promise<AgentDefinition[]> {
  const mod = (await import(href(spec))) as { default?: AgentDefinition; agents?: AgentDefinition[] };
  if (Array.isArray(mod.agents)) return mod.agents;
  if (mod.default) return [mod.default];
  throw new DefinitionError(`${spec} exports no agent definition`);
}

/** The feature a module default-exports (or exports as `feature`), e.g. a folder's index.ts. */
export async function loadFeatureModule(spec: string): Promise<Feature> {
  const mod = (await import(href(spec))) as { default?: Feature; feature?: Feature };
  const f = mod.default ?? mod.feature;
  if (!f || typeof f !== 'object' || typeof f.name !== 'string' || !f.agents) throw new DefinitionError(`${spec} does not export a feature (export default defineFeature({...}))`);
  return f;
}
