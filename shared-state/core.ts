/**
 * Adapter-independent logic: checking inputs, applying events to state, search text, audit
 * hashes, cost totals. Both adapters call these so they behave the same. Internal.
 */
import * as nodeCrypto from 'node:crypto';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { z } from 'zod';
import type { EntityTypeDef, State } from './entity-types.ts';
import { BUILTIN_EVENTS } from './entity-types.ts';
import {
  AmbiguousIdError,
  DocumentTooLargeError,
  NotFoundError,
  InvalidEventError,
  InvalidIdError,
  InvalidQueryError,
  SchemaValidationError,
  UnknownEventTypeError,
  type FieldIssue,
} from './errors.ts';
import type {
  AuditRecord,
  CommittedEvent,
  CostDimension,
  CostRecord,
  CostReport,
  CostTotals,
  Entity,
  EntityQuery,
  EventInput,
  EventMeta,
  FieldCondition,
} from './types.ts';

export const DEFAULT_MAX_DOCUMENT_BYTES = 1024 * 1024;
export const GENESIS_HASH = '0'.repeat(64);

const ID = /^[A-Za-z0-9_-]{1,128}$/;

export function assertId(kind: string, value: unknown): string {
  if (typeof value !== 'string' || !ID.test(value)) throw new InvalidIdError(kind, String(value));
  return value;
}

// Node 24 has it; an older Node (outside the pinned runtime) gets random v4 ids
const uuidV7: () => string = (nodeCrypto as { randomUUIDv7?: () => string }).randomUUIDv7 ?? randomUUID;

/**
 * A new id: a UUIDv7 (RFC 9562), whose first 48 bits are the time in milliseconds, so ids made
 * one after the other sort together and an index on them appends at its end instead of touching a
 * random page per insert (74 bits stay random).
 */
export function newId(): string {
  return uuidV7();
}

export function nowIso(): string {
  return new Date().toISOString();
}

export function issuesOf(err: z.ZodError, prefix = ''): FieldIssue[] {
  return err.issues.map((i) => ({ path: [prefix, ...i.path.map(String)].filter(Boolean).join('.'), message: i.message }));
}

const actorSchema = z.strictObject({ kind: z.enum(['agent', 'human', 'system']), id: z.string().min(1).max(200) });
const metaSchema = z.strictObject({
  actor: actorSchema,
  causationId: z.string().min(1).max(200).optional(),
  correlationId: z.string().min(1).max(200).optional(),
  traceId: z.string().min(1).max(200).optional(),
  idempotencyKey: z.string().min(1).max(500).optional(),
});

export function checkMeta(entityType: string, entityId: string, meta: unknown): EventMeta {
  const r = metaSchema.safeParse(meta);
  if (!r.success) throw new SchemaValidationError(entityType, entityId, issuesOf(r.error, 'meta'), 'event metadata');
  // drop undefined keys so both adapters store the same shape (the parsed object is a new one)
  const m = r.data as Record<string, unknown>;
  for (const k of Object.keys(m)) if (m[k] === undefined) delete m[k];
  return m as unknown as EventMeta;
}

export function checkActor(what: string, actor: unknown): EventMeta['actor'] {
  const r = actorSchema.safeParse(actor);
  if (!r.success) throw new InvalidQueryError(`${what}: ${issuesOf(r.error, 'actor').map((i) => `${i.path}: ${i.message}`).join('; ')}`);
  return r.data;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** RFC 7396 JSON merge patch. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isPlainObject(patch)) return patch;
  const out: Record<string, unknown> = isPlainObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

export interface EntitySnapshot {
  version: number;
  state: State;
  deleted: boolean;
  createdAt: string;
  updatedAt: string;
  schemaVersion: number;
}

/** Applies one event without validating (replays of history written under older schemas). */
function reduceOne(def: EntityTypeDef, cur: EntitySnapshot | null, e: { type: string; data: unknown }): { state: State; deleted: boolean } {
  switch (e.type) {
    case 'created':
      return { state: (isPlainObject(e.data) ? e.data : {}) as State, deleted: false };
    case 'updated':
      return { state: mergePatch(cur?.state ?? {}, e.data) as State, deleted: cur?.deleted ?? false };
    case 'deleted':
      return { state: cur?.state ?? {}, deleted: true };
    case 'restored':
      return { state: cur?.state ?? {}, deleted: false };
    case ERASED_EVENT:
      // the erasure rewrote the events before it; its own data says only what was done
      return { state: cur?.state ?? {}, deleted: (cur?.deleted ?? false) || (isPlainObject(e.data) && e.data.deleted === true) };
    case COMPACTED_EVENT: {
      // retention replaced the events before it: it carries the state they had built
      const d = isPlainObject(e.data) ? e.data : {};
      return { state: (isPlainObject(d.state) ? d.state : (cur?.state ?? {})) as State, deleted: d.deleted === true };
    }
    default:
      return { state: def.reduce ? def.reduce(cur?.state ?? {}, e) : (cur?.state ?? {}), deleted: cur?.deleted ?? false };
  }
}

