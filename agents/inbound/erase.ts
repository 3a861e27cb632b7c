/**
 * Erasing a customer (the right to erasure): what of the inbound feature's data is a customer's
 * personal data, and the steps that remove it. The state store only offers the mechanism
 * (`redactEntity`, `redactRecords`, `compact`); this file knows which entities and fields belong
 * to a customer. `keel customer erase ID` runs it.
 *
 * ```ts
 * const plan = await planCustomerErasure(store, 'cus-3f…');          // what would go (no values printed)
 * const report = await eraseCustomer(plan, { store, memory, dataDir, actor, reason: 'GDPR request 42' });
 * report.state.records.audit;                                          // audit records whose details were erased
 * ```
 *
 * What goes, and how:
 * - the customer entity: its personal fields in every event and the state become `"[erased]"`; then
 *   the optional ones are removed, leaving `{ name: "[erased]", status, tags: [] }` (valid, so the
 *   same address writing again is attached to it by intake);
 * - its tickets and conversations: the personal fields ({@link TICKET_PERSONAL_FIELDS}) in every event and the state;
 * - the workflow runs that touched its tickets: their inputs and outputs, their tasks' recorded
 *   results (model prompts and answers, sends) and their approvals;
 * - the operator's triage examples taken from its tickets: erased and deleted;
 * - anywhere else in the store (other entities, audit details, approvals, recorded results, the
 *   cost ledger): every string holding the customer's address, name, handle or phone;
 *   its cost records keep their amounts and lose the strings of their details;
 * - memory: everything of the customer or sourced from its tickets, conversations or itself;
 * - files: outbox and quarantine mail to or from its addresses, its tickets' stored attachments.
 */
import { readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join, resolve, sep } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import type { Actor, CompactResult, EventInput, QueryPage, RedactCounts, StateStore } from '../../shared-state/index.ts';
import type { MemoryStore } from '../../memory/index.ts';
import { workflowRunType } from '../../workflows/index.ts';
import { CUSTOMER, TICKET, type CustomerState, type TicketState } from './ticket.ts';
import { TRIAGE_EXAMPLE } from './learned.ts';

/** Keys of a ticket (state and events) that hold what the customer wrote or what was written to them. */
export const TICKET_PERSONAL_FIELDS = [
  'subject', 'customerEmail', 'customerHandle', 'threadKey', 'from', 'to', 'text', 'summary', 'suggestion', 'entities', 'reasons', 'reason',
  'supersededReason', 'notified', 'filename', 'path', 'messageId', 'inReplyTo', 'references',
] as const;
/** Keys of a conversation that are personal. */
export const CONVERSATION_PERSONAL_FIELDS = ['subject', 'participants', 'from', 'text'] as const;
/** Keys of a workflow run that carry the messages it processed. */
export const RUN_PERSONAL_FIELDS = ['input', 'output', 'result', 'text', 'subject', 'from', 'to', 'error'] as const;

export const CONVERSATION = 'conversation';
const WORKFLOW_RUN = workflowRunType.name;

export interface ErasureTarget {
  entityType: string;
  entityId: string;
  fields: readonly string[] | 'all';
  delete?: boolean;
  /** appended (validated, as usual) after the erasure: leaves the entity in a state its schema accepts */
  then?: EventInput[];
}

/** Keys of the customer entity that are personal: erased, then the optional ones removed. */
export const CUSTOMER_PERSONAL_FIELDS = ['name', 'email', 'phone', 'company', 'tags', 'notes'] as const;

export interface ErasurePlan {
  customerId: string;
  /** a customer entity with that id exists */
  found: boolean;
  /** the entities rewritten field by field, the customer last */
  targets: ErasureTarget[];
  /**
   * The customer's identifying strings, erased wherever they occur in the store: email addresses,
   * phone, the name when it has two words or more, a handle of 6+ characters or with a digit or
   * `_.-` (shorter or one-word ones would match other people's text). Never print them.
   */
  values: string[];
  /** the customer's email addresses (for the outbox and quarantine) */
  addresses: string[];
  /** stored attachment files of the customer's messages */
  attachments: string[];
  /** memory: forget by customer id and by these source entity ids */
  memorySources: string[];
  /** the workflow runs that touched its tickets: their recorded task results (model prompts and answers) and approvals are erased whole */
  runs: string[];
}

/** Counts only: what an erasure changed (safe to print, to log and to put in the audit log). */
export interface ErasureReport {
  customerId: string;
  found: boolean;
  state: {
    /** entities rewritten by type (customer, ticket, conversation, workflow_run, triage_example) */
    entities: Record<string, number>;
    /** their stored events that changed */
    events: number;
    records: RedactCounts;
  };
  memory: { removed: number } | { skipped: string };
  files: { outbox: number; quarantine: number; attachments: number };
  compact: CompactResult;
  /** the `customer.erased` audit record's sequence number */
  auditSeq: number;
}

