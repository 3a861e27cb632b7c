/**
 * Keel's bus: NATS JetStream transport, envelopes, dead letters, capability announcements.
 *
 * ```ts
 * import { connectBus } from './bus/index.ts';
 * const nc = await connectBus({ servers: 'nats://127.0.0.1:4222', name: 'my-agent' });
 * ```
 */
export { connectBus } from './connection.ts';
export type { BusConnectOptions, NatsConnection } from './connection.ts';
export { LocalNatsServer } from './local-server.ts';
export type { LocalNatsServerOptions, LocalNatsUser } from './local-server.ts';
export * from './errors.ts';