/** Folds stored events into snapshots (one per event), parsing with the schema where it still fits. */
export function replay(def: EntityTypeDef, events: readonly CommittedEvent[], upTo = Infinity): EntitySnapshot | null {
  let cur: EntitySnapshot | null = null;
  for (const e of events) {
    if (e.version > upTo) break;
    const prev: EntitySnapshot | null = cur as EntitySnapshot | null;
    const next = reduceOne(def, prev, e);
    const parsed = def.schema.safeParse(next.state);
    // a compacted history keeps the entity's own times (compaction is no change of state)
    const kept = e.type === COMPACTED_EVENT && isPlainObject(e.data) ? (e.data as { createdAt?: unknown; updatedAt?: unknown }) : {};
    cur = {
      version: e.version,
      state: parsed.success ? parsed.data : next.state,
      deleted: next.deleted,
      createdAt: prev?.createdAt ?? (typeof kept.createdAt === 'string' ? kept.createdAt : e.time),
      updatedAt: typeof kept.updatedAt === 'string' ? kept.updatedAt : e.time,
      schemaVersion: e.schemaVersion,
    };
  }
  return cur;
}

export interface PlannedAppend {
  meta: EventMeta;
  time: string;
  /** events without cursor (the adapter assigns it) */
  events: Omit<CommittedEvent, 'cursor'>[];
  snapshot: EntitySnapshot;
  searchText: string;
  /** JSON made while planning (the size checks need it), for adapters that store text */
  json: { state: string; meta: string; data: string[] };
}

/**
 * Checks an append against the current snapshot and computes the new state. Throws before
 * anything is written: unknown event, invalid data or state (naming the fields), too large.
 */
export function planAppend(
  def: EntityTypeDef,
  entityId: string,
  current: EntitySnapshot | null,
  inputs: readonly EventInput[],
  rawMeta: unknown,
  maxBytes: number,
): PlannedAppend {
  const type = def.name;
  if (!Array.isArray(inputs) || inputs.length === 0) throw new InvalidEventError(type, entityId, undefined, 'an append needs at least one event');
  if (inputs.length > 1000) throw new InvalidEventError(type, entityId, undefined, `an append holds at most 1000 events (got ${inputs.length})`);
  const meta = checkMeta(type, entityId, rawMeta);
  const metaJson = JSON.stringify(meta);
  const time = nowIso();
  const events: Omit<CommittedEvent, 'cursor'>[] = [];
  const dataJson: string[] = [];
  let cur = current;
  let payloadBytes = 0;
  for (const [i, input] of inputs.entries()) {
    const evType = (input as EventInput | undefined)?.type;
    if (typeof evType !== 'string') throw new InvalidEventError(type, entityId, undefined, `event ${i} has no type`);
    const custom = def.events?.[evType];
    if (!(BUILTIN_EVENTS as readonly string[]).includes(evType) && !custom) {
      throw new UnknownEventTypeError(type, evType, [...BUILTIN_EVENTS, ...Object.keys(def.events ?? {})]);
    }
    let data: unknown = input.data ?? null;
    if (evType === 'created' && cur) throw new InvalidEventError(type, entityId, evType, `the entity already exists (version ${cur.version})`);
    if (evType !== 'created' && !cur) throw new InvalidEventError(type, entityId, evType, "the entity does not exist yet: its first event must be 'created'");
    if (cur?.deleted && evType !== 'restored') throw new InvalidEventError(type, entityId, evType, "the entity is deleted: only 'restored' applies");
    if (evType === 'restored' && !cur?.deleted) throw new InvalidEventError(type, entityId, evType, 'the entity is not deleted');
    if ((evType === 'created' || evType === 'updated') && !isPlainObject(data)) {
      throw new SchemaValidationError(type, entityId, [{ path: inputs.length > 1 ? `events.${i}.data` : 'data', message: 'must be an object' }], `'${evType}' data`);
    }
    if (custom) {
      const r = custom.safeParse(data);
      if (!r.success) throw new SchemaValidationError(type, entityId, issuesOf(r.error), `'${evType}' data`);
      data = r.data;
    }
    const next = reduceOne(def, cur, { type: evType, data });
    const parsed = def.schema.safeParse(next.state);
    if (!parsed.success) throw new SchemaValidationError(type, entityId, issuesOf(parsed.error), `state after '${evType}'`);
    const version = (cur?.version ?? 0) + 1;
    const ev: Omit<CommittedEvent, 'cursor'> = {
      eventId: newId(),
      entityType: type,
      entityId,
      version,
      type: evType,
      data,
      schemaVersion: def.schemaVersion,
      meta,
      time,
    };
    const dj = JSON.stringify(data);
    payloadBytes += eventBytes(ev, dj, metaJson);
    dataJson.push(dj);
    events.push(ev);
    cur = { version, state: parsed.data, deleted: next.deleted, createdAt: cur?.createdAt ?? time, updatedAt: time, schemaVersion: def.schemaVersion };
  }
  const snapshot = cur!;
  const stateJson = JSON.stringify(snapshot.state);
  const stateBytes = Buffer.byteLength(stateJson, 'utf8');
  if (stateBytes > maxBytes) throw new DocumentTooLargeError(type, entityId, 'the resulting state', stateBytes, maxBytes);
  if (payloadBytes > maxBytes) throw new DocumentTooLargeError(type, entityId, 'the appended events', payloadBytes, maxBytes);
  return { meta, time, events, snapshot, searchText: searchTextOf(def, snapshot.state), json: { state: stateJson, meta: metaJson, data: dataJson } };
}

