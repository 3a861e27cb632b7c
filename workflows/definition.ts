import { z } from 'zod';
import { KeelError } from '../config/index.ts';

/** A value mapped from the run: `'$.input.x'`, `'$.steps.triage.output.y'`, literals, nested objects. */
export type Mapping = unknown;

/**
 * When a step runs (or a trigger fires): compare a path of the run's context with a value.
 * `matches` is a JavaScript regular expression (no flags), checked by `defineWorkflow`; it is
 * true only for a string value that matches.
 */
export const ConditionSchema = z.union([
  z.strictObject({ path: z.string().startsWith('$.'), equals: z.unknown() }),
  z.strictObject({ path: z.string().startsWith('$.'), notEquals: z.unknown() }),
  z.strictObject({ path: z.string().startsWith('$.'), in: z.array(z.unknown()) }),
  z.strictObject({ path: z.string().startsWith('$.'), truthy: z.boolean() }),
  z.strictObject({ path: z.string().startsWith('$.'), matches: z.string() }),
]);
export type Condition = z.infer<typeof ConditionSchema>;

const RetrySchema = z.strictObject({
  /** attempts of the step in all (default 1: a dead-lettered task fails the step) */
  maxAttempts: z.number().int().min(1).max(100).default(1),
  backoffMs: z.number().int().min(0).default(1_000),
  factor: z.number().min(1).default(2),
});

const ApprovalSchema = z.strictObject({
  /** what is being approved, e.g. `email.send` */
  action: z.string().min(1),
  /** shown to the operator; mapped from the run */
  payload: z.unknown().optional(),
  subject: z.unknown().optional(),
  deadlineMs: z.number().int().positive(),
  /**
   * the policy that governs this action (mapped, e.g. `reply.email`): `approve` (default) waits
   * for the operator, `audit` lets it through and records it in the audit log, `auto` lets it through
   */
  policy: z.unknown().optional(),
  /** what happens when nobody answers in time */
  onTimeout: z.union([z.literal('reject'), z.literal('approve'), z.strictObject({ escalate: z.string().min(1), input: z.unknown().optional() })]).default('reject'),
});

export const StepSchema = z
  .strictObject({
    /** the capability that does the work (agents are never named) */
    capability: z.string().regex(/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/).optional(),
    /** a human approval gate instead of a capability */
    approval: ApprovalSchema.optional(),
    /** steps that must be completed (or skipped) first; none = starts with the run */
    after: z.array(z.string()).default([]),
    when: ConditionSchema.optional(),
    input: z.unknown().optional(),
    /**
     * not before this time (mapped from the run, e.g. `$.steps.schedule.output.pageAt`): an ISO
     * 8601 string with a zone, or epoch ms. A ready step whose time is still ahead waits
     * (status `waiting`, a durable timer of the run); undefined/null or a past time: at once;
     * anything else fails the step for good.
     */
    notBefore: z.unknown().optional(),
    retry: RetrySchema.optional(),
    /** the step fails an attempt when it takes longer (default 5 min) */
    timeoutMs: z.number().int().positive().optional(),
    /** undo for an external side effect; runs (in reverse order) when a later step fails for good */
    compensate: z.strictObject({ capability: z.string().min(1), input: z.unknown().optional() }).optional(),
  })
  .refine((s) => !!s.capability !== !!s.approval, { message: 'a step has either a capability or an approval' });
export type StepDef = z.infer<typeof StepSchema>;

