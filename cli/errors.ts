/**
 * Typed errors of the `keel` command. Every one is a {@link KeelError}: `keel` prints it as
 * `error [CODE]: message` (or `{"error":"CODE","message":...}` with `--json`) and exits 1.
 */
import { KeelError } from '../config/index.ts';

export type CliErrorCode =
  /** an option or argument value is malformed or out of range */
  | 'CLI_BAD_ARGUMENT'
  /** a JSON option (`--input`, `--data` …) does not parse */
  | 'CLI_BAD_JSON'
  /** a bad `keel cost` argument (kept from before CliError: scripts match it) */
  | 'COST_BAD_ARGUMENT'
  /** `keel ticket show <id>`: no such ticket */
  | 'TICKET_NOT_FOUND'
  /** `keel why <id>`: neither a ticket nor a run */
  | 'NOT_FOUND';

export class CliError extends KeelError {
  declare readonly code: CliErrorCode;
  constructor(code: CliErrorCode, message: string, opts: { cause?: unknown } = {}) {
    super(code, message, { cause: opts.cause, retryable: false });
    this.name = 'CliError';
  }
}