/** `byteLength(ev)` from the JSON of its data and meta, made once (the same text inside the event's). */
export function eventBytes(ev: Omit<CommittedEvent, 'cursor'>, dataJson: string, metaJson: string): number {
  return byteLength({ ...ev, data: 0, meta: 0 }) - 2 + Buffer.byteLength(dataJson, 'utf8') + Buffer.byteLength(metaJson, 'utf8');
}

export function byteLength(v: unknown): number {
  return Buffer.byteLength(JSON.stringify(v) ?? '', 'utf8');
}

/** The snapshot of `basis` (an append's option) when it is the entity at `version`, else undefined. */
export function basisAt(basis: Entity | undefined, type: string, id: string, version: number): EntitySnapshot | undefined {
  if (!basis || version === 0 || basis.version !== version || basis.entityType !== type || basis.entityId !== id) return undefined;
  return { version, state: basis.state as State, deleted: basis.deleted, createdAt: basis.createdAt, updatedAt: basis.updatedAt, schemaVersion: basis.schemaVersion };
}

export function toEntity<S>(type: string, id: string, s: EntitySnapshot): Entity<S> {
  return { entityType: type, entityId: id, version: s.version, state: s.state as S, deleted: s.deleted, createdAt: s.createdAt, updatedAt: s.updatedAt, schemaVersion: s.schemaVersion };
}

// ---- search --------------------------------------------------------------------------------

function leaves(v: unknown, out: string[]): void {
  if (v === null || v === undefined) return;
  if (typeof v === 'string') out.push(v);
  else if (typeof v === 'number' || typeof v === 'boolean') out.push(String(v));
  else if (Array.isArray(v)) for (const x of v) leaves(x, out);
  else if (typeof v === 'object') for (const x of Object.values(v)) leaves(x, out);
}

export function getPath(obj: unknown, path: string): unknown {
  let cur: unknown = obj;
  for (const p of path.split('.')) {
    if (!isPlainObject(cur)) return undefined;
    cur = cur[p];
  }
  return cur;
}

/** Lower-cased text of the type's search fields, what `search` matches words against. */
export function searchTextOf(def: EntityTypeDef, state: State): string {
  const out: string[] = [];
  for (const f of def.searchFields) leaves(getPath(state, f), out);
  return out.join(' \n ').toLowerCase();
}

export function searchTerms(text: string): string[] {
  const terms = text.toLowerCase().split(/\s+/).filter(Boolean);
  if (terms.length === 0) throw new InvalidQueryError('search needs at least one word');
  if (terms.length > 20) throw new InvalidQueryError('search takes at most 20 words');
  return terms;
}

// ---- queries -------------------------------------------------------------------------------

const FIELD = /^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$/;
export const META_FIELDS = ['id', 'version', 'createdAt', 'updatedAt'] as const;
export type MetaField = (typeof META_FIELDS)[number];
const OPS = new Set(['$eq', '$ne', '$gt', '$gte', '$lt', '$lte', '$in', '$contains', '$exists']);

export interface NormalizedCondition {
  field: string;
  meta: MetaField | null;
  op: '$eq' | '$ne' | '$gt' | '$gte' | '$lt' | '$lte' | '$in' | '$contains' | '$exists';
  value: unknown;
}

export interface NormalizedQuery {
  conditions: NormalizedCondition[];
  sort: { field: string; meta: MetaField | null; dir: 1 | -1 }[];
  limit: number;
  offset: number;
  includeDeleted: boolean;
}

function isScalar(v: unknown): boolean {
  return v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean';
}

