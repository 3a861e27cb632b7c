import type { Condition, Mapping } from './definition.ts';

/** What mappings and conditions read: `$.input`, `$.steps.<id>.output`, `$.run.id`. */
export interface EvalContext {
  input: unknown;
  steps: Record<string, { output?: unknown; status?: string }>;
  run: { id: string; customer?: string; status?: string; error?: string };
}

export function getPath(ctx: EvalContext, path: string): unknown {
  if (!path.startsWith('$.')) return undefined;
  let cur: unknown = ctx;
  for (const part of path.slice(2).split('.')) {
    if (cur === null || cur === undefined || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

/** Resolves a mapping: strings starting with `$.` are paths, `{ $literal: x }` is x as is; objects and arrays map recursively. */
export function resolveMapping(m: Mapping, ctx: EvalContext): unknown {
  if (typeof m === 'string') return m.startsWith('$.') ? getPath(ctx, m) : m;
  if (Array.isArray(m)) return m.map((x) => resolveMapping(x, ctx));
  if (m && typeof m === 'object') {
    if ('$literal' in m) return (m as { $literal: unknown }).$literal;
    if ('$concat' in m) {
      const parts = (m as { $concat: unknown[] }).$concat.map((x) => resolveMapping(x, ctx));
      return parts.some((x) => x === undefined || x === null) ? undefined : parts.map(String).join('');
    }
    // first mapped value that is not undefined/null, e.g. an edited approval text or the suggestion
    if ('$coalesce' in m) {
      for (const x of (m as { $coalesce: unknown[] }).$coalesce) {
        const r = resolveMapping(x, ctx);
        if (r !== undefined && r !== null) return r;
      }
      return undefined;
    }
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(m)) {
      const r = resolveMapping(v, ctx);
      if (r !== undefined) out[k] = r;
    }
    return out;
  }
  return m;
}

const eq = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/** Compiled `matches` patterns (conditions are evaluated on every plan; patterns are few). */
const patterns = new Map<string, RegExp>();
function patternOf(source: string): RegExp {
  let re = patterns.get(source);
  if (!re) {
    re = new RegExp(source);
    if (patterns.size >= 1_000) patterns.clear();
    patterns.set(source, re);
  }
  return re;
}

export function evaluate(c: Condition, ctx: EvalContext): boolean {
  const v = getPath(ctx, c.path);
  if ('equals' in c) return eq(v, c.equals);
  if ('notEquals' in c) return !eq(v, c.notEquals);
  if ('in' in c) return c.in.some((x) => eq(v, x));
  if ('matches' in c) return typeof v === 'string' && patternOf(c.matches).test(v);
  return !!v === c.truthy;
}
