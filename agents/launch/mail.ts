/**
 * The launch's outbound mail: launch emails to subscribers and notices to the operator, through
 * the email channel's sender (every mail in `KEEL_DATA_DIR/outbox/`, and relayed when
 * `KEEL_SMTP_RELAY` is set). A launch email's Message-ID names the product and the slot
 * (`<launch.<product>.<slot>.<hash>@domain>`), so a subscriber's reply is linked to the product.
 */
import { join } from 'node:path';
import type { KeelConfig } from '../../config/index.ts';
import { createMailSender, type MailSender } from '../../channels/index.ts';
import { sha } from './product.ts';

const senders = new Map<string, MailSender>();

export function launchMailer(cfg: Pick<KeelConfig, 'smtpRelay' | 'dataDir' | 'smtpFrom'>, smtpPassword?: string): { sender: MailSender; from: string; domain: string } {
  let relay = cfg.smtpRelay;
  if (relay && smtpPassword) {
    const u = new URL(relay);
    if (u.username && !u.password) {
      u.password = encodeURIComponent(smtpPassword);
      relay = u.toString();
    }
  }
  const o = { relay, outboxDir: join(cfg.dataDir, 'outbox'), from: cfg.smtpFrom };
  const key = JSON.stringify(o);
  let sender = senders.get(key);
  if (!sender) senders.set(key, (sender = createMailSender(o)));
  return { sender, from: cfg.smtpFrom, domain: cfg.smtpFrom.slice(cfg.smtpFrom.lastIndexOf('@') + 1) };
}

export const LAUNCH_MESSAGE_ID = /^<launch\.([a-z0-9][a-z0-9-]*)\.([a-z0-9-]+)\.[0-9a-f]+@[^>]+>$/;

export const launchMessageId = (productId: string, slot: string, to: string, domain: string, kind = '') => `<launch.${productId}.${slot}${kind}.${sha(to.toLowerCase()).slice(0, 16)}@${domain}>`;

/** The product and slot a launch email's Message-ID names (undefined for any other id). */
export function parseLaunchMessageId(id: string | undefined): { productId: string; slot: string } | undefined {
  const m = id ? LAUNCH_MESSAGE_ID.exec(id.trim()) : null;
  return m ? { productId: m[1]!, slot: m[2]! } : undefined;
}
