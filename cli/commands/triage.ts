/**
 * What the learned triage tier learned from the operator (issue 18):
 *
 *   keel triage examples [--all] [--limit N] [--json]   the operator's labeled examples (active; --all: forgotten too)
 *   keel triage forget ID [--json]          takes one out of training (kept, marked forgotten; audited)
 *   keel ticket retriage ID --intent I …    (registered on `keel ticket` by tickets.ts) records one
 *
 * After a change the CLI asks a
 * triage replica to retrain (`triage.learn` on the bus) when an engine is running; otherwise every
 * replica retrains in the background on its next triage.
 */
import type { Command } from 'commander';
import { z } from 'zod';
import { INTENTS, URGENCIES, forgetExample, listExamples, recordExample, type Intent, type TriageExampleState, type Urgency } from '../../agents/inbound/index.ts';
import { openCli, print, table, type CliContext } from '../context.ts';
import { CliError } from '../errors.ts';
import { isStateError } from '../../shared-state/index.ts';
import { enumOption } from '../args.ts';

/**
 * Enqueues `triage.learn` when an engine's bus answers: `queued`, or why not (the examples are
 * stored either way; replicas pick them up on their next triage).
 */
export async function requestRetrain(reason: string): Promise<{ queued: boolean; note?: string }> {
  let c: CliContext | undefined;
  try {
    c = await openCli({ bus: true });
    const { defineMessage } = await import('../../bus/index.ts');
    await c.bus!.publish(c.bus!.subjects.task('triage.learn'), defineMessage('task.triage.learn', z.unknown()), { reason }, { idempotencyKey: `triage.learn:${reason}` });
    return { queued: true };
  } catch (err) {
    const code = (err as { code?: string }).code;
    return { queued: false, note: `no engine reachable${code ? ` (${code})` : ''}: triage replicas retrain on their next triage` };
  } finally {
    await c?.close().catch(() => undefined);
  }
}

const line = (x: TriageExampleState & { id: string }) => [
  x.id, x.status, x.intent, x.urgency ?? '', x.escalate === undefined ? '' : x.escalate ? 'yes' : 'no',
  x.previous ? `${x.previous.intent}${x.previous.escalate !== undefined ? (x.previous.escalate ? '/esc' : '') : ''}` : '', x.source, x.by, x.at.slice(0, 19),
  (x.subject ? `${x.subject}: ` : '') + x.text.replace(/\s+/g, ' ').slice(0, 50),
];

export function registerTriage(program: Command): void {
  const triage = program.command('triage').description('What the learned triage tier learned from the operator.');
  triage
    .command('examples')
    .option('--all', 'forgotten examples too')
    .option('--limit <n>', 'at most this many', (v) => Number(v), 200)
    .option('--json', 'print JSON: { examples: [...], total }')
    .description("The operator's labeled examples (from `keel ticket retriage`), newest first.")
    .action(async (o: { all?: boolean; limit: number; json?: boolean }) => {
      if (!Number.isInteger(o.limit) || o.limit < 1) throw new CliError('CLI_BAD_ARGUMENT', `--limit must be a positive integer, got '${String(o.limit)}'`);
      const c = await openCli();
      try {
        const examples = await listExamples(c.store, { ...(o.all ? {} : { status: 'active' as const }), limit: o.limit });
        print(o.json, { examples, total: examples.length }, () =>
          examples.length === 0
            ? console.log(`no ${o.all ? '' : 'active '}examples: \`keel ticket retriage ID --intent I\` records one`)
            : table(['ID', 'STATUS', 'INTENT', 'URGENCY', 'ESCALATE', 'WAS', 'SOURCE', 'BY', 'AT', 'MESSAGE'], examples.map(line)),
        );
      } finally {
        await c.close();
      }
    });
  triage
    .command('forget')
    .argument('<id>', 'an example id (tex-…), from `keel triage examples`')
    .option('--json', 'print JSON: { id, status, retrain }')
    .description('Takes an example out of training (it stays, marked forgotten, with who and when); replicas retrain without it.')
    .action(async (id: string, o: { json?: boolean }) => {
      const c = await openCli();
      let state: TriageExampleState | undefined;
      try {
        state = await forgetExample(c.store, id, { kind: 'human', id: c.cfg.operator });
      } finally {
        await c.close();
      }
      if (!state) throw new CliError('NOT_FOUND', `no triage example '${id}': see \`keel triage examples --all\``);
      const retrain = await requestRetrain(`forget ${id}`);
      print(o.json, { id, status: state.status, forgottenBy: state.forgottenBy ?? null, forgottenAt: state.forgottenAt ?? null, retrain }, () => {
        console.log(`forgot ${id} (${state.intent}: ${state.text.replace(/\s+/g, ' ').slice(0, 60)})`);
        console.log(retrain.queued ? 'retraining queued (triage.learn)' : retrain.note);
      });
    });
}

