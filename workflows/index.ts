/**
 * Declared workflows, advanced without a coordinator: a run is an event-sourced `workflow_run`
 * entity; whoever completes a step, answers an approval or fires a timer plans the next move
 * with a pure function and appends it with the expected version.
 *
 * ```ts
 * import { defineWorkflow, WorkflowEngine, workflowRunType } from './workflows/index.ts';
 * const greet = defineWorkflow({ name: 'greet', version: 1, steps: { hello: { capability: 'greet.hello', input: { name: '$.input.name' } } } });
 * const store = await openStore(url, { types: [workflowRunType] });
 * const engine = new WorkflowEngine({ store, bus, actor: { kind: 'system', id: 'me' }, catalog: { greet } });
 * const { runId } = await engine.start('greet', { name: 'Ada' });
 * ```
 *
 * See docs/workflows.md.
 */
export { defineWorkflow, WorkflowDefinitionError, WorkflowSchema, StepSchema, ConditionSchema } from './definition.ts';
export type { WorkflowDef, WorkflowInput, StepDef, Condition, Mapping } from './definition.ts';
export { getPath, resolveMapping, evaluate } from './expr.ts';
export type { EvalContext } from './expr.ts';
export {
  planStart, planOutcome, planWake, planDispatchFailed, planApproval, planRetryFrom, planCancel, planLane, planSupersede, planRedrive, definitionOf,
  taskIdOf, approvalIdOf, isFinalDeadLetter, REDISPATCH_AFTER_MS, DEFAULT_STEP_TIMEOUT_MS, LANE_RETRY_MS, LANE_RECHECK_MS, FAILURE_STEP,
} from './decide.ts';
export type { Role, Effect, PolicyMode, Plan, StepOutcome } from './decide.ts';
export { WorkflowEngine, WorkflowError, RUN_HEADERS, runCoordinates } from './engine.ts';
export type { WorkflowEngineOptions } from './engine.ts';
export type { FieldIssue } from './errors.ts';
export { loadWorkflowCatalog, workflowCapabilities } from './catalog.ts';
export { startTriggers } from './triggers.ts';
export { workflowRunType, reduceRun } from './run-entity.ts';
export type { RunState, RunStatus, StepState, StepStatus, RunLane, StepDeadLetter } from './run-entity.ts';
export { workflowLaneType, reduceLane, laneIdOf, planJoin, planRelease, planCommit, LANE } from './lane.ts';
export type { LaneState, LaneDecision } from './lane.ts';
export { resolveRunId, resolveApprovalId, currentApprovalOf } from './ids.ts';
export { registryTaskSchemas, localTaskSchemas, schemaIssues } from './schemas.ts';
export type { TaskSchemaSource } from './schemas.ts';
import { workflowRunType as runType } from './run-entity.ts';
import { workflowLaneType as laneType } from './lane.ts';
/** The entity types the workflow engine writes: every store that runs workflows must know them. */
export const WORKFLOW_ENTITY_TYPES = [runType, laneType] as const;
