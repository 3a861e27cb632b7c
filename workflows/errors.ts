/**
 * Typed errors of the workflow engine. Check them by `code` (stable across processes and package
 * copies), not only with `instanceof`. Every one is a {@link KeelError}; definition errors are
 * {@link WorkflowDefinitionError} (definition.ts).
 */
import { KeelError } from '../config/index.ts';

export class WorkflowError extends KeelError {
  declare readonly code: 'WORKFLOW_NOT_FOUND' | 'WORKFLOW_RUN_NOT_FOUND' | 'WORKFLOW_CONTENDED' | 'WORKFLOW_APPROVAL_NOT_FOUND' | 'WORKFLOW_BAD_REQUEST';
  constructor(code: WorkflowError['code'], message: string, retryable = false) {
    super(code, message, { retryable });
    this.name = 'WorkflowError';
  }
}
