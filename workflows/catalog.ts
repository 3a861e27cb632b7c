import { pathToFileURL } from 'node:url';
import { isAbsolute, resolve } from 'node:path';
import { defineWorkflow, type WorkflowDef, type WorkflowInput } from './definition.ts';

import { BUILTIN_DEFINITIONS } from './definitions/index.ts';

/** Workflows that ship with Keel, by name. */
export const BUILTIN_WORKFLOWS: Record<string, WorkflowDef> = Object.fromEntries(BUILTIN_DEFINITIONS.map((d) => [d.name, d]));

/**
 * Every workflow this process can start: the built-ins plus the modules listed in
 * `KEEL_WORKFLOWS` (comma-separated paths; each default-exports a definition or an array of them).
 */
export async function loadWorkflowCatalog(env: Record<string, string | undefined> = process.env): Promise<Record<string, WorkflowDef>> {
  const out: Record<string, WorkflowDef> = { ...BUILTIN_WORKFLOWS };
  for (const p of (env.KEEL_WORKFLOWS ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    const mod = (await import(pathToFileURL(isAbsolute(p) ? p : resolve(p)).href)) as { default?: WorkflowInput | WorkflowInput[] };
    const defs = Array.isArray(mod.default) ? mod.default : mod.default ? [mod.default] : [];
    if (defs.length === 0) throw new Error(`${p} exports no workflow definition (export default defineWorkflow({...}))`);
    for (const d of defs) {
      const w = defineWorkflow(d);
      out[w.name] = w;
    }
  }
  return out;
}

/** Every capability a set of workflows may dispatch: steps, compensations, escalations. */
export function workflowCapabilities(defs: Record<string, WorkflowDef>): string[] {
  const out = new Set<string>();
  for (const d of Object.values(defs))
    for (const s of Object.values(d.steps)) {
      if (s.capability) out.add(s.capability);
      if (s.compensate) out.add(s.compensate.capability);
      if (s.approval && typeof s.approval.onTimeout === 'object') out.add(s.approval.onTimeout.escalate);
    }
  return [...out].sort();
}
