import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { KeelConfig } from '../config/index.ts';
import { connectBus, isBusError, type NatsConnection } from '../bus/index.ts';
import { readCredentials } from '../runtime/index.ts';
import { CliError } from './errors.ts';

/**
 * The CLI's bus connection: KEEL_NATS_URL, or the local engine's bus with its admin credentials
 * (from `<KEEL_DATA_DIR>/credentials.json`). A refusal or silence is explained: which data dir and
 * port were used, and how to point the CLI at the running engine.
 */
export async function connectCli(cfg: KeelConfig): Promise<NatsConnection> {
  const url = cfg.natsUrl ?? `nats://127.0.0.1:${cfg.natsPort}`;
  const credsPath = join(cfg.dataDir, 'credentials.json');
  // KEEL_NATS_URL: the admin user of `keel deploy nats-config` from KEEL_NATS_USER / KEEL_NATS_PASSWORD
  const admin = cfg.natsUrl ? (cfg.natsUser ? { user: cfg.natsUser, password: cfg.natsPassword ?? '' } : undefined) : readCredentials(credsPath)?.admin;
  try {
    return await connectBus({ servers: url, name: 'keel-cli', connectTimeoutMs: 3_000, maxReconnectAttempts: 0, user: admin?.user, pass: admin?.password });
  } catch (err) {
    const where = cfg.natsUrl ? `KEEL_NATS_URL=${cfg.natsUrl}` : `KEEL_NATS_PORT=${cfg.natsPort}`;
    if (isBusError(err, 'BUS_AUTH_REFUSED')) {
      const creds = cfg.natsUrl
        ? admin
          ? `the CLI used KEEL_NATS_USER=${admin.user} and KEEL_NATS_PASSWORD`
          : 'KEEL_NATS_URL is set and KEEL_NATS_USER is not, so the CLI sent no credentials'
        : existsSync(credsPath)
          ? `the CLI used the admin credentials in ${credsPath}`
          : `there is no ${credsPath}, so the CLI sent no credentials (no engine was ever started with this data dir)`;
      throw new CliError(
        'CLI_BUS_AUTH',
        `the bus at ${url} (${where}) refused the CLI: ${creds}. The engine running there most likely uses another data dir: run keel from the engine's directory or set KEEL_DATA_DIR to the data dir \`keel start\` printed ("data …" — now ${cfg.dataDir}); or another nats-server holds that port (set KEEL_NATS_PORT / KEEL_NATS_URL to the engine's bus).`,
        { cause: err, details: { url, dataDir: cfg.dataDir, credentials: cfg.natsUrl ? null : credsPath } },
      );
    }
    if (isBusError(err, 'BUS_UNAVAILABLE')) {
      throw new CliError(
        'CLI_NO_ENGINE',
        `no engine answers at ${url} (${where}): start it with \`keel start\`, or point KEEL_NATS_PORT / KEEL_NATS_URL at the running engine's bus. (${(err as Error).message})`,
        { cause: err, details: { url, dataDir: cfg.dataDir } },
      );
    }
    throw err;
  }
}