interface RetriageTicket {
  subject: string;
  messages: Array<{ id: string; direction: 'in' | 'out'; subject?: string; text: string; at: string }>;
  triage?: { intent: string; urgency: 'low' | 'normal' | 'high'; sentiment: 'negative' | 'neutral' | 'positive'; entities: string[]; confidence: number; tier: number; escalate: boolean; reasons: string[]; messageId?: string; language?: string };
}

/**
 * `keel ticket retriage ID --intent I [--urgency U] [--escalate|--no-escalate] [--message M] [--json]`:
 * the operator's triage of a ticket's message. It becomes the ticket's triage (event `triaged`,
 * by the operator) and a labeled example the learned tier trains on; a replica is asked to retrain.
 */
/** The operator's correction of a ticket's triage, as `keel ticket retriage` and `keel approve|reject --intent` record it. */
export interface TriageCorrection {
  intent: Intent;
  urgency?: Urgency;
  escalate?: boolean;
  /** the message (default: the customer's latest) */
  message?: string;
  /** where the correction was made: `keel ticket retriage`, or an approval decided with `--intent` */
  source: 'retriage' | 'approval';
  /** the approval, when `source` is `approval` */
  approvalId?: string;
}

/**
 * Relabels a ticket (a `triaged` event with the operator's labels) and records the message as a
 * labeled example the learned tier trains on (with who, when, where, and what triage had said).
 */