async function allOf<S>(store: Pick<StateStore, 'query'>, type: string, filter: Record<string, string>): Promise<Array<{ entityId: string; state: S }>> {
  const out: Array<{ entityId: string; state: S }> = [];
  for (let offset: number | null = 0; offset !== null; ) {
    const page: QueryPage<S> = await store.query<S>(type, { filter, limit: 1000, offset, includeDeleted: true });
    out.push(...page.items.map((e) => ({ entityId: e.entityId, state: e.state })));
    offset = page.nextOffset;
  }
  return out;
}

const addr = (a: string) => (/<([^<>]+)>\s*$/.exec(a)?.[1] ?? a).trim().toLowerCase();

/** Reads what belongs to the customer; changes nothing. */
export async function planCustomerErasure(store: Pick<StateStore, 'get' | 'query' | 'history' | 'typesOf'>, customerId: string): Promise<ErasurePlan> {
  const customer = await store.get<CustomerState & { phone?: string }>(CUSTOMER, customerId);
  const values = new Set<string>();
  const addresses = new Set<string>();
  const attachments = new Set<string>();
  const add = (v: string | undefined) => {
    const t = v?.trim();
    if (t && t.length >= 3 && t !== '[erased]') values.add(t);
  };
  // the store-wide scan erases every string containing a value as a whole word: a one-word name
  // ("Will", "Support") or a short handle would hit other people's data, so only distinctive ones go
  const addName = (v: string | undefined) => {
    const t = v?.trim();
    if (t && /\S\s+\S/.test(t) && t.length >= 5 && !t.includes('@')) add(t);
  };
  const addHandle = (v: string | undefined) => {
    const t = v?.trim().replace(/^@/, '');
    if (t && (t.length >= 6 || /[\d_.-]/.test(t))) add(t);
  };
  if (customer) {
    addName(customer.state.name);
    add(customer.state.phone);
    if (customer.state.email) {
      add(customer.state.email);
      addresses.add(customer.state.email.toLowerCase());
    }
    for (const t of customer.state.tags ?? []) if (t.startsWith('handle:')) addHandle(t.slice('handle:'.length));
  }
  const targets: ErasureTarget[] = [];
  const tickets = await allOf<TicketState>(store, TICKET, { customerId });
  const runs = new Set<string>();
  for (const t of tickets) {
    targets.push({ entityType: TICKET, entityId: t.entityId, fields: TICKET_PERSONAL_FIELDS });
    if (t.state.customerEmail) {
      add(t.state.customerEmail);
      addresses.add(t.state.customerEmail.toLowerCase());
    }
    addHandle(t.state.customerHandle);
    for (const m of t.state.messages ?? []) {
      if (m.direction === 'in' && m.from.includes('@')) {
        add(addr(m.from));
        addresses.add(addr(m.from));
      }
      for (const a of m.attachments ?? []) if (a.stored && a.path) attachments.add(a.path);
    }
    if (t.state.lastRunId) runs.add(t.state.lastRunId);
    // every run that wrote to the ticket carried its messages
    for (const e of await store.history(TICKET, t.entityId)) if (e.meta.correlationId) runs.add(e.meta.correlationId);
  }
  const conversations = await allOf<{ participants?: string[] }>(store, CONVERSATION, { customerId }).catch(() => []);
  for (const c of conversations) targets.push({ entityType: CONVERSATION, entityId: c.entityId, fields: CONVERSATION_PERSONAL_FIELDS });
  const runIds: string[] = [];
  for (const runId of runs) {
    if (!/^[A-Za-z0-9_-]{1,128}$/.test(runId)) continue;
    if (!(await store.typesOf(runId)).includes(WORKFLOW_RUN)) continue;
    runIds.push(runId);
    targets.push({ entityType: WORKFLOW_RUN, entityId: runId, fields: RUN_PERSONAL_FIELDS });
  }
  for (const t of tickets) {
    for (const ex of await allOf<unknown>(store, TRIAGE_EXAMPLE, { ticketId: t.entityId }).catch(() => [])) targets.push({ entityType: TRIAGE_EXAMPLE, entityId: ex.entityId, fields: 'all', delete: true });
  }
  // the customer stays (not deleted) as a valid tombstone: the same address writing again is
  // attached to it by intake (a deleted entity could not be updated, and its id derives from the address)
  if (customer) targets.push({ entityType: CUSTOMER, entityId: customerId, fields: CUSTOMER_PERSONAL_FIELDS, then: [{ type: 'updated', data: { email: null, phone: null, company: null, notes: null, tags: [] } }] });
  return {
    customerId,
    found: !!customer,
    targets,
    values: [...values],
    addresses: [...addresses],
    attachments: [...attachments],
    memorySources: [customerId, ...tickets.map((t) => t.entityId), ...conversations.map((c) => c.entityId)],
    runs: runIds,
  };
}

