import { createRequire } from 'node:module';
import type * as Rlf from 'rate-limiter-flexible';
import type { RateLimiterRes } from 'rate-limiter-flexible';
import type { RateLimitSpec } from '../config/index.ts';
import { ChannelConfigError } from './errors.ts';

/** What a limit counts: one sender (an email address, a chat handle) or the whole channel. */
export type RateScope = 'sender' | 'channel';

/** A message refused because a limit was reached. */
export interface RateRefusal {
  /** `email` or `chat` */
  channel: string;
  scope: RateScope;
  /** the sender's key (lower-cased address or `handle:NAME`); `*` for the channel limit */
  key: string;
  /** the address or handle that was refused (for the domain and the salted hash; never stored whole) */
  sender: string;
  limit: RateLimitSpec;
  /** when the window of this key ends: the client may try again then */
  retryAfterMs: number;
  /**
   * true only for the first refusal of this key in its window, so a flood leaves one audit
   * record per key and window, not one per message
   */
  first: boolean;
}

export interface IngressRateLimiterOptions {
  /** the channel's name: `email` or `chat` */
  channel: string;
  /** per sender (address or handle); null/undefined = no limit */
  sender?: RateLimitSpec | null;
  /** for the channel as a whole; null/undefined = no limit */
  total?: RateLimitSpec | null;
  /** told about every refusal (e.g. to audit the first one per window); its failure never changes the answer */
  onRefused?: (r: RateRefusal) => void | Promise<void>;
}

export interface IngressRateLimiter {
  readonly channel: string;
  /**
   * Takes one message from `sender` (an address or `handle:NAME`; compared lower-cased): counts it
   * against the sender's and the channel's limit. Undefined when admitted, else the refusal (a
   * refused message does not use up the channel's budget for others). `channel: false` counts
   * the sender only: a second key for a message already counted against the channel.
   */
  take(sender: string, o?: { channel?: boolean }): Promise<RateRefusal | undefined>;
  /** gives the channel back the point of a message taken earlier and refused later */
  giveBack(): Promise<void>;
  /** refusals so far: `<channel>_sender`, `<channel>_channel` */
  stats(): Record<string, number>;
}

/** The rate-limit key of a chat customer: the email (lower-cased), else `handle:NAME`. */
export function chatSenderKey(customer: { email?: string | undefined; handle?: string | undefined }): string {
  return customer.email ? customer.email.toLowerCase() : `handle:${customer.handle ?? ''}`;
}

/** `20/10m` for messages and docs. */
export function formatRateLimit(s: RateLimitSpec): string {
  const units: [number, string][] = [[86_400_000, 'd'], [3_600_000, 'h'], [60_000, 'm'], [1_000, 's']];
  const [ms, u] = units.find(([ms]) => s.durationMs % ms === 0) ?? [1_000, 's'];
  return `${s.points}/${s.durationMs / ms}${u}`;
}

function check(name: string, s: RateLimitSpec | null | undefined): void {
  if (!s) return;
  if (!Number.isInteger(s.points) || s.points < 1) throw new ChannelConfigError(name, `points must be a positive integer, got ${s.points}`);
  if (!Number.isInteger(s.durationMs) || s.durationMs < 1_000 || s.durationMs % 1_000 !== 0) throw new ChannelConfigError(name, `durationMs must be whole seconds (>= 1000), got ${s.durationMs}`);
}

const isRes = (e: unknown): e is RateLimiterRes => typeof e === 'object' && e !== null && typeof (e as RateLimiterRes).msBeforeNext === 'number' && typeof (e as RateLimiterRes).consumedPoints === 'number';

/**
 * The inbound limits of one channel, in this process's memory (rate-limiter-flexible's
 * RateLimiterMemory: fixed windows per key that expire on their own). A flood from one sender is
 * refused without touching the bus or the store; the channel limit caps everyone together.
 */
export function createIngressRateLimiter(o: IngressRateLimiterOptions): IngressRateLimiter {
  check('sender', o.sender);
  check('total', o.total);
  // rate-limiter-flexible loads only in the process that hosts an ingress
  const { RateLimiterMemory } = createRequire(import.meta.url)('rate-limiter-flexible') as typeof Rlf;
  const make = (s: RateLimitSpec | null | undefined, scope: RateScope) => (s ? { spec: s, rl: new RateLimiterMemory({ points: s.points, duration: s.durationMs / 1_000, keyPrefix: `${o.channel}:${scope}` }) } : undefined);
  const perSender = make(o.sender, 'sender');
  const total = make(o.total, 'channel');
  const stats: Record<string, number> = { [`${o.channel}_sender`]: 0, [`${o.channel}_channel`]: 0 };

  const refuse = async (scope: RateScope, key: string, sender: string, spec: RateLimitSpec, res: RateLimiterRes): Promise<RateRefusal> => {
    stats[`${o.channel}_${scope}`]!++;
    const r: RateRefusal = { channel: o.channel, scope, key, sender, limit: spec, retryAfterMs: Math.max(1, res.msBeforeNext), first: res.consumedPoints === spec.points + 1 };
    try {
      await o.onRefused?.(r);
    } catch {
      // the refusal stands even when its record could not be written (the caller logs)
    }
    return r;
  };

  return {
    channel: o.channel,
    async take(sender, opts = {}) {
      const key = sender.trim().toLowerCase() || '<>';
      // the channel first: a flood of new sender names that the channel refuses creates no per-sender keys
      if (total && opts.channel !== false) {
        try {
          await total.rl.consume('*');
        } catch (e) {
          if (!isRes(e)) throw e;
          return refuse('channel', '*', sender, total.spec, e);
        }
      }
      if (perSender) {
        try {
          await perSender.rl.consume(key);
        } catch (e) {
          if (!isRes(e)) throw e;
          // the refused message does not use up the channel's allowance
          if (total && opts.channel !== false) await total.rl.reward('*').catch(() => undefined);
          return refuse('sender', key, sender, perSender.spec, e);
        }
      }
      return undefined;
    },
    async giveBack() {
      await total?.rl.reward('*').catch(() => undefined);
    },
    stats: () => ({ ...stats }),
  };
}
