import { z } from 'zod';
import { listAgents, type Bus } from '../bus/index.ts';
import type { FieldIssue } from './errors.ts';

/** Where a workflow engine learns a capability's input schema (undefined: not known here). */
export type TaskSchemaSource = (capability: string) => Promise<z.ZodType | undefined>;

/** The problems of `value` under `schema`, as field issues (extra keys are not a problem: capabilities strip them). */
export function schemaIssues(schema: z.ZodType, value: unknown, where: { step?: string; capability?: string } = {}): FieldIssue[] {
  const r = schema.safeParse(value);
  if (r.success) return [];
  return r.error.issues
    .filter((i) => i.code !== 'unrecognized_keys')
    .map((i) => ({ path: i.path.map(String).join('.') || '(input)', message: i.message, ...where }));
}

/**
 * Capability input schemas from the capability registry: what the live agents announce (JSON
 * Schema from their zod schemas, turned back into zod). A capability no live agent announces is
 * unknown. Answers are cached for `ttlMs` (default 5 s).
 */
export function registryTaskSchemas(bus: Bus, o: { ttlMs?: number } = {}): TaskSchemaSource {
  let cache: { at: number; schemas: Map<string, z.ZodType | undefined> } | undefined;
  const ttl = o.ttlMs ?? 5_000;
  return async (capability) => {
    if (!cache || Date.now() - cache.at > ttl) {
      const schemas = new Map<string, z.ZodType | undefined>();
      try {
        for (const m of await listAgents(bus.nc, bus.subjects.registryBucket))
          for (const c of m.capabilities) {
            if (schemas.get(c.name) || !c.input) continue;
            try {
              schemas.set(c.name, z.fromJSONSchema(c.input as Parameters<typeof z.fromJSONSchema>[0]));
            } catch {
              schemas.set(c.name, undefined); // a schema we cannot read back: not known
            }
          }
      } catch {
        // no registry (no agents yet, no permission): nothing is known
      }
      cache = { at: Date.now(), schemas };
    }
    return cache.schemas.get(capability);
  };
}

/** Capability input schemas from capability definitions in this process (exact: the zod schemas themselves). */
export function localTaskSchemas(capabilities: Iterable<{ name: string; input: z.ZodType }>, fallback?: TaskSchemaSource): TaskSchemaSource {
  const m = new Map<string, z.ZodType>();
  for (const c of capabilities) m.set(c.name, c.input);
  return async (capability) => m.get(capability) ?? (await fallback?.(capability));
}
