/**
 * Typed errors of the workflow engine. Check them by `code` (stable across processes and package
 * copies), not only with `instanceof`. Every one is a {@link KeelError}; definition errors are
 * {@link WorkflowDefinitionError} (definition.ts).
 */
import { KeelError } from '../config/index.ts';

/** One problem with a run's input or an approval's edited text: the field, and what is wrong. */
export interface FieldIssue {
  /** dotted path of the field, e.g. `message.customer` or `text` */
  path: string;
  message: string;
  /** the step (and its capability) whose input schema refused it, when that is where it comes from */
  step?: string;
  capability?: string;
}

export class WorkflowError extends KeelError {
  declare readonly code:
    | 'WORKFLOW_NOT_FOUND'
    | 'WORKFLOW_RUN_NOT_FOUND'
    | 'WORKFLOW_CONTENDED'
    | 'WORKFLOW_APPROVAL_NOT_FOUND'
    | 'WORKFLOW_BAD_REQUEST'
    /** a run's input or an approval's edited text does not satisfy the schema that would consume it (`issues`) */
    | 'WORKFLOW_INVALID_INPUT'
    /** the approval was superseded by a newer one (`current` names it, when there is one yet) */
    | 'WORKFLOW_APPROVAL_SUPERSEDED'
    /** an id prefix matches more than one run or approval (`candidates`) */
    | 'WORKFLOW_AMBIGUOUS_ID';
  readonly issues: FieldIssue[] | undefined;
  readonly current: string | undefined;
  readonly candidates: string[] | undefined;
  /** `current` and `candidates` for machines (the CLI prints `details` with `--json`) */
  readonly details: Record<string, unknown> | undefined;
  constructor(code: WorkflowError['code'], message: string, opts: boolean | { retryable?: boolean; issues?: FieldIssue[]; current?: string; candidates?: string[] } = false) {
    const o = typeof opts === 'boolean' ? { retryable: opts } : opts;
    super(code, message, { retryable: o.retryable ?? false });
    this.name = 'WorkflowError';
    this.issues = o.issues;
    this.current = o.current;
    this.candidates = o.candidates;
    const details = { ...(o.current ? { current: o.current } : {}), ...(o.candidates ? { candidates: o.candidates } : {}) };
    this.details = Object.keys(details).length ? details : undefined;
  }
}
