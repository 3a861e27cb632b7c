import type { Command } from 'commander';
import type { StoredDeadLetter } from '../../bus/index.ts';
import type { RunState } from '../../workflows/index.ts';
import { openCli, print, table, type CliContext } from '../context.ts';
import { CliError } from '../errors.ts';
import { intArg } from '../args.ts';

const AUDIT_ACTION = 'dlq.redriven';

function seqArg(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new CliError('CLI_BAD_ARGUMENT', `a dead letter is named by its sequence number (from \`keel dlq list\`); got '${v}'`, { details: { value: v } });
  return n;
}

/** Re-drives recorded in the audit log, by dead-letter sequence. */
async function redrives(c: CliContext): Promise<Map<number, Array<{ at: string; by: string; messageId: string }>>> {
  const out = new Map<number, Array<{ at: string; by: string; messageId: string }>>();
  for (const r of await c.store.exportAudit({ limit: 100_000 })) {
    if (r.action !== AUDIT_ACTION) continue;
    const seq = Number(r.details.seq);
    out.set(seq, [...(out.get(seq) ?? []), { at: r.time, by: `${r.actor.kind}:${r.actor.id}`, messageId: String(r.details.messageId) }]);
  }
  return out;
}

async function describe(c: CliContext, l: StoredDeadLetter, redriven: Map<number, Array<{ at: string; by: string; messageId: string }>>) {
  const { runCoordinates } = await import('../../workflows/index.ts');
  const rc = runCoordinates(l.headers);
  return {
    seq: l.seq,
    capability: l.capability,
    reason: l.reason,
    error: l.error,
    deadAt: l.deadAt,
    deliveries: l.deliveries,
    subject: l.subject,
    taskId: l.headers['Nats-Msg-Id'] ?? null,
    run: rc ? { id: rc.runId, step: rc.step, attempt: rc.attempt, role: rc.role } : null,
    redriven: redriven.get(l.seq) ?? [],
  };
}

