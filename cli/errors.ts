/**
 * Typed errors of the `keel` command. Every one is a {@link KeelError}: `keel` prints it as
 * `error [CODE]: message` (or `{"error":"CODE","message":...}` on stdout with `--json`, plus the
 * error's `details`) and exits 1. Usage errors found by the argument parser (unknown option,
 * missing argument, a value outside an option's choices) follow the same contract; see
 * {@link usageErrorCode}.
 */
import { KeelError } from '../config/index.ts';

export type CliErrorCode =
  /** an option or argument value is malformed or out of range (also: a value outside an option's choices) */
  | 'CLI_BAD_ARGUMENT'
  /** a JSON option (`--input`, `--data` …) does not parse */
  | 'CLI_BAD_JSON'
  /** a bad `keel cost` argument (kept from before CliError: scripts match it) */
  | 'COST_BAD_ARGUMENT'
  /** `keel ticket show <id>`: no such ticket */
  | 'TICKET_NOT_FOUND'
  /** `keel why <id>`: neither a ticket nor a run */
  | 'NOT_FOUND'
  /** the data dir (KEEL_DATA_DIR / KEEL_STATE) holds no Keel store: wrong directory, or `keel init` was never run */
  | 'CLI_NO_STORE'
  /** nothing answers on the bus the CLI would use: no engine running there */
  | 'CLI_NO_ENGINE'
  /** the bus refused the CLI's credentials: the data dir is not the running engine's */
  | 'CLI_BUS_AUTH'
  /** usage: no such command */
  | 'CLI_UNKNOWN_COMMAND'
  /** usage: no such option for this command */
  | 'CLI_UNKNOWN_OPTION'
  /** usage: a required argument is missing */
  | 'CLI_MISSING_ARGUMENT'
  /** usage: a required option is missing */
  | 'CLI_MISSING_OPTION'
  /** usage: an option was given without its value */
  | 'CLI_MISSING_OPTION_VALUE'
  /** usage: more arguments than the command takes */
  | 'CLI_TOO_MANY_ARGUMENTS'
  /** usage: two options that exclude each other */
  | 'CLI_CONFLICTING_OPTIONS'
  /** usage: any other usage error */
  | 'CLI_USAGE';

export class CliError extends KeelError {
  declare readonly code: CliErrorCode;
  /** more for machines, printed with `--json` (e.g. `valid` values, the `dataDir` used) */
  readonly details: Record<string, unknown> | undefined;
  constructor(code: CliErrorCode, message: string, opts: { cause?: unknown; details?: Record<string, unknown> } = {}) {
    super(code, message, { cause: opts.cause, retryable: false });
    this.name = 'CliError';
    this.details = opts.details;
  }
}

/** commander's error codes → the CLI's (UPPER_SNAKE, like every other Keel error code). */
const USAGE_CODES: Record<string, CliErrorCode> = {
  'commander.unknownCommand': 'CLI_UNKNOWN_COMMAND',
  'commander.unknownOption': 'CLI_UNKNOWN_OPTION',
  'commander.missingArgument': 'CLI_MISSING_ARGUMENT',
  'commander.missingMandatoryOptionValue': 'CLI_MISSING_OPTION',
  'commander.optionMissingArgument': 'CLI_MISSING_OPTION_VALUE',
  'commander.invalidArgument': 'CLI_BAD_ARGUMENT',
  'commander.excessArguments': 'CLI_TOO_MANY_ARGUMENTS',
  'commander.conflictingOption': 'CLI_CONFLICTING_OPTIONS',
};

/** The CLI error code of a commander usage error (`commander.unknownOption` → `CLI_UNKNOWN_OPTION`). */
export function usageErrorCode(commanderCode: string): CliErrorCode {
  return USAGE_CODES[commanderCode] ?? 'CLI_USAGE';
}
