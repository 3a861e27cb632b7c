/**
 * Keel's bus: NATS JetStream transport, envelopes, dead letters, capability announcements.
 *
 * ```ts
 * import { connectBus, createBus, defineMessage } from './bus/index.ts';
 * import { z } from 'zod';
 *
 * const Triage = defineMessage('triage.request', z.object({ ticketId: z.string() }));
 * const bus = createBus(await connectBus({ servers: 'nats://127.0.0.1:4222', name: 'triage' }));
 * await bus.provision();                                   // streams + registry bucket, idempotent
 * await bus.publish(bus.subjects.task('triage'), Triage, { ticketId: 't1' }, { correlationId: 'c1' });
 * const consumer = await bus.consumeTasks('triage', {
 *   accepts: [Triage],
 *   handler: async (env, ctx) => { ... },                  // throw PermanentError to dead-letter at once
 * });
 * await consumer.stop();
 * ```
 */
export { connectBus } from './connection.ts';
export type { BusConnectOptions, NatsConnection } from './connection.ts';
export { createBus } from './bus.ts';
export type { Bus, CreateBusOptions, PublishResult, TaskConsumerOptions, EventConsumerOptions } from './bus.ts';
export { natsEventPublisher, ensureEventStream, eventSubject, eventStreamName, runEventConsumer, subscribeEvents } from './events.ts';
export type { EventPublisher, EntityEventMessage, EventConsumerHandle, RunEventConsumerOptions } from './events.ts';
export { defineMessage, H as HEADERS, openEnvelope, buildHeaders, headersToRecord } from './envelope.ts';
export type { Envelope, EnvelopeMeta, MessageType } from './envelope.ts';
export { runConsumer, backoffDelay, DEFAULT_BACKOFF } from './consumer.ts';
export { listDeadLetters, getDeadLetter, redriveDeadLetter, REDRIVE_HEADERS, scrubDeadLetter } from './dlq.ts';
export type { StoredDeadLetter } from './dlq.ts';
export type { ConsumeOptions, ConsumerHandle, ConsumerStats, Handler, HandlerContext, BackoffPolicy, DeadLetter } from './consumer.ts';
export { keelTopology, DEFAULT_STREAMS_MAX_BYTES, STREAM_SHARE, LEASE_TTL_MS, WORKFLOW_TIMER_LEASE, ensureLease, consumerSpecFor, eventStreamSpec, eventConsumerSpec, provisionBus, ensureStream, ensureConsumer, ensureKv } from './provision.ts';
export type { Topology, TopologyOptions, StreamSpec, ConsumerSpec, KvSpec, LeaseSpec, ProvisionReport, ProvisionAction } from './provision.ts';
export { subjects, durableFor, leaseDurable, assertToken } from './subjects.ts';
export type { Subjects } from './subjects.ts';
export { announce, listAgents, watchAgents, registryKey, agentProcesses, ManifestSchema, CapabilitySchema } from './registry.ts';
export type { Manifest, Capability, RegistryEvent, Announcement, AgentProcess } from './registry.ts';
export { holdLease } from './lease.ts';
export type { Lease, LeaseOptions } from './lease.ts';
export { LocalNatsServer, LocalNatsCluster, renderNatsConfig } from './local-server.ts';
export type { LocalNatsServerOptions, LocalNatsClusterOptions, LocalNatsUser, NatsConfigSpec, NatsTlsConfig, RouteAuth } from './local-server.ts';
export * from './errors.ts';
export { streamPositions, captureMessages, readStream, writeStreamExport, readStreamExport, importStream, nonEmptyStreams, recordHeader, recordHeaders, StreamBackupError, type StreamMessageRecord, type StreamPosition, type ConsumerPosition, type SkippedStream, type ImportStreamSpec, type ImportStreamResult, type StreamBackupErrorCode } from './backup.ts';