/** Mail files (`.eml`, and a quarantined mail's `.json`) under `dir` that name one of the addresses: deleted. */
function eraseMailFiles(dir: string, addresses: readonly string[]): number {
  if (!addresses.length) return 0;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return 0;
  }
  let n = 0;
  for (const name of names) {
    if (!/\.(eml|json)$/i.test(name)) continue;
    const p = join(dir, name);
    const text = readFileSync(p, 'latin1').toLowerCase();
    if (!addresses.some((a) => text.includes(a))) continue;
    rmSync(p, { force: true });
    n++;
  }
  return n;
}

/** Attachment files of the customer's messages, only inside `<dataDir>/attachments`. */
function eraseAttachments(dataDir: string, paths: readonly string[]): number {
  const root = resolve(dataDir, 'attachments') + sep;
  let n = 0;
  for (const p of paths) {
    const abs = resolve(p);
    if (!abs.startsWith(root)) continue;
    try {
      statSync(abs);
    } catch {
      continue;
    }
    rmSync(abs, { force: true });
    n++;
  }
  return n;
}

export interface EraseDeps {
  store: StateStore;
  /** the memory store (absent: memory is reported as skipped) */
  memory?: Pick<MemoryStore, 'forget'>;
  /** KEEL_DATA_DIR: the outbox, quarantine and attachments live under it */
  dataDir?: string;
  actor: Actor;
  reason: string;
  /** rebuild the SQLite file after the erasure (default true; see StateStore.compact) */
  vacuum?: boolean;
}

/** Runs a plan: the store, memory, files, compaction, then `customer.erased` in the audit log (counts only). */
export async function eraseCustomer(plan: ErasurePlan, d: EraseDeps): Promise<ErasureReport> {
  const entities: Record<string, number> = {};
  let events = 0;
  for (const t of plan.targets) {
    const r = await d.store.redactEntity(t.entityType, t.entityId, { fields: t.fields === 'all' ? 'all' : [...t.fields], values: plan.values, reason: d.reason, actor: d.actor, ...(t.delete ? { delete: true } : {}) });
    if (r.version === 0) continue;
    if (t.then?.length) await d.store.append(t.entityType, t.entityId, r.version, t.then, { actor: d.actor });
    entities[t.entityType] = (entities[t.entityType] ?? 0) + 1;
    events += r.events;
  }
  // task ids are `<runId>.<step>.<attempt>`: the idempotency keys of a run's tasks and effects contain `:<runId>.`
  const records = await d.store.redactRecords({ values: plan.values, customerId: plan.customerId, keysContaining: plan.runs.map((r) => `:${r}.`), correlationIds: plan.runs, reason: d.reason, actor: d.actor });
  let memory: ErasureReport['memory'] = { skipped: 'no memory store' };
  if (d.memory) {
    const gone = new Set<string>();
    for (const id of (await d.memory.forget({ customerId: plan.customerId })).ids) gone.add(id);
    for (const src of plan.memorySources) for (const id of (await d.memory.forget({ sourceEntityId: src })).ids) gone.add(id);
    memory = { removed: gone.size };
  }
  const files = d.dataDir
    ? { outbox: eraseMailFiles(join(d.dataDir, 'outbox'), plan.addresses), quarantine: eraseMailFiles(join(d.dataDir, 'quarantine'), plan.addresses), attachments: eraseAttachments(d.dataDir, plan.attachments) }
    : { outbox: 0, quarantine: 0, attachments: 0 };
  const audit = await d.store.appendAudit({
    actor: d.actor,
    action: 'customer.erased',
    subject: `customer/${plan.customerId}`,
    details: { reason: d.reason, found: plan.found, entities, events, records: { ...records }, memory, files, values: plan.values.length },
  });
  const compact = await d.store.compact({ vacuum: d.vacuum !== false });
  return { customerId: plan.customerId, found: plan.found, state: { entities, events, records }, memory, files, compact, auditSeq: audit.seq };
}

/**
 * Leaves no old copy of erased rows in an SQLite file another component wrote (the sqlite-vec
 * memory): merges every FTS5 index (dropping deleted entries), rebuilds the file (VACUUM) and
 * empties its WAL. Call it with the owner's connection closed.
 */
export function compactSqliteFile(path: string): { vacuumed: boolean; walTruncated: boolean } {
  const db = new DatabaseSync(path, { timeout: 5_000 });
  try {
    db.exec('PRAGMA secure_delete = ON');
    const fts = db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND sql LIKE '%USING fts5%'").all() as Array<{ name: string }>;
    for (const t of fts) {
      const q = `"${t.name.replace(/"/g, '""')}"`;
      db.exec(`INSERT INTO ${q}(${q}) VALUES ('optimize')`);
    }
    db.exec('VACUUM');
    const r = db.prepare('PRAGMA wal_checkpoint(TRUNCATE)').get() as { busy: number };
    return { vacuumed: true, walTruncated: Number(r.busy) === 0 };
  } finally {
    db.close();
  }
}
