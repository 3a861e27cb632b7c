/**
 * Typed errors of the embedded engine (`keel start`). Check them by `code`, not only with
 * `instanceof`. Every one is a {@link KeelError}; a missing nats-server binary is the bus's
 * `LocalServerError` (`BUS_SERVER_NOT_FOUND`).
 */
import { KeelError } from '../config/index.ts';

export type EngineErrorCode =
  /** the HTTP API cannot bind its port (another process holds it) */
  | 'ENGINE_HTTP_PORT_IN_USE'
  /** the health probe of the state store got no answer in time */
  | 'ENGINE_PROBE_TIMEOUT'
  /** KEEL_AGENT_HOSTS names an agent `keel start` does not run */
  | 'ENGINE_BAD_AGENT_HOSTS'
  /** KEEL_AGENT_SANDBOX is neither 1 nor 0 */
  | 'ENGINE_BAD_SANDBOX';

export class EngineError extends KeelError {
  declare readonly code: EngineErrorCode;
  constructor(code: EngineErrorCode, message: string, opts: { cause?: unknown; retryable?: boolean } = {}) {
    super(code, message, opts);
    this.name = 'EngineError';
  }
}
