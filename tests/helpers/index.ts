/** Test helpers: the real-server library (testkit/) plus the engine and suite helpers tests share. */
export * from '../../testkit/index.ts';
export * from './engine.ts';
export * from './suite.ts';
export * from './types.ts';
