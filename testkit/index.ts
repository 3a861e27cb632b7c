/**
 * Real servers for tests and benchmarks, one helper per server: an address from the environment
 * first, then a container when a Docker engine answers, then the provisioned binary on a free
 * port with a temp store. Both `tests/` and `bench/` import from here.
 *
 * ```ts
 * import { startNats } from './testkit/index.ts';
 * const nats = await startNats();
 * if (!nats.ok) console.log(`skipped: ${nats.reason}`);
 * ```
 */
export * from './errors.ts';
export * from './common.ts';
export * from './nats.ts';
export * from './mongo.ts';
export * from './jaeger.ts';
export * from './qdrant.ts';
export * from './openai.ts';