export function registerDlq(program: Command): void {
  const dlq = program.command('dlq').description('Dead letters: tasks a capability gave up on, with the reason (the <P>_DLQ stream).');

  dlq
    .command('list')
    .option('--capability <name>', 'only this capability\'s dead letters')
    .option('--limit <n>', 'at most this many, newest first', intArg('--limit', 1), 50)
    .option('--json', 'print JSON: { letters: [{ seq, capability, reason, error, deadAt, deliveries, subject, taskId, run, redriven }], total }')
    .description('Dead letters, newest first: capability, reason, error, the run and step they belong to, and whether they were re-driven.')
    .action(async (o: { capability?: string; limit: number; json?: boolean }) => {
      const c = await openCli({ bus: true });
      try {
        const { listDeadLetters } = await import('../../bus/index.ts');
        const r = await listDeadLetters(c.bus!, { capability: o.capability, limit: o.limit });
        const done = await redrives(c);
        const letters = await Promise.all(r.letters.map((l) => describe(c, l, done)));
        print(o.json, { letters, total: r.total }, () => {
          if (letters.length === 0) return console.log(`no dead letters${o.capability ? ` for ${o.capability}` : ''}`);
          table(
            ['SEQ', 'DEAD AT', 'CAPABILITY', 'REASON', 'RUN / STEP', 'ERROR'],
            letters.map((l) => [String(l.seq), l.deadAt, l.capability, `${l.reason}${l.redriven.length ? ' (re-driven)' : ''}`, l.run ? `${l.run.id} ${l.run.step}` : '', l.error.message.replace(/\s+/g, ' ').slice(0, 80)]),
          );
          console.log(`\n${letters.length} of ${r.total}. keel dlq show SEQ; keel dlq redrive SEQ`);
        });
      } finally {
        await c.close();
      }
    });

  dlq
    .command('show')
    .argument('<seq>', 'the dead letter\'s sequence number (from `keel dlq list`)')
    .option('--json', 'print JSON: the letter (reason, error, original subject, headers, body) with its run')
    .description('One dead letter: reason, error, the original task (subject, headers, body) and the state of its run.')
    .action(async (seqText: string, o: { json?: boolean }) => {
      const seq = seqArg(seqText);
      const c = await openCli({ bus: true });
      try {
        const { getDeadLetter } = await import('../../bus/index.ts');
        const l = await getDeadLetter(c.bus!, seq);
        if (!l) throw new CliError('NOT_FOUND', `no dead letter ${seq} (see \`keel dlq list\`)`);
        const d = await describe(c, l, await redrives(c));
        const run = d.run ? (await c.store.get<RunState>('workflow_run', d.run.id))?.state : undefined;
        let body: unknown = l.body;
        if (l.bodyEncoding === 'utf8') {
          try {
            body = JSON.parse(l.body);
          } catch {
            /* not JSON: shown as text */
          }
        }
        const out = { ...d, stream: l.stream, streamSeq: l.streamSeq, consumer: l.consumer, headers: l.headers, body, bodyEncoding: l.bodyEncoding, runState: run ? { status: run.status, error: run.error ?? null, step: d.run ? (run.steps[d.run.step] ?? null) : null } : null };
        print(o.json, out, () => {
          console.log(`dead letter ${l.seq}  ${l.capability}  ${l.reason}  ${l.deadAt}  after ${l.deliveries} deliver${l.deliveries === 1 ? 'y' : 'ies'}`);
          console.log(`error [${l.error.code}] ${l.error.message}`);
          console.log(`task ${d.taskId ?? '?'} on ${l.subject} (stream ${l.stream} #${l.streamSeq})`);
          if (d.run) console.log(`run ${d.run.id} step ${d.run.step} attempt ${d.run.attempt}${run ? `: run ${run.status}${run.error ? ` (${run.error})` : ''}` : ''}`);
          for (const r of d.redriven) console.log(`re-driven ${r.at} by ${r.by} as ${r.messageId}`);
          console.log(`\nbody (${l.bodyEncoding}):\n${typeof body === 'string' ? body : JSON.stringify(body, null, 2)}`);
        });
      } finally {
        await c.close();
      }
    });

  dlq
    .command('redrive')
    .argument('<seq>', 'the dead letter\'s sequence number')
    .option('--force', 'send it even when its workflow step has moved on (the task may then run twice)')
    .option('--json', 'print JSON: { seq, messageId, subject, streamSeq, run }')
    .description('Send the original task again as a new delivery (same idempotency key); its workflow step waits for it again. Recorded in the audit log and the run.')
    .action(async (seqText: string, o: { force?: boolean; json?: boolean }) => {
      const seq = seqArg(seqText);
      const c = await openCli({ bus: true });
      try {
        const [{ getDeadLetter, redriveDeadLetter }, { runCoordinates }] = await Promise.all([import('../../bus/index.ts'), import('../../workflows/index.ts')]);
        const l = await getDeadLetter(c.bus!, seq);
        if (!l) throw new CliError('NOT_FOUND', `no dead letter ${seq} (see \`keel dlq list\`)`);
        const rc = runCoordinates(l.headers);
        let reopened = false;
        if (rc && rc.role === 'step') {
          // the step waits for the new delivery (a failed run runs again); refused when it moved on
          reopened = await c.workflows!.redrive(rc.runId, rc.step, rc.attempt, { stream: l.stream, seq });
          if (!reopened && !o.force) {
            const st = (await c.store.get<RunState>('workflow_run', rc.runId))?.state;
            throw new CliError('CLI_BAD_ARGUMENT', `run ${rc.runId} step ${rc.step} is ${st?.steps[rc.step]?.status ?? 'gone'} (attempt ${st?.steps[rc.step]?.attempt ?? '?'}), not the failed attempt ${rc.attempt} of this letter: re-driving it could do the work twice. Use \`keel run retry ${rc.runId} --from ${rc.step}\`, or --force`);
          }
        }
        const r = await redriveDeadLetter(c.bus!, seq);
        await c.store.appendAudit({ actor: c.workflows!.actor, action: AUDIT_ACTION, subject: `dlq/${seq}`, details: { seq, stream: l.stream, subject: r.subject, messageId: r.messageId, streamSeq: r.streamSeq, reason: l.reason, ...(rc ? { runId: rc.runId, step: rc.step, attempt: rc.attempt, reopened } : {}) } });
        const out = { seq, messageId: r.messageId, subject: r.subject, streamSeq: r.streamSeq, duplicate: r.duplicate, run: rc ? { id: rc.runId, step: rc.step, reopened } : null };
        print(o.json, out, () => console.log(`re-drove dead letter ${seq} to ${r.subject} as ${r.messageId}${r.duplicate ? ' (already re-driven: the bus kept the first)' : ''}${rc ? `; run ${rc.runId} step ${rc.step} ${reopened ? 'waits for it' : 'had moved on'}` : ''}`));
      } finally {
        await c.close();
      }
    });
}
