/**
 * Entity types are declarations (mechanism only: the domain types live with the features that
 * own them, under agents/<feature>/; the workflow run type lives in workflows/): a name, a schema version, a zod schema for the state, the
 * fields text search looks at, and optionally custom events with their own reducer.
 *
 * ```ts
 * const invoice = defineEntityType({
 *   name: 'invoice',
 *   schemaVersion: 1,
 *   schema: z.strictObject({ customerId: z.string(), amount: z.number(), paid: z.boolean().default(false) }),
 *   searchFields: ['customerId'],
 *   events: { paid: z.object({ at: z.iso.datetime() }) },
 *   reduce: (state, e) => (e.type === 'paid' ? { ...state, paid: true } : state),
 * });
 * const store = await openStore(url, { types: [invoice, ...otherTypes] });
 * ```
 *
 * Built-in events on every type: `created` (data = the whole state), `updated` (data = a JSON
 * merge patch, RFC 7396: `null` removes a field), `deleted` and `restored`.
 */
import type { z } from 'zod';
import { StateError, UnknownEntityTypeError } from './errors.ts';

export type State = Record<string, unknown>;

export interface EntityTypeDef {
  name: string;
  /** bump when the schema changes; every event records the version it was written under */
  schemaVersion: number;
  /** the state's schema; parsing may apply defaults. Validated after every event. */
  schema: z.ZodType<State>;
  /** dotted state paths whose values text search matches (strings, numbers, arrays of them) */
  searchFields: string[];
  /** schemas of this type's own events' data, by event name */
  events?: Record<string, z.ZodType>;
  /** applies one of this type's own events; must be pure (replays call it again) */
  reduce?: (state: State, event: { type: string; data: unknown }) => State;
  /**
   * state fields (dotted paths) that hold personal data (email addresses, phone numbers, postal
   * addresses): their values are redacted from every prompt sent to a cloud model (models/redact.ts,
   * `KEEL_REDACT`); see docs/data-protection.md
   */
  sensitive?: string[];
}

export const BUILTIN_EVENTS = ['created', 'updated', 'deleted', 'restored'] as const;

const NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** Sensitive fields by entity type name, as declared (every process that loads a type's declaration knows them). */
const SENSITIVE = new Map<string, string[]>();

/** Declares an entity type; checks the declaration itself. */
export function defineEntityType(def: EntityTypeDef): EntityTypeDef {
  if (!NAME.test(def.name)) throw new StateError('STATE_INVALID_DEFINITION', `entity type name '${def.name}' must be 1-64 letters, digits, '_' or '-'`);
  if (!Number.isInteger(def.schemaVersion) || def.schemaVersion < 1) throw new StateError('STATE_INVALID_DEFINITION', `entity type '${def.name}': schemaVersion must be an integer >= 1`);
  for (const ev of Object.keys(def.events ?? {})) {
    if ((BUILTIN_EVENTS as readonly string[]).includes(ev)) throw new StateError('STATE_INVALID_DEFINITION', `entity type '${def.name}': event '${ev}' is built in`);
    if (!NAME.test(ev)) throw new StateError('STATE_INVALID_DEFINITION', `entity type '${def.name}': event name '${ev}' must be letters, digits, '_' or '-'`);
  }
  if (def.events && Object.keys(def.events).length > 0 && !def.reduce) throw new StateError('STATE_INVALID_DEFINITION', `entity type '${def.name}' declares events but no reduce`);
  for (const f of def.sensitive ?? []) if (!/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/.test(f)) throw new StateError('STATE_INVALID_DEFINITION', `entity type '${def.name}': sensitive field '${f}' must be a dotted state path`);
  if (def.sensitive?.length) SENSITIVE.set(def.name, [...def.sensitive]);
  return def;
}

/** The fields an entity type declares `sensitive` (none: empty). */
export function sensitiveFieldsOf(typeName: string): readonly string[] {
  return SENSITIVE.get(typeName) ?? [];
}

/**
 * The values of an entity's sensitive fields (strings and numbers, also inside arrays), for
 * redaction: `sensitiveValuesOf('customer', { email: 'a@b.c', phone: '+49 30 1234567' })`.
 */
export function sensitiveValuesOf(typeName: string, state: State): string[] {
  const out: string[] = [];
  const add = (v: unknown) => {
    if (typeof v === 'string' && v.trim()) out.push(v.trim());
    else if (typeof v === 'number' && Number.isFinite(v)) out.push(String(v));
    else if (Array.isArray(v)) v.forEach(add);
  };
  for (const path of sensitiveFieldsOf(typeName)) {
    let v: unknown = state;
    for (const k of path.split('.')) v = v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined;
    add(v);
  }
  return out;
}

export interface EntityTypeRegistry {
  get(name: string): EntityTypeDef;
  has(name: string): boolean;
  names(): string[];
}

export function createRegistry(defs: readonly EntityTypeDef[]): EntityTypeRegistry {
  const byName = new Map<string, EntityTypeDef>();
  for (const d of defs) {
    const seen = byName.get(d.name);
    if (seen === d) continue; // several agents of one feature list the same declaration
    if (seen) throw new StateError('STATE_INVALID_DEFINITION', `entity type '${d.name}' is declared twice`);
    byName.set(d.name, d);
  }
  return {
    get(name) {
      const d = byName.get(name);
      if (!d) throw new UnknownEntityTypeError(name, [...byName.keys()]);
      return d;
    },
    has: (name) => byName.has(name),
    names: () => [...byName.keys()],
  };
}

