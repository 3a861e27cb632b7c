import type { Command } from 'commander';
import { openCliStore } from '../context.ts';
import { parseSince } from '../args.ts';
import { InvalidQueryError, StateError, singleType, type AuditRecord, type CommittedEvent, type Entity, type StateStore } from '../../shared-state/index.ts';

/** The CSV export's columns; `version` and `details_digest` let a v2 record's hash be recomputed from the file. */
export const AUDIT_CSV_COLUMNS = ['seq', 'time', 'actor_kind', 'actor_id', 'action', 'subject', 'details', 'prev_hash', 'hash', 'version', 'details_digest'] as const;

/** One CSV field (RFC 4180): quoted when it holds a comma, a quote, CR or LF (quotes doubled) or starts/ends with a space. */
export function csvField(v: string): string {
  return /[",\r\n]|^\s|\s$/.test(v) ? `"${v.replace(/"/g, '""')}"` : v;
}

/** One CSV record, CRLF-terminated (RFC 4180). */
export function csvLine(fields: readonly string[]): string {
  return `${fields.map(csvField).join(',')}\r\n`;
}

export function auditCsvRow(r: AuditRecord): string[] {
  return [String(r.seq), r.time, r.actor.kind, r.actor.id, r.action, r.subject, JSON.stringify(r.details), r.prevHash, r.hash, String(r.v ?? 1), r.detailsDigest ?? ''];
}

async function withStore<T>(fn: (s: StateStore) => Promise<T>): Promise<T> {
  const store = await openCliStore();
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

function int(name: string, min = 0) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new InvalidQueryError(`${name} must be an integer >= ${min} (got '${v}')`);
    return n;
  };
}

function collect(v: string, prev: string[] = []): string[] {
  return [...prev, ...v.split(',').map((s) => s.trim()).filter(Boolean)];
}

/** `status=open` → `{ status: 'open' }`; numbers, true/false and null are parsed. */
function parseWhere(pairs: string[]): Record<string, string | number | boolean | null> {
  const out: Record<string, string | number | boolean | null> = {};
  for (const p of pairs) {
    const i = p.indexOf('=');
    if (i <= 0) throw new InvalidQueryError(`--where takes field=value (got '${p}')`);
    const raw = p.slice(i + 1);
    out[p.slice(0, i)] = raw === 'true' ? true : raw === 'false' ? false : raw === 'null' ? null : raw !== '' && !Number.isNaN(Number(raw)) ? Number(raw) : raw;
  }
  return out;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n');
}

function summary(state: unknown, max = 60): string {
  const s = state as Record<string, unknown>;
  const label = ['name', 'title', 'subject'].map((k) => s[k]).find((v) => typeof v === 'string') as string | undefined;
  const status = ['status', 'lifecycle'].map((k) => s[k]).find((v) => typeof v === 'string') as string | undefined;
  const text = [label, status ? `[${status}]` : undefined].filter(Boolean).join(' ') || JSON.stringify(state);
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function actorOf(e: CommittedEvent): string {
  return `${e.meta.actor.kind}:${e.meta.actor.id}`;
}

function printEntity(e: Entity): void {
  console.log(`${e.entityType} ${e.entityId}  version ${e.version}${e.deleted ? '  (deleted)' : ''}`);
  console.log(`created ${e.createdAt}  updated ${e.updatedAt}  schema v${e.schemaVersion}`);
  console.log(JSON.stringify(e.state, null, 2));
}

function printEvents(events: CommittedEvent[]): void {
  if (events.length === 0) return;
  console.log(
    table([
      ['CURSOR', 'TIME', 'ENTITY', 'VER', 'EVENT', 'ACTOR', 'CORRELATION'],
      ...events.map((e) => [String(e.cursor), e.time, `${e.entityType}/${e.entityId}`, String(e.version), e.type, actorOf(e), e.meta.correlationId ?? '']),
    ]),
  );
}

/** `keel entity ...`, `keel changes`, `keel audit ...` (shared-state). */
export function registerState(program: Command): void {
  const entity = program.command('entity').description('Read canonical entities (customers, products, tasks, tickets, ...) from the state store (KEEL_STATE).');

  entity
    .command('list')
    .description('List entities of one type, newest first.')
    .requiredOption('--type <type>', 'entity type, e.g. ticket')
    .option('--where <field=value>', 'filter on a state field (repeatable)', (v: string, p: string[] = []) => [...p, v])
    .option('--limit <n>', 'at most this many (default 50)', int('--limit', 1))
    .option('--offset <n>', 'skip this many', int('--offset'))
    .option('--deleted', 'include deleted entities')
    .option('--json', 'print JSON')
    .action(async (o: { type: string; where?: string[]; limit?: number; offset?: number; deleted?: boolean; json?: boolean }) => {
      const page = await withStore((s) =>
        s.query(o.type, { filter: parseWhere(o.where ?? []), sort: { updatedAt: 'desc' }, limit: o.limit, offset: o.offset, includeDeleted: o.deleted }),
      );
      if (o.json) return console.log(JSON.stringify(page));
      if (page.items.length === 0) return console.log(`no ${o.type} entities`);
      console.log(table([['ID', 'VER', 'UPDATED', 'SUMMARY'], ...page.items.map((e) => [e.entityId, String(e.version), e.updatedAt, summary(e.state) + (e.deleted ? ' (deleted)' : '')])]));
      console.log(`\n${page.items.length} of ${page.total}${page.nextOffset !== null ? ` (next: --offset ${page.nextOffset})` : ''}`);
    });

  entity
    .command('show')
    .description('Show an entity: current state, state at a version, or its full history.')
    .argument('<id>', 'entity id')
    .option('--type <type>', 'entity type (needed only when the id exists in several types)')
    .option('--at <version>', 'state as it was at this version', int('--at', 1))
    .option('--history', 'every event, oldest first')
    .option('--json', 'print JSON')
    .action(async (id: string, o: { type?: string; at?: number; history?: boolean; json?: boolean }) => {
      await withStore(async (s) => {
        const type = o.type ?? singleType(id, await s.typesOf(id));
        if (o.history) {
          const events = await s.history(type, id);
          if (events.length === 0) throw new StateError('STATE_NOT_FOUND', `${type} '${id}' not found`);
          if (o.json) return console.log(JSON.stringify({ entityType: type, entityId: id, events }));
          console.log(table([['VER', 'TIME', 'EVENT', 'ACTOR', 'CAUSATION', 'CORRELATION', 'DATA'], ...events.map((e) => [String(e.version), e.time, e.type, actorOf(e), e.meta.causationId ?? '', e.meta.correlationId ?? '', JSON.stringify(e.data).slice(0, 80)])]));
          return;
        }
        const e = o.at ? await s.getAt(type, id, o.at) : await s.get(type, id);
        if (!e) throw new StateError('STATE_NOT_FOUND', `${type} '${id}'${o.at ? ` has no version ${o.at}` : ' not found'}`);
        if (o.json) return console.log(JSON.stringify(e));
        printEntity(e);
      });
    });

  program
    .command('changes')
    .description('The change log: what changed after a cursor (--after, from the last call\'s "next"), or since a time (--since).')
    .option('--after <cursor>', 'only changes after this cursor (default 0: from the start)', int('--after'))
    .option('--since <when>', 'only changes at or after this time: a duration (15m, 2h, 7d) or an ISO time')
    .option('--type <type>', 'only these entity types (repeatable or comma-separated)', collect)
    .option('--limit <n>', 'at most this many events (default 100)', int('--limit', 1))
    .option('--json', 'print JSON: { events, cursor, hasMore }')
    .action(async (o: { after?: number; since?: string; type?: string[]; limit?: number; json?: boolean }) => {
      const since = o.since !== undefined ? parseSince(o.since, { afterHint: '--after' }) : undefined;
      const page = await withStore(async (s) => {
        if (!since) return s.changes({ since: o.after ?? 0, types: o.type, limit: o.limit });
        // by time: walk the log from the cursor to the first change at or after `since`
        // (times grow with cursors, up to clock skew between writers)
        const limit = o.limit ?? 100;
        let cursor = o.after ?? 0;
        for (;;) {
          const p = await s.changes({ since: cursor, types: o.type, limit: 1000 });
          const i = p.events.findIndex((e) => e.time >= since);
          if (i >= 0) {
            const first = p.events[i]!.cursor - 1;
            const r = await s.changes({ since: first, types: o.type, limit });
            return { ...r, events: r.events.filter((e) => e.time >= since) };
          }
          if (!p.hasMore) return { ...p, events: [] };
          cursor = p.cursor;
        }
      });
      if (o.json) return console.log(JSON.stringify(page));
      if (page.events.length === 0) console.log(since ? `no changes since ${since}` : `no changes after cursor ${o.after ?? 0}`);
      printEvents(page.events);
      console.log(`\nnext: keel changes --after ${page.cursor}${page.hasMore ? '   (more are waiting)' : ''}`);
    });

  const audit = program.command('audit').description('The tamper-evident audit log (a SHA-256 hash chain).');

  audit
    .command('export')
    .description('Print the audit log, oldest first: JSON Lines (default) or CSV with a header row.')
    .option('--after <seq>', 'only records after this sequence number', int('--after'))
    .option('--since <when>', 'only records at or after this time: a duration (15m, 2h, 7d) or an ISO time')
    .option('--format <f>', `jsonl (one record per line) or csv (columns: ${AUDIT_CSV_COLUMNS.join(', ')}; details as JSON)`, 'jsonl')
    .option('--json', 'the output is JSON Lines either way (errors then print as JSON too)')
    .action(async (o: { after?: number; since?: string; format: string }) => {
      if (o.format !== 'jsonl' && o.format !== 'csv') throw new InvalidQueryError(`--format takes jsonl or csv (got '${o.format}')`);
      const since = o.since !== undefined ? parseSince(o.since, { afterHint: '--after' }) : undefined;
      const recs = await withStore((s) => s.exportAudit({ sinceSeq: o.after }));
      if (o.format === 'csv') process.stdout.write(csvLine(AUDIT_CSV_COLUMNS));
      for (const r of recs) if (!since || r.time >= since) process.stdout.write(o.format === 'csv' ? csvLine(auditCsvRow(r)) : `${JSON.stringify(r)}\n`);
    });

  audit
    .command('verify')
    .description('Recompute the hash chain; exit 1 and name the first broken record when it was tampered with.')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }) => {
      const v = await withStore((s) => s.verifyAudit());
      if (o.json) console.log(JSON.stringify(v));
      else if (v.ok) console.log(`audit log intact: ${v.records} records${v.head ? `, head ${v.head}` : ''}${v.erased ? ` (${v.erased} with erased details, verified by their digest)` : ''}`);
      else console.error(`audit log BROKEN at record ${v.brokenAt}: ${v.reason}`);
      if (!v.ok) process.exitCode = 1;
    });
}