export function normalizeQuery(q: EntityQuery = {}): NormalizedQuery {
  const conditions: NormalizedCondition[] = [];
  for (const [field, cond] of Object.entries(q.filter ?? {})) {
    if (!FIELD.test(field)) throw new InvalidQueryError(`invalid filter field '${field}'`);
    const meta = (META_FIELDS as readonly string[]).includes(field) ? (field as MetaField) : null;
    const c = cond as FieldCondition;
    if (isScalar(c)) {
      conditions.push({ field, meta, op: '$eq', value: c });
      continue;
    }
    if (typeof c !== 'object' || c === null || Array.isArray(c)) throw new InvalidQueryError(`filter on '${field}' must be a value or an operator object`);
    for (const [op, value] of Object.entries(c)) {
      if (!OPS.has(op)) throw new InvalidQueryError(`unknown operator '${op}' on '${field}' (use ${[...OPS].join(', ')})`);
      if (op === '$in') {
        if (!Array.isArray(value) || value.length === 0 || !value.every((x) => isScalar(x) && x !== null)) throw new InvalidQueryError(`$in on '${field}' needs a non-empty array of values`);
      } else if (op === '$exists') {
        if (typeof value !== 'boolean') throw new InvalidQueryError(`$exists on '${field}' needs true or false`);
      } else if (!isScalar(value)) {
        throw new InvalidQueryError(`${op} on '${field}' needs a string, number, boolean or null`);
      }
      conditions.push({ field, meta, op: op as NormalizedCondition['op'], value });
    }
  }
  const sort: NormalizedQuery['sort'] = [];
  for (const [field, dir] of Object.entries(q.sort ?? {})) {
    if (!FIELD.test(field)) throw new InvalidQueryError(`invalid sort field '${field}'`);
    if (dir !== 'asc' && dir !== 'desc') throw new InvalidQueryError(`sort on '${field}' must be 'asc' or 'desc'`);
    const meta = (META_FIELDS as readonly string[]).includes(field) ? (field as MetaField) : null;
    sort.push({ field, meta, dir: dir === 'asc' ? 1 : -1 });
  }
  if (!sort.some((s) => s.meta === 'id')) sort.push({ field: 'id', meta: 'id', dir: 1 });
  return {
    conditions,
    sort,
    limit: clampInt(q.limit, 50, 1, 1000, 'limit'),
    offset: clampInt(q.offset, 0, 0, Number.MAX_SAFE_INTEGER, 'offset'),
    includeDeleted: q.includeDeleted ?? false,
  };
}

export function clampInt(v: number | undefined, dflt: number, min: number, max: number, what: string): number {
  if (v === undefined) return dflt;
  if (!Number.isInteger(v) || v < min) throw new InvalidQueryError(`${what} must be an integer >= ${min}`);
  return Math.min(v, max);
}

// ---- audit ---------------------------------------------------------------------------------

/** JSON with object keys sorted, so the same record always hashes the same. */
export function canonicalJson(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v) ?? 'null';
  if (Array.isArray(v)) return `[${v.map((x) => canonicalJson(x === undefined ? null : x)).join(',')}]`;
  const keys = Object.keys(v as object)
    .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
    .sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson((v as Record<string, unknown>)[k])}`).join(',')}}`;
}

export function auditHash(r: Omit<AuditRecord, 'hash'>): string {
  // v2 (erasable details): the hash covers the details' salted digest, not the details
  const body =
    r.v === 2
      ? { v: 2, seq: r.seq, time: r.time, actor: r.actor, action: r.action, subject: r.subject, detailsDigest: r.detailsDigest ?? '', prevHash: r.prevHash }
      : { seq: r.seq, time: r.time, actor: r.actor, action: r.action, subject: r.subject, details: r.details, prevHash: r.prevHash };
  return createHash('sha256').update(canonicalJson(body)).digest('hex');
}

/** sha256 over the salt and the canonical JSON of an audit record's details (v2 records written before leaf digests). */
export function auditDetailsDigest(salt: string, details: Record<string, unknown>): string {
  return createHash('sha256').update(salt).update('\n').update(canonicalJson(details)).digest('hex');
}

/** One leaf of a details object: a scalar, or an empty object or array. `path` is canonical JSON of its keys and indexes. */
export interface AuditLeaf {
  path: string;
  segs: Array<string | number>;
  value: unknown;
}

/** Every leaf of `details` with its path (object keys as strings, array indexes as numbers). */
export function auditLeaves(details: unknown): AuditLeaf[] {
  const out: AuditLeaf[] = [];
  const walk = (v: unknown, segs: Array<string | number>): void => {
    if (Array.isArray(v) && v.length) v.forEach((x, i) => walk(x === undefined ? null : x, [...segs, i]));
    else if (isPlainObject(v) && Object.keys(v).some((k) => v[k] !== undefined)) {
      for (const k of Object.keys(v).sort()) if (v[k] !== undefined) walk(v[k], [...segs, k]);
    } else out.push({ path: JSON.stringify(segs), segs, value: v });
  };
  walk(details, []);
  return out;
}

/** sha256 over a leaf's own salt, its path and the canonical JSON of its value. */
export function auditLeafDigest(salt: string, path: string, value: unknown): string {
  return createHash('sha256').update(salt).update('\n').update(path).update('\n').update(canonicalJson(value)).digest('hex');
}

/** v2 with leaf digests: the digest the hash covers, over the sorted list of the leaves' digests. */
export function auditLeavesDigest(leaves: readonly string[]): string {
  return createHash('sha256').update('keel-audit-leaves\n').update(canonicalJson([...leaves].sort())).digest('hex');
}

