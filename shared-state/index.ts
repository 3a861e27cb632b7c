/**
 * Keel's system of record: event-sourced entities on SQLite (embedded) or MongoDB.
 */
export { openSqlite, parseStateUrl, probeState, redactMongoUrl } from './health.ts';
export type { StateHealth } from './health.ts';
