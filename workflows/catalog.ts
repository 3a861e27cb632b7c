import { pathToFileURL } from 'node:url';
import { isAbsolute, resolve } from 'node:path';
import { defineWorkflow, WorkflowDefinitionError, type WorkflowDef, type WorkflowInput } from './definition.ts';

/**
 * Every workflow this process can start: the definitions the features declare, plus the modules
 * named in `KEEL_WORKFLOWS` (each default-exports a definition or an array of them). A module's
 * definition replaces a feature's of the same name.
 */
export async function loadWorkflowCatalog(declared: readonly WorkflowDef[], modulePaths: readonly string[] = []): Promise<Record<string, WorkflowDef>> {
  const out: Record<string, WorkflowDef> = Object.fromEntries(declared.map((d) => [d.name, d]));
  for (const p of modulePaths) {
    const mod = (await import(pathToFileURL(isAbsolute(p) ? p : resolve(p)).href)) as { default?: WorkflowInput | WorkflowInput[] };
    const defs = Array.isArray(mod.default) ? mod.default : mod.default ? [mod.default] : [];
    if (defs.length === 0) throw new WorkflowDefinitionError(p, ['the module exports no workflow definition (export default defineWorkflow({...}))']);
    for (const d of defs) {
      const w = defineWorkflow(d);
      out[w.name] = w;
    }
  }
  return out;
}

/** Every capability a set of workflows may dispatch: steps, compensations, escalations (approval deadlines, run failures). */
export function workflowCapabilities(defs: Record<string, WorkflowDef>): string[] {
  const out = new Set<string>();
  for (const d of Object.values(defs)) {
    if (d.onFailure) out.add(d.onFailure.escalate);
    for (const s of Object.values(d.steps)) {
      if (s.capability) out.add(s.capability);
      if (s.compensate) out.add(s.compensate.capability);
      if (s.approval && typeof s.approval.onTimeout === 'object') out.add(s.approval.onTimeout.escalate);
    }
  }
  return [...out].sort();
}
