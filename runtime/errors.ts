/** Typed errors of the agent runtime (check by `code`). Every one is a {@link KeelError}. */
import { KeelError } from '../config/index.ts';

export type AgentErrorCode =
  | 'AGENT_PERMISSION_DENIED'
  | 'AGENT_CIRCUIT_OPEN'
  | 'AGENT_EFFECT_IN_PROGRESS'
  | 'AGENT_TASK_IN_PROGRESS'
  | 'AGENT_BAD_OUTPUT'
  | 'AGENT_UNKNOWN'
  | 'AGENT_BUDGET_EXCEEDED'
  | 'AGENT_INVALID_DEFINITION'
  /** the bus credentials file has no entry for an agent that should run */
  | 'AGENT_NO_CREDENTIALS'
  /** replay met something it cannot answer from the log (internal to `replayRun`) */
  | 'AGENT_REPLAY_STOPPED';

export class AgentError extends KeelError {
  declare readonly code: AgentErrorCode;
  declare readonly nextDelayMs: number | undefined;
  constructor(code: AgentErrorCode, message: string, opts: { retryable?: boolean; nextDelayMs?: number; cause?: unknown } = {}) {
    super(code, message, opts);
    this.name = 'AgentError';
  }
}

/** The agent tried to touch something its manifest does not declare. Never retried. */
export class PermissionDeniedError extends AgentError {
  readonly agent: string;
  readonly resource: string;
  constructor(agent: string, resource: string) {
    super('AGENT_PERMISSION_DENIED', `agent '${agent}' is not allowed to use ${resource}: declare it in the agent's manifest`);
    this.name = 'PermissionDeniedError';
    this.agent = agent;
    this.resource = resource;
  }
}

export class CircuitOpenError extends AgentError {
  readonly connector: string;
  constructor(connector: string, retryInMs: number) {
    super('AGENT_CIRCUIT_OPEN', `connector '${connector}' is failing; its circuit is open for another ${retryInMs} ms`, { retryable: true, nextDelayMs: retryInMs });
    this.name = 'CircuitOpenError';
    this.connector = connector;
  }
}

export class BudgetExceededError extends AgentError {
  constructor(budgetUsd: number, wantedUsd: number) {
    super('AGENT_BUDGET_EXCEEDED', `task budget of $${budgetUsd} would be exceeded (wanted $${wantedUsd})`);
    this.name = 'BudgetExceededError';
  }
}

/** An agent, capability or feature declaration (or the module that should hold one) is invalid. */
export class DefinitionError extends AgentError {
  constructor(message: string) {
    super('AGENT_INVALID_DEFINITION', message);
    this.name = 'DefinitionError';
  }
}