export const WorkflowSchema = z.strictObject({
  name: z.string().regex(/^[a-z0-9][a-z0-9-]*$/, 'lowercase letters, digits and -'),
  version: z.number().int().min(1),
  description: z.string().optional(),
  /** start a run for each matching entity event, e.g. `ticket.created` */
  trigger: z
    .strictObject({
      event: z.string().regex(/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/),
      /** start a run only when this holds, read from `{ input: { event } }`, e.g. `$.input.event.data.inReplyTo` */
      when: ConditionSchema.optional(),
    })
    .optional(),
  /** USD a run may spend; the next step is not started once it is spent */
  budgetUsd: z.number().positive().optional(),
  /**
   * a zod schema the run's input must satisfy (or a function that loads it, so that modules
   * which only list workflows do not load it): `start` refuses anything else, with the fields
   * named, before a run exists. Kept in memory only (not in the run's stored definition).
   */
  inputSchema: z
    .custom<z.ZodType | (() => Promise<z.ZodType>)>((v) => typeof v === 'function' || (!!v && typeof (v as { safeParse?: unknown }).safeParse === 'function'), 'a zod schema, or a function returning a promise of one')
    .optional(),
  /**
   * per-key serialization: a mapping of the run (e.g. `$.steps.intake.output.ticketId`); once it
   * resolves to a non-empty string the run joins that key's lane, and no further step starts
   * until the run holds it. Runs of one key hold the lane one at a time, in order.
   */
  concurrencyKey: z.unknown().optional(),
  /**
   * with `concurrencyKey`: the newest run of a key wins. A run joining the lane supersedes the
   * holder unless the holder has already started step `before` (it then waits for the holder to
   * finish), and any older run still waiting. A superseded run ends `superseded`; its pending
   * approvals are marked superseded with `reason` (mapped from the newer run) and can no longer
   * be approved.
   */
  supersede: z.strictObject({ before: z.string().min(1), reason: z.unknown().optional() }).optional(),
  /** when a run fails: dispatch this escalation task once (input mapped; `$.run.error` is the reason) */
  onFailure: z.strictObject({ escalate: z.string().regex(/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/), input: z.unknown().optional() }).optional(),
  steps: z.record(z.string().regex(/^[A-Za-z0-9_-]+$/), StepSchema),
});
export type WorkflowDef = z.infer<typeof WorkflowSchema>;
export type WorkflowInput = z.input<typeof WorkflowSchema>;

export class WorkflowDefinitionError extends KeelError {
  declare readonly code: 'WORKFLOW_INVALID';
  readonly issues: string[];
  constructor(name: string, issues: string[]) {
    super('WORKFLOW_INVALID', `workflow '${name}' is invalid:\n  ${issues.join('\n  ')}`);
    this.name = 'WorkflowDefinitionError';
    this.issues = issues;
  }
}

/** Definitions made by {@link defineWorkflow}: given one again, it is returned as it is. */
const DEFINED = new WeakSet<object>();

/**
 * Validates a definition: schema, known dependencies, no cycles. A definition it made already is
 * returned as it is (the engine resolves the definition on every start).
 */
export function defineWorkflow(def: WorkflowInput): WorkflowDef {
  if (typeof def === 'object' && def !== null && DEFINED.has(def)) return def as WorkflowDef;
  const parsed = WorkflowSchema.safeParse(def);
  const name = (def as { name?: string }).name ?? '(unnamed)';
  if (!parsed.success) throw new WorkflowDefinitionError(name, parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`));
  const w = parsed.data;
  const issues: string[] = [];
  const ids = Object.keys(w.steps);
  if (ids.length === 0) issues.push('steps: at least one step');
  for (const [id, s] of Object.entries(w.steps)) for (const d of s.after) if (!w.steps[d]) issues.push(`steps.${id}.after: unknown step '${d}'`);
  const checkCondition = (where: string, c: Condition | undefined) => {
    if (!c || !('matches' in c)) return;
    try {
      new RegExp(c.matches);
    } catch (err) {
      issues.push(`${where}.matches: invalid regular expression /${c.matches}/: ${(err as Error).message}`);
    }
  };
  for (const [id, s] of Object.entries(w.steps)) checkCondition(`steps.${id}.when`, s.when);
  checkCondition('trigger.when', w.trigger?.when);
  if (w.supersede && w.concurrencyKey === undefined) issues.push('supersede: needs a concurrencyKey');
  if (w.supersede && !w.steps[w.supersede.before]) issues.push(`supersede.before: unknown step '${w.supersede.before}'`);
  // cycle check (DFS)
  const state = new Map<string, 1 | 2>();
  const visit = (id: string, path: string[]): void => {
    if (state.get(id) === 2) return;
    if (state.get(id) === 1) {
      issues.push(`steps: cycle ${[...path, id].join(' -> ')}`);
      return;
    }
    state.set(id, 1);
    for (const d of w.steps[id]?.after ?? []) if (w.steps[d]) visit(d, [...path, id]);
    state.set(id, 2);
  };
  for (const id of ids) visit(id, []);
  if (issues.length) throw new WorkflowDefinitionError(w.name, issues);
  DEFINED.add(w);
  return w;
}
