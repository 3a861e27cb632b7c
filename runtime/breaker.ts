import { CircuitOpenError } from './errors.ts';

export interface BreakerOptions {
  /** consecutive failures that open the circuit (default 5) */
  failureThreshold?: number;
  /** how long it stays open before one trial call (default 30 s) */
  resetMs?: number;
  /** what to do while open: return a degraded result instead of failing */
  degraded?: () => unknown;
}

export type BreakerState = 'closed' | 'open' | 'half_open';

/**
 * A circuit breaker around one external connector: after `failureThreshold` consecutive
 * failures calls fail fast (or return the declared degraded result) for `resetMs`; then one
 * trial call decides whether it closes again.
 */
export class CircuitBreaker {
  readonly name: string;
  private readonly threshold: number;
  private readonly resetMs: number;
  private readonly degraded: (() => unknown) | undefined;
  private failures = 0;
  private openedAt = 0;
  private trial = false;
  private now: () => number;

  constructor(name: string, opts: BreakerOptions = {}, now: () => number = Date.now) {
    this.name = name;
    this.threshold = opts.failureThreshold ?? 5;
    this.resetMs = opts.resetMs ?? 30_000;
    this.degraded = opts.degraded;
    this.now = now;
  }

  get state(): BreakerState {
    if (this.failures < this.threshold) return 'closed';
    return this.now() - this.openedAt >= this.resetMs ? 'half_open' : 'open';
  }

  /** what the registry entry reports (the console's agents view shows it) */
  snapshot(): { name: string; state: BreakerState; failures: number; openedAt?: string } {
    const state = this.state;
    return { name: this.name, state, failures: this.failures, ...(state !== 'closed' ? { openedAt: new Date(this.openedAt).toISOString() } : {}) };
  }

  async call<T>(fn: () => Promise<T>): Promise<T> {
    const st = this.state;
    if (st === 'open' || (st === 'half_open' && this.trial)) {
      if (this.degraded) return this.degraded() as T;
      // at least 1 s: while the trial call runs, the others must not come straight back (each return costs a delivery)
      throw new CircuitOpenError(this.name, Math.max(1_000, this.resetMs - (this.now() - this.openedAt)));
    }
    if (st === 'half_open') this.trial = true;
    try {
      const r = await fn();
      this.failures = 0;
      this.trial = false;
      return r;
    } catch (err) {
      this.failures++;
      this.trial = false;
      if (this.failures >= this.threshold) this.openedAt = this.now();
      throw err;
    }
  }
}
