import { join } from 'node:path';
import type { KeelConfig } from '../config/index.ts';
import { connectBus, type NatsConnection } from '../bus/index.ts';
import { readCredentials } from '../runtime/index.ts';

/** The CLI's bus connection: KEEL_NATS_URL, or the local engine's bus with its admin credentials. */
export async function connectCli(cfg: KeelConfig): Promise<NatsConnection> {
  const url = cfg.natsUrl ?? `nats://127.0.0.1:${cfg.natsPort}`;
  const admin = cfg.natsUrl ? undefined : readCredentials(join(cfg.dataDir, 'credentials.json'))?.admin;
  return connectBus({ servers: url, name: 'keel-cli', connectTimeoutMs: 3_000, maxReconnectAttempts: 0, user: admin?.user, pass: admin?.password });
}