/** A new (v2) audit record at `seq` after `prevHash`: details copied, a salted digest per leaf, hash. */
export function buildAuditRecord(input: { actor: { kind: AuditRecord['actor']['kind']; id: string }; action: string; subject: string; details?: Record<string, unknown> }, seq: number, prevHash: string): AuditRecord {
  const details = JSON.parse(JSON.stringify(input.details ?? {})) as Record<string, unknown>;
  const detailsSalts: Record<string, string> = {};
  const detailsLeaves: string[] = [];
  for (const l of auditLeaves(details)) {
    const salt = randomBytes(16).toString('hex');
    detailsSalts[l.path] = salt;
    detailsLeaves.push(auditLeafDigest(salt, l.path, l.value));
  }
  detailsLeaves.sort();
  const body: Omit<AuditRecord, 'hash'> = {
    v: 2,
    seq,
    time: nowIso(),
    actor: { kind: input.actor.kind, id: input.actor.id },
    action: input.action,
    subject: input.subject,
    details,
    detailsLeaves,
    detailsSalts,
    detailsDigest: auditLeavesDigest(detailsLeaves),
    prevHash,
  };
  return { ...body, hash: auditHash(body) };
}

/**
 * Checks a v2 record's details against its digest. With leaf digests: every leaf must match one of
 * the record's leaf digests (its salt, path and value), except `"[erased]"` leaves an erasure wrote
 * (no salt any more), and the digests left over must be exactly one per such erased leaf. Returns
 * the number of erased leaves, or the reason the details do not fit.
 */
export function checkAuditDetails(r: AuditRecord): { erasedLeaves: number } | { reason: string } {
  if (!r.detailsLeaves) {
    // written before leaf digests: one salt over all the details, which an erasure cannot keep
    if (r.erased) return { reason: 'erased record without leaf digests: its details cannot be proven' };
    if (!r.detailsSalt || auditDetailsDigest(r.detailsSalt, r.details) !== r.detailsDigest) return { reason: 'details do not match their digest (record altered)' };
    return { erasedLeaves: 0 };
  }
  if (auditLeavesDigest(r.detailsLeaves) !== r.detailsDigest) return { reason: 'leaf digests do not match the details digest (record altered)' };
  const left = new Map<string, number>();
  for (const d of r.detailsLeaves) left.set(d, (left.get(d) ?? 0) + 1);
  let erasedLeaves = 0;
  for (const l of auditLeaves(r.details)) {
    const salt = r.detailsSalts?.[l.path];
    const d = salt === undefined ? undefined : auditLeafDigest(salt, l.path, l.value);
    const n = d === undefined ? 0 : (left.get(d) ?? 0);
    if (n) left.set(d!, n - 1);
    // an "[erased]" the record was written with is proven like any value; one an erasure wrote has no salt
    else if (l.value === TOMBSTONE) erasedLeaves++;
    else return { reason: `details at ${l.path} do not match their digest (record altered)` };
  }
  let unmatched = 0;
  for (const n of left.values()) unmatched += n;
  if (unmatched !== erasedLeaves) return { reason: `details have ${erasedLeaves} erased leaves for ${unmatched} unmatched digests (record altered)` };
  return { erasedLeaves };
}

/** Walks a chain in seq order and names the first record that does not fit. */
export function verifyChain(records: Iterable<AuditRecord>): { ok: true; records: number; head: string | null } | { ok: false; records: number; brokenAt: number; reason: string } {
  let prev: AuditRecord | null = null;
  let n = 0;
  let erased = 0;
  // erased records not yet followed by a `customer.erased` record (every genuine erasure appends one)
  let awaiting: number | null = null;
  for (const r of records) {
    n++;
    const expectedSeq = prev ? prev.seq + 1 : 1;
    if (r.seq !== expectedSeq) return { ok: false, records: n, brokenAt: prev ? prev.seq + 1 : r.seq, reason: `expected record ${expectedSeq}, found ${r.seq} (records deleted or reordered)` };
    const expectedPrev = prev ? prev.hash : GENESIS_HASH;
    if (r.prevHash !== expectedPrev) return { ok: false, records: n, brokenAt: r.seq, reason: `prevHash does not match the hash of record ${r.seq - 1}` };
    if (auditHash(r) !== r.hash) return { ok: false, records: n, brokenAt: r.seq, reason: 'content does not match its hash (record altered)' };
    if (r.action === CUSTOMER_ERASED_ACTION) awaiting = null;
    if (r.v === 2) {
      const c = checkAuditDetails(r);
      if ('reason' in c) return { ok: false, records: n, brokenAt: r.seq, reason: c.reason };
      if (c.erasedLeaves > 0 || r.erased) {
        erased++;
        awaiting ??= r.seq;
      }
    }
    prev = r;
  }
  if (awaiting !== null) return { ok: false, records: n, brokenAt: awaiting, reason: `erased record ${awaiting} is not followed by a ${CUSTOMER_ERASED_ACTION} record` };
  return { ok: true, records: n, head: prev?.hash ?? null, ...(erased ? { erased } : {}) };
}