export async function retriageTicket(c: Awaited<ReturnType<typeof openCli>>, id: string, o: TriageCorrection) {
  const t = await c.store.get<RetriageTicket>('ticket', id);
  if (!t || t.deleted) throw new CliError('TICKET_NOT_FOUND', `no ticket '${id}': see \`keel tickets\``);
  const msg = o.message ? t.state.messages.find((m) => m.id === o.message) : [...t.state.messages].reverse().find((m) => m.direction === 'in');
  if (!msg) throw new CliError(o.message ? 'NOT_FOUND' : 'CLI_BAD_ARGUMENT', o.message ? `ticket '${id}' has no message '${o.message}'` : `ticket '${id}' has no message from the customer`);
  const actor = { kind: 'human' as const, id: c.cfg.operator };
  const prev = t.state.triage;
  const example = await recordExample(c.store, {
    text: msg.text.slice(0, 20_000),
    ...(msg.subject ?? t.state.subject ? { subject: (msg.subject ?? t.state.subject).slice(0, 1000) } : {}),
    intent: o.intent,
    ...(o.urgency ? { urgency: o.urgency } : {}),
    ...(o.escalate !== undefined ? { escalate: o.escalate } : {}),
    ...(prev ? { previous: { intent: prev.intent, urgency: prev.urgency, escalate: prev.escalate, tier: prev.tier, confidence: prev.confidence } } : {}),
    source: o.source,
    ticketId: id,
    messageId: msg.id,
    by: c.cfg.operator,
  }, actor);
  const triageOf = (cur: RetriageTicket['triage']) => ({
    intent: o.intent,
    urgency: o.urgency ?? cur?.urgency ?? 'normal',
    sentiment: cur?.sentiment ?? 'neutral',
    entities: cur?.entities ?? [],
    confidence: 1,
    tier: cur?.tier ?? 0,
    escalate: o.escalate ?? cur?.escalate ?? false,
    reasons: [`operator ${c.cfg.operator} retriaged${o.approvalId ? ` (deciding approval ${o.approvalId})` : ''}: intent ${o.intent}${o.urgency ? `, urgency ${o.urgency}` : ''}${o.escalate !== undefined ? `, ${o.escalate ? '' : 'no '}escalation` : ''} (was ${prev ? `${prev.intent}, ${prev.urgency}${prev.escalate ? ', escalated' : ''}` : 'not triaged'}); example ${example.id}`, ...(cur?.reasons ?? [])].slice(0, 50),
    messageId: msg.id,
    ...(cur?.language ? { language: cur.language } : {}),
  });
  // the ticket may change meanwhile (deciding an approval dispatches its send, whose agent
  // appends the outbound message): on a version conflict read it again and append on top
  let cur = t;
  let triage = triageOf(cur.state.triage);
  for (let attempt = 0; ; attempt++) {
    try {
      await c.store.append('ticket', id, cur.version, [{ type: 'triaged', data: triage }], { actor });
      break;
    } catch (err) {
      if (!isStateError(err, 'STATE_VERSION_CONFLICT') || attempt >= 20) throw err;
      await new Promise((r) => setTimeout(r, Math.random() * 10 * (attempt + 1)));
      const again = await c.store.get<RetriageTicket>('ticket', id);
      if (!again || again.deleted) throw new CliError('TICKET_NOT_FOUND', `ticket '${id}' was deleted meanwhile`);
      cur = again;
      triage = triageOf(cur.state.triage);
    }
  }
  return { ticketId: id, messageId: msg.id, example, previous: prev ? { intent: prev.intent, urgency: prev.urgency, escalate: prev.escalate, tier: prev.tier, confidence: prev.confidence } : null, triage };
}

export function addRetriageCommand(ticket: Command): void {
  ticket
    .command('retriage')
    .argument('<id>', 'a ticket id (tkt-…)')
    .addOption(enumOption('--intent <intent>', 'the right intent', INTENTS).makeOptionMandatory())
    .addOption(enumOption('--urgency <urgency>', 'the right urgency', URGENCIES))
    .option('--escalate', 'the operator must see it at once')
    .option('--no-escalate', 'no escalation')
    .option('--message <id>', "the message (default: the customer's latest)")
    .option('--json', 'print JSON: { ticketId, messageId, example: { id, replaced }, previous, triage, retrain }')
    .description("Corrects a ticket's triage: the ticket takes the operator's labels, and the message becomes a labeled example the learned tier learns from.")
    .action(async (id: string, o: { intent: Intent; urgency?: Urgency; escalate?: boolean; message?: string; json?: boolean }) => {
      const c = await openCli();
      let out;
      try {
        out = await retriageTicket(c, id, { ...o, source: 'retriage' });
      } finally {
        await c.close();
      }
      const retrain = await requestRetrain(`retriage ${out.example.id}@${Date.now()}`);
      print(o.json, { ...out, retrain }, () => {
        console.log(`${id}: ${out.previous ? `${out.previous.intent} -> ` : ''}${out.triage.intent}, urgency ${out.triage.urgency}${out.triage.escalate ? ', escalate' : ''}`);
        console.log(`example ${out.example.id} ${out.example.replaced ? 'replaced' : 'recorded'} (see \`keel triage examples\`, undo with \`keel triage forget ${out.example.id}\`)`);
        console.log(retrain.queued ? 'retraining queued (triage.learn)' : retrain.note);
      });
    });
}
