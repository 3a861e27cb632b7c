/**
 * Typed errors of the test kit (server helpers for tests and benchmarks). Every one is a
 * {@link KeelError}; check them by `code`.
 */
import { KeelError } from '../config/index.ts';

export type TestkitErrorCode =
  /** `waitFor` gave up: the condition did not hold before its deadline */
  | 'TESTKIT_TIMEOUT'
  /** a server the kit started exited before it was ready */
  | 'TESTKIT_SERVER_EXITED'
  /** a server's query API answered with an error status */
  | 'TESTKIT_QUERY_FAILED';

export class TestkitError extends KeelError {
  declare readonly code: TestkitErrorCode;
  constructor(code: TestkitErrorCode, message: string, opts: { cause?: unknown; retryable?: boolean } = {}) {
    super(code, message, opts);
    this.name = 'TestkitError';
  }
}
