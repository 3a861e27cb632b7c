/** Typed errors of the benchmarks. Every one is a {@link KeelError}; check them by `code`. */
import { KeelError } from '../config/index.ts';

export type BenchErrorCode =
  /** no server to measure against (none configured, none could be started) */
  | 'BENCH_NO_SERVER'
  /** some of the measured runs never finished */
  | 'BENCH_INCOMPLETE'
  /** a bench's own flag is unknown or has a bad value */
  | 'BENCH_BAD_FLAG';

export class BenchError extends KeelError {
  declare readonly code: BenchErrorCode;
  constructor(code: BenchErrorCode, message: string, opts: { cause?: unknown; retryable?: boolean } = {}) {
    super(code, message, opts);
    this.name = 'BenchError';
  }
}
