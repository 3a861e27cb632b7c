export { KeelCheckpointSaver } from './saver.ts';
export { createCheckpointer } from './checkpointer.ts';
export type { CheckpointerOptions } from './checkpointer.ts';
export * from './errors.ts';
