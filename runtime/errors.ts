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
  | 'AGENT_REPLAY_STOPPED'
  /** Node's permission model refused the handler a resource (ERR_ACCESS_DENIED): not in the agent's sandbox */
  | 'AGENT_SANDBOX_DENIED';

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

/**
 * A handler touched what its process's sandbox does not allow (Node's permission model threw
 * ERR_ACCESS_DENIED; docs/sandbox.md). Never retried: the same task would be denied again, so it is
 * dead-lettered with this error and its workflow step fails.
 */
export class SandboxDeniedError extends AgentError {
  readonly agent: string;
  readonly capability: string;
  /** the permission Node refused: FileSystemRead, FileSystemWrite, ChildProcess, WorkerThreads, Addon ... */
  readonly permission: string;
  /** what it was refused on (a path), when Node says */
  readonly resource: string | undefined;
  constructor(agent: string, capability: string, permission: string, resource: string | undefined, cause?: unknown) {
    const hint = permission === 'FileSystemRead' ? 'sandbox.fsRead' : permission === 'FileSystemWrite' ? 'sandbox.fsWrite' : permission === 'ChildProcess' ? 'sandbox.childProcess' : permission === 'WorkerThreads' ? 'sandbox.workers' : 'its sandbox';
    super('AGENT_SANDBOX_DENIED', `AGENT_SANDBOX_DENIED: agent '${agent}' (capability '${capability}') was denied ${permission}${resource ? ` on ${resource}` : ''} by its sandbox; declare it in the agent's ${hint} if it needs it (docs/sandbox.md)`, { cause });
    this.name = 'SandboxDeniedError';
    this.agent = agent;
    this.capability = capability;
    this.permission = permission;
    this.resource = resource;
  }
}

/**
 * The sandbox refusal in `err` or its causes (Node's ERR_ACCESS_DENIED with its `permission` and
 * `resource`), as a {@link SandboxDeniedError}; undefined when there is none.
 */
export function sandboxDenial(err: unknown, agent: string, capability: string): SandboxDeniedError | undefined {
  let e: unknown = err;
  for (let depth = 0; depth < 8 && typeof e === 'object' && e !== null; depth++) {
    const x = e as { code?: unknown; permission?: unknown; resource?: unknown; cause?: unknown };
    if (x.code === 'AGENT_SANDBOX_DENIED' && e instanceof SandboxDeniedError) return e;
    if (x.code === 'ERR_ACCESS_DENIED') {
      return new SandboxDeniedError(agent, capability, typeof x.permission === 'string' ? x.permission : 'access', typeof x.resource === 'string' ? x.resource : undefined, err);
    }
    e = x.cause;
  }
  return undefined;
}
