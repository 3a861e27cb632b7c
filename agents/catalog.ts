import { pathToFileURL } from 'node:url';
import { isAbsolute, resolve } from 'node:path';
import type { AgentDefinition } from './runtime/index.ts';

/**
 * The agents that ship with Keel, by name. `keel start` runs those listed in `KEEL_AGENTS`
 * (default: every entry with `default: true`); `keel agent start NAME` runs one.
 */
export const CATALOG: Record<string, { module: string; default: boolean; description: string }> = {
  intake: { module: './inbound/intake.ts', default: true, description: 'inbound.intake: puts each inbound email/chat message on the canonical ticket of its thread' },
  triage: { module: './inbound/triage.ts', default: true, description: 'ticket.triage: intent, urgency, sentiment, entities, escalate (heuristics; a model when unsure)' },
  summarizer: { module: './inbound/summarizer.ts', default: true, description: 'ticket.summarize: summary of the whole ticket thread' },
  'reply-suggester': { module: './inbound/reply-suggester.ts', default: true, description: 'ticket.suggest-reply: reply draft for approval' },
  sender: { module: './inbound/sender.ts', default: true, description: 'message.send: sends an approved reply once (email threaded, chat recorded)' },
  escalation: { module: './inbound/escalation.ts', default: true, description: 'operator.escalate: notifies the operator with the whole ticket history' },
};

/** Loads an agent definition from the catalog by name, or from a module path. */
export async function loadAgent(nameOrPath: string): Promise<AgentDefinition> {
  const entry = CATALOG[nameOrPath];
  const spec = entry ? new URL(entry.module, import.meta.url).href : pathToFileURL(isAbsolute(nameOrPath) ? nameOrPath : resolve(nameOrPath)).href;
  if (!entry && !/\.(ts|js|mjs)$/.test(nameOrPath)) {
    throw new Error(`unknown agent '${nameOrPath}': known agents are ${Object.keys(CATALOG).join(', ') || '(none)'}; or give a module path (.ts/.js) that default-exports defineAgent(...)`);
  }
  const mod = (await import(spec)) as { default?: AgentDefinition; agent?: AgentDefinition };
  const def = mod.default ?? mod.agent;
  if (!def || typeof def !== 'object' || !Array.isArray(def.capabilities)) throw new Error(`${nameOrPath} does not export an agent definition (export default defineAgent({...}))`);
  return def;
}

/** Every agent definition a module exports: `export const agents = [...]`, or its default. */
export async function loadAgentModule(path: string): Promise<AgentDefinition[]> {
  const mod = (await import(pathToFileURL(isAbsolute(path) ? path : resolve(path)).href)) as { default?: AgentDefinition; agents?: AgentDefinition[] };
  if (Array.isArray(mod.agents)) return mod.agents;
  if (mod.default) return [mod.default];
  throw new Error(`${path} exports no agent definition`);
}

/** Agents `keel start` runs: KEEL_AGENTS (comma list, `none` for none) or the catalog's defaults. */
export function enabledAgents(env: Record<string, string | undefined> = process.env): string[] {
  const v = env.KEEL_AGENTS?.trim();
  if (v === 'none') return [];
  if (v) return v.split(',').map((s) => s.trim()).filter(Boolean);
  return Object.entries(CATALOG).filter(([, e]) => e.default).map(([n]) => n);
}
