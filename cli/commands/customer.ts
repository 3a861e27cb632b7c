import type { Command } from 'commander';
import { loadConfig } from '../../config/index.ts';
import { openCliStore } from '../context.ts';
import { CliError } from '../errors.ts';

/** `keel customer erase`: the right to erasure, across the state store, memory, the ledger, the outbox and the audit log. */
export function registerCustomer(program: Command): void {
  const customer = program.command('customer').description('A customer\'s personal data (docs/audit-and-erasure.md).');

  customer
    .command('erase')
    .description(
      'Erase a customer\'s personal data: the customer (kept as a tombstone: its personal fields become "[erased]"), the personal fields of its tickets, conversations and their runs (every stored event, not only the current state), ' +
        'its address/name anywhere else in the store (audit details, approvals, recorded results, cost details; amounts stay), its memories, outbox/quarantine mail and attachments. ' +
        'Appends customer.erased (counts only) to the audit log, which still verifies. Without --yes: shows what would be erased and changes nothing.',
    )
    .argument('<customer>', 'the customer: id (cus-…), email address or chat handle')
    .option('--yes', 'really erase (it cannot be undone)')
    .option('--reason <text>', 'why (recorded in the audit log and the erased events)', 'erasure request')
    .option('--no-vacuum', 'skip rebuilding the SQLite file (VACUUM) afterwards: the erased rows are overwritten (secure_delete), but copies left in free space by earlier updates stay until the next VACUUM')
    .option('--json', 'print JSON: { erased: false, plan } without --yes, else { erased: true, report }')
    .action(async (who: string, o: { yes?: boolean; reason: string; vacuum: boolean; json?: boolean }) => {
      const cfg = loadConfig();
      const store = await openCliStore(cfg);
      const [{ resolveCustomer }, { planCustomerErasure, eraseCustomer, compactSqliteFile }] = await Promise.all([import('../../agents/index.ts'), import('../../agents/inbound/index.ts')]);
      let report: Awaited<ReturnType<typeof eraseCustomer>> | undefined;
      let memoryCompacted: ReturnType<typeof compactSqliteFile> | undefined;
      let plan: Awaited<ReturnType<typeof planCustomerErasure>>;
      try {
        const c = await resolveCustomer(store, who);
        if (!c.id || !/^[A-Za-z0-9_-]{1,128}$/.test(c.id)) throw new CliError('CLI_BAD_ARGUMENT', `'${who}' names no customer id (give an id, an email address or a handle)`);
        plan = await planCustomerErasure(store, c.id);
        if (!plan.found && plan.targets.length === 0) {
          const costs = await store.costs({ customerId: c.id });
          if (costs.totals.count === 0) throw new CliError('NOT_FOUND', `no customer '${who}' (nothing in the store names ${c.id})`, { details: { customerId: c.id } });
        }
        if (o.yes) {
          const { openCliMemory } = await import('./memory.ts');
          const memory = await openCliMemory(cfg).catch(() => undefined);
          try {
            report = await eraseCustomer(plan, { store, memory, dataDir: cfg.dataDir, actor: { kind: 'human', id: cfg.operator }, reason: o.reason, vacuum: o.vacuum });
          } finally {
            await memory?.close();
          }
          // the embedded memory file: merge its full-text index and rebuild it, so nothing forgotten stays in free pages
          const file = cfg.memory.startsWith('sqlite-vec:') ? cfg.memory.slice('sqlite-vec:'.length) : undefined;
          if (file && o.vacuum && report.memory && 'removed' in report.memory && report.memory.removed > 0) memoryCompacted = compactSqliteFile(file);
        }
      } finally {
        await store.close();
      }
      const summary = {
        customerId: plan.customerId,
        found: plan.found,
        entities: plan.targets.reduce<Record<string, number>>((m, t) => ({ ...m, [t.entityType]: (m[t.entityType] ?? 0) + 1 }), {}),
        identifiers: plan.values.length,
        addresses: plan.addresses.length,
        attachments: plan.attachments.length,
      };
      if (!report) {
        if (o.json) console.log(JSON.stringify({ erased: false, plan: summary }));
        else {
          console.log(`would erase customer ${summary.customerId}${summary.found ? '' : ' (no customer entity; its other records only)'}:`);
          for (const [t, n] of Object.entries(summary.entities)) console.log(`  ${t}: ${n}`);
          console.log(`  identifying values searched everywhere: ${summary.identifiers}; stored attachments: ${summary.attachments}`);
          console.log('nothing changed: run again with --yes to erase');
        }
        return;
      }
      const full = { ...report, ...(memoryCompacted ? { memoryFile: memoryCompacted } : {}) };
      if (o.json) {
        console.log(JSON.stringify({ erased: true, report: full }));
        return;
      }
      const r = report.state.records;
      console.log(`erased customer ${report.customerId} (audit record ${report.auditSeq})`);
      console.log(`  entities: ${Object.entries(report.state.entities).map(([t, n]) => `${t} ${n}`).join(', ') || 'none'}; events rewritten: ${report.state.events}`);
      console.log(`  elsewhere: entities ${r.entities}, audit ${r.audit}, approvals ${r.approvals}, recorded results ${r.idempotency}, cost records ${r.costs}`);
      if (r.auditUnerasable) console.log(`  WARNING: ${r.auditUnerasable} audit record(s) written before erasable details (v1) still hold the data: their hash covers it`);
      console.log(`  memory: ${'removed' in report.memory ? `${report.memory.removed} removed` : report.memory.skipped}; files: outbox ${report.files.outbox}, quarantine ${report.files.quarantine}, attachments ${report.files.attachments}`);
      console.log(`  store file: ${report.compact.vacuumed ? 'rebuilt' : 'not rebuilt'}${report.compact.walTruncated === false ? ' (WAL still in use by another process: run keel customer erase again when idle)' : ''}`);
    });
}
