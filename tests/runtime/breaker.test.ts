import { describe, expect, it } from 'vitest';
import { CircuitBreaker } from '../../runtime/index.ts';

const isAgentErrorCode = (err: unknown, code: string) => typeof err === 'object' && err !== null && (err as { code?: string }).code === code;

describe('circuit breaker per connector', () => {
  it('opens after consecutive failures, fails fast (retryable) while open, and closes after a good trial call', async () => {
    let now = 0;
    const b = new CircuitBreaker('crm', { failureThreshold: 2, resetMs: 1_000 }, () => now);
    const boom = () => Promise.reject(new Error('503'));
    await expect(b.call(boom)).rejects.toThrow('503');
    await expect(b.call(boom)).rejects.toThrow('503');
    expect(b.state).toBe('open');
    let called = false;
    const err = await b.call(async () => ((called = true), 'x')).catch((e: unknown) => e);
    expect(called).toBe(false);
    expect(isAgentErrorCode(err, 'AGENT_CIRCUIT_OPEN')).toBe(true);
    expect(err).toMatchObject({ retryable: true, nextDelayMs: 1_000 });
    now = 1_000;
    expect(b.state).toBe('half_open');
    await expect(b.call(async () => 'ok')).resolves.toBe('ok');
    expect(b.state).toBe('closed');
  });

  it('returns the declared degraded result while open', async () => {
    const b = new CircuitBreaker('search', { failureThreshold: 1, resetMs: 60_000, degraded: () => ({ results: [], degraded: true }) });
    await expect(b.call(() => Promise.reject(new Error('down')))).rejects.toThrow('down');
    await expect(b.call(async () => ({ results: ['x'], degraded: false }))).resolves.toEqual({ results: [], degraded: true });
  });
});

describe('circuit breaker snapshot', () => {
  it('reports name, state, consecutive failures and when it opened', async () => {
    let now = Date.parse('2026-12-03T10:00:00Z');
    const b = new CircuitBreaker('smtp', { failureThreshold: 2, resetMs: 5_000 }, () => now);
    expect(b.snapshot()).toEqual({ name: 'smtp', state: 'closed', failures: 0 });
    await expect(b.call(() => Promise.reject(new Error('421')))).rejects.toThrow('421');
    expect(b.snapshot()).toEqual({ name: 'smtp', state: 'closed', failures: 1 });
    await expect(b.call(() => Promise.reject(new Error('421')))).rejects.toThrow('421');
    expect(b.snapshot()).toEqual({ name: 'smtp', state: 'open', failures: 2, openedAt: '2026-12-03T10:00:00.000Z' });
    now += 5_000;
    expect(b.snapshot().state).toBe('half_open');
  });
});