/** The audit action an erasure appends after rewriting audit details. */
export const CUSTOMER_ERASED_ACTION = 'customer.erased';

/**
 * The details of a v2 record (with leaf digests) with personal data erased: matching strings
 * become `"[erased]"`; a key that matches is renamed `"[erased]"` (`"[erased]#2"` ... when taken)
 * and every leaf under it becomes `"[erased]"`. Erased leaves lose their salts. Null when nothing
 * matched; `'unerasable'` when it matched a record written before leaf digests (its hash covers the
 * details themselves: rewriting them would break the chain).
 */
export function eraseAuditDetails(r: AuditRecord, sc: Scrubber): { details: Record<string, unknown>; detailsSalts: Record<string, string> } | 'unerasable' | null {
  if (r.v !== 2 || !r.detailsLeaves) return scrub(r.details, sc).changed ? 'unerasable' : null;
  let changed = false;
  const walk = (v: unknown, under: boolean): unknown => {
    if (Array.isArray(v) && v.length) return v.map((x) => walk(x === undefined ? null : x, under));
    if (isPlainObject(v) && Object.keys(v).some((k) => v[k] !== undefined)) {
      const out = Object.create(null) as Record<string, unknown>;
      const keys = Object.keys(v).filter((k) => v[k] !== undefined);
      for (const k of keys) {
        if (!isTombstoneKey(k) && sc.match?.(k)) {
          changed = true;
          let nk = TOMBSTONE;
          for (let i = 2; nk in out || (nk !== k && keys.includes(nk)); i++) nk = `${TOMBSTONE}#${i}`;
          out[nk] = walk(v[k], true);
        } else out[k] = walk(v[k], under);
      }
      return out;
    }
    if (v === TOMBSTONE) return v;
    if (under || (typeof v === 'string' && (sc.fields === 'all' || sc.match?.(v)))) {
      changed = true;
      return TOMBSTONE;
    }
    return v;
  };
  const details = walk(r.details, false) as Record<string, unknown>;
  if (!changed) return null;
  // a leaf keeps its salt while it still matches its digest (an erased one does not)
  const digests = new Set(r.detailsLeaves);
  const detailsSalts: Record<string, string> = {};
  for (const l of auditLeaves(details)) {
    const salt = r.detailsSalts?.[l.path];
    if (salt !== undefined && digests.has(auditLeafDigest(salt, l.path, l.value))) detailsSalts[l.path] = salt;
  }
  return { details, detailsSalts };
}

function isTombstoneKey(k: string): boolean {
  return k === TOMBSTONE || /^\[erased\]#\d+$/.test(k);
}

// ---- erasure -------------------------------------------------------------------------------

/** What an erasure writes in place of personal data. */
export const TOMBSTONE = '[erased]';
/** The event an erasure appends to the entity it rewrote. */
export const ERASED_EVENT = 'erased';
/**
 * The one event left of a history that retention compacted (`compactHistory`): its data holds
 * the state the removed events had built (`state`, `deleted`, `createdAt`, `updatedAt`) and what
 * was removed (`through`: the last removed version, `events`, `reason`).
 */
export const COMPACTED_EVENT = 'compacted';

/** The `compacted` event closing a compaction of an entity at snapshot `cur` (its state unchanged). */
export function planCompactedEvent(def: EntityTypeDef, entityId: string, cur: EntitySnapshot, removed: { events: number; firstCursor: number; lastCursor: number }, reason: string, rawMeta: unknown): { event: Omit<CommittedEvent, 'cursor'>; snapshot: EntitySnapshot; searchText: string } {
  const meta = checkMeta(def.name, entityId, rawMeta);
  const version = cur.version + 1;
  const data = { reason, through: cur.version, events: removed.events, firstCursor: removed.firstCursor, lastCursor: removed.lastCursor, state: cur.state, deleted: cur.deleted, createdAt: cur.createdAt, updatedAt: cur.updatedAt };
  const event: Omit<CommittedEvent, 'cursor'> = { eventId: newId(), entityType: def.name, entityId, version, type: COMPACTED_EVENT, data, schemaVersion: cur.schemaVersion, meta, time: nowIso() };
  return { event, snapshot: { ...cur, version }, searchText: searchTextOf(def, cur.state) };
}

export interface Scrubber {
  fields: ReadonlySet<string> | 'all' | null;
  match: ((s: string) => boolean) | null;
  /** lower-cased values, for a cheap "may contain" check before parsing */
  needles: string[];
  /** `needles` and their JSON-escaped forms: what to look for in stored JSON text */
  jsonNeedles: string[];
}

