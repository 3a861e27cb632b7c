/** Test helpers: one per real server. Each prefers an address from the environment. */
export * from './common.ts';
export * from './nats.ts';
export * from './mongo.ts';
export * from './jaeger.ts';
export * from './qdrant.ts';
export * from './engine.ts';
export * from './suite.ts';
