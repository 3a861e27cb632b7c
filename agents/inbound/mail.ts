/**
 * The email channel's sender as the inbound agents use it, configured from the engine's
 * configuration (`ctx.config`) and built once per configuration per process.
 *
 * | variable | default | meaning |
 * | --- | --- | --- |
 * | `KEEL_SMTP_RELAY` | (unset: outbox only) | `smtp://[user[:pass]@]host:port` or `smtps://...`; the password may come from the `SMTP_PASSWORD` secret instead |
 * | `KEEL_DATA_DIR` | `./.keel` | every sent mail is also written to `<KEEL_DATA_DIR>/outbox/*.eml` |
 * | `KEEL_SMTP_FROM` | `support@keel.local` | the From address of replies and operator notifications |
 */
import { join } from 'node:path';
import type { KeelConfig } from '../../config/index.ts';
import { createMailSender, type MailSender } from '../../channels/index.ts';

export interface MailConfig {
  relay: string | undefined;
  outboxDir: string;
  from: string;
}

/** The mail configuration; `smtpPassword` fills in a relay URL's missing password. */
export function mailConfig(cfg: Pick<KeelConfig, 'smtpRelay' | 'dataDir' | 'smtpFrom'>, smtpPassword?: string): MailConfig {
  let relay = cfg.smtpRelay;
  if (relay && smtpPassword) {
    try {
      const u = new URL(relay);
      if (u.username && !u.password) {
        u.password = encodeURIComponent(smtpPassword);
        relay = u.toString();
      }
    } catch {
      // a malformed relay is reported by createMailSender with a clear message
    }
  }
  return {
    relay,
    outboxDir: join(cfg.dataDir, 'outbox'),
    from: cfg.smtpFrom,
  };
}

const senders = new Map<string, MailSender>();

/** One sender per configuration in this process (its relay connection is reused). */
export function mailSender(cfg: MailConfig): MailSender {
  const key = JSON.stringify(cfg);
  let s = senders.get(key);
  if (!s) senders.set(key, (s = createMailSender(cfg)));
  return s;
}

/** Closes every sender this process opened (tests, shutdown). */
export async function closeMailSenders(): Promise<void> {
  const all = [...senders.values()];
  senders.clear();
  await Promise.all(all.map((s) => s.close()));
}