/** Values are matched case-insensitively as whole words (not inside a longer word or number). */
export function makeScrubber(fields: readonly string[] | 'all' | undefined, values: readonly string[] | undefined): Scrubber {
  const vals = [...new Set((values ?? []).map((v) => v.trim()).filter(Boolean))];
  for (const v of vals) if (v.length < 3) throw new InvalidQueryError(`erasure values must be at least 3 characters (got '${v}')`);
  const esc = (v: string) => v.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const re = vals.length ? new RegExp(`(?<![\\p{L}\\p{N}])(?:${vals.map(esc).join('|')})(?![\\p{L}\\p{N}])`, 'iu') : null;
  return {
    fields: fields === 'all' ? 'all' : fields?.length ? new Set(fields) : null,
    match: re ? (s: string) => re.test(s) : null,
    needles: vals.map((v) => v.toLowerCase()),
    // as the values appear inside JSON text (quotes, backslashes, control characters escaped)
    jsonNeedles: [...new Set(vals.flatMap((v) => [v.toLowerCase(), JSON.stringify(v).slice(1, -1).toLowerCase()]))],
  };
}

/** True when the text (plain or JSON) may hold one of the scrubber's values (a substring check; `scrub` decides). */
export function mayContain(sc: Scrubber, text: string): boolean {
  if (!sc.jsonNeedles.length) return false;
  const t = text.toLowerCase();
  return sc.jsonNeedles.some((n) => t.includes(n));
}

/** A copy of `v` with personal strings replaced by the tombstone; `changed` tells whether any was. */
export function scrub(v: unknown, sc: Scrubber, inField = false): { value: unknown; changed: boolean } {
  if (typeof v === 'string') {
    if (v !== TOMBSTONE && (inField || sc.fields === 'all' || sc.match?.(v))) return { value: TOMBSTONE, changed: true };
    return { value: v, changed: false };
  }
  if (Array.isArray(v)) {
    let changed = false;
    const out = v.map((x) => {
      const r = scrub(x, sc, inField);
      changed ||= r.changed;
      return r.value;
    });
    return changed ? { value: out, changed } : { value: v, changed };
  }
  if (isPlainObject(v)) {
    let changed = false;
    const out: Record<string, unknown> = {};
    const keys = Object.keys(v);
    for (const [k, x] of Object.entries(v)) {
      if (!isTombstoneKey(k) && sc.match?.(k)) {
        // a key naming the customer: renamed, and every string under it erased
        let nk = TOMBSTONE;
        for (let i = 2; nk in out || (nk !== k && keys.includes(nk)); i++) nk = `${TOMBSTONE}#${i}`;
        out[nk] = scrub(x, sc, true).value;
        changed = true;
        continue;
      }
      const r = scrub(x, sc, inField || (sc.fields !== null && sc.fields !== 'all' && sc.fields.has(k)));
      changed ||= r.changed;
      out[k] = r.value;
    }
    return changed ? { value: out, changed } : { value: v, changed };
  }
  return { value: v, changed: false };
}

/** The `erased` event closing an erasure of an entity at snapshot `cur` (no validation: the state may no longer fit its schema). */
export function planErasedEvent(def: EntityTypeDef, entityId: string, cur: EntitySnapshot, data: Record<string, unknown>, rawMeta: unknown): { event: Omit<CommittedEvent, 'cursor'>; snapshot: EntitySnapshot; searchText: string } {
  const meta = checkMeta(def.name, entityId, rawMeta);
  const time = nowIso();
  const version = cur.version + 1;
  const event: Omit<CommittedEvent, 'cursor'> = { eventId: newId(), entityType: def.name, entityId, version, type: ERASED_EVENT, data, schemaVersion: def.schemaVersion, meta, time };
  const next = reduceOne(def, cur, event);
  const snapshot: EntitySnapshot = { version, state: next.state, deleted: next.deleted, createdAt: cur.createdAt, updatedAt: time, schemaVersion: cur.schemaVersion };
  return { event, snapshot, searchText: searchTextOf(def, snapshot.state) };
}

export function checkAuditInput(rec: { actor: unknown; action: unknown; subject: unknown; details?: unknown }): void {
  checkActor('audit record', rec.actor);
  if (typeof rec.action !== 'string' || !rec.action) throw new InvalidQueryError('audit record needs an action');
  if (typeof rec.subject !== 'string') throw new InvalidQueryError('audit record needs a subject');
  if (rec.details !== undefined && !isPlainObject(rec.details)) throw new InvalidQueryError('audit details must be an object');
}

// ---- costs ---------------------------------------------------------------------------------

/** Zero cost totals, to add records to with {@link addCostRecord}. */
export function emptyTotals(): CostTotals {
  return { count: 0, tokensIn: 0, tokensOut: 0, tokensCached: 0, costUsd: 0, computeMs: 0 };
}

/** Adds one ledger record to running totals (count, tokens, cost, compute). */
export function addCostRecord(t: CostTotals, r: CostRecord): void {
  t.count++;
  t.tokensIn += r.tokensIn;
  t.tokensOut += r.tokensOut;
  t.tokensCached += r.tokensCached;
  t.costUsd += r.costUsd;
  t.computeMs += r.computeMs;
}

/** The totals with their USD rounded to 1e-9 (sums of float prices). */
export function roundUsd(t: CostTotals): CostTotals {
  return { ...t, costUsd: Math.round(t.costUsd * 1e9) / 1e9 };
}

/** Totals and groups over records already filtered by the adapter. */
export function summarizeCosts(records: Iterable<CostRecord>, by: CostDimension[], keep: number): CostReport {
  const totals = emptyTotals();
  const groups = new Map<string, { key: Partial<Record<CostDimension, string | null>>; totals: CostTotals }>();
  const kept: CostRecord[] = [];
  for (const r of records) {
    addCostRecord(totals, r);
    if (kept.length < keep) kept.push(r);
    if (by.length > 0) {
      const key: Partial<Record<CostDimension, string | null>> = {};
      for (const d of by) key[d] = r[d];
      const k = JSON.stringify(by.map((d) => r[d]));
      let g = groups.get(k);
      if (!g) groups.set(k, (g = { key, totals: emptyTotals() }));
      addCostRecord(g.totals, r);
    }
  }
  return {
    totals: roundUsd(totals),
    groups: [...groups.values()].map((g) => ({ key: g.key, totals: roundUsd(g.totals) })).sort((a, b) => b.totals.costUsd - a.totals.costUsd),
    records: kept,
  };
}

const nonNeg = z.number().finite().nonnegative();
const costSchema = z.strictObject({
  agent: z.string().max(200).optional(),
  capability: z.string().max(200).optional(),
  runId: z.string().max(200).optional(),
  customerId: z.string().max(200).optional(),
  entityType: z.string().max(200).optional(),
  entityId: z.string().max(200).optional(),
  model: z.string().max(200).optional(),
  tokensIn: z.number().int().nonnegative().optional(),
  tokensOut: z.number().int().nonnegative().optional(),
  tokensCached: z.number().int().nonnegative().optional(),
  costUsd: nonNeg.optional(),
  computeMs: nonNeg.optional(),
  details: z.record(z.string(), z.unknown()).optional(),
  traceId: z.string().max(200).optional(),
  time: z.iso.datetime({ offset: true }).optional(),
});

export function toCostRecord(input: unknown): CostRecord {
  const r = costSchema.safeParse(input);
  if (!r.success) throw new InvalidQueryError(`invalid cost record: ${issuesOf(r.error).map((i) => `${i.path}: ${i.message}`).join('; ')}`);
  const c = r.data;
  return {
    id: newId(),
    time: c.time ? new Date(c.time).toISOString() : nowIso(),
    agent: c.agent ?? null,
    capability: c.capability ?? null,
    runId: c.runId ?? null,
    customerId: c.customerId ?? null,
    entityType: c.entityType ?? null,
    entityId: c.entityId ?? null,
    model: c.model ?? null,
    tokensIn: c.tokensIn ?? 0,
    tokensOut: c.tokensOut ?? 0,
    tokensCached: c.tokensCached ?? 0,
    costUsd: c.costUsd ?? 0,
    computeMs: c.computeMs ?? 0,
    traceId: c.traceId ?? null,
    details: c.details ?? null,
  };
}

export const COST_DIMENSIONS: readonly CostDimension[] = ['agent', 'capability', 'runId', 'customerId', 'entityType', 'entityId', 'model'];

// ---- approvals -----------------------------------------------------------------------------

const approvalSchema = z.strictObject({
  id: z.string().regex(/^[A-Za-z0-9_-]{1,128}$/).optional(),
  action: z.string().min(1).max(200),
  subject: z.string().min(1).max(500),
  payload: z.unknown().optional(),
  requestedBy: actorSchema,
  deadline: z.iso.datetime({ offset: true }),
  correlationId: z.string().max(200).optional(),
});

export function checkApprovalInput(input: unknown): z.infer<typeof approvalSchema> {
  const r = approvalSchema.safeParse(input);
  if (!r.success) throw new InvalidQueryError(`invalid approval: ${issuesOf(r.error).map((i) => `${i.path}: ${i.message}`).join('; ')}`);
  return r.data;
}

export function checkDecision(d: unknown): { decision: 'approved' | 'rejected' | 'superseded'; by: EventMeta['actor']; reason?: string; text?: string } {
  const r = z
    .strictObject({ decision: z.enum(['approved', 'rejected', 'superseded']), by: actorSchema, reason: z.string().max(2000).optional(), text: z.string().max(200_000).optional() })
    .safeParse(d);
  if (!r.success) throw new InvalidQueryError(`invalid decision: ${issuesOf(r.error).map((i) => `${i.path}: ${i.message}`).join('; ')}`);
  return r.data;
}

export const DEFAULT_LEASE_MS = 60_000;

/** The one type an id belongs to, for lookups without a type. */
export function singleType(entityId: string, types: string[]): string {
  if (types.length === 0) throw new NotFoundError('entity', entityId);
  if (types.length > 1) throw new AmbiguousIdError(entityId, types);
  return types[0]!;
}
