/** Checks both adapters share: input validation and candidate pool sizes. */
import { MemoryError } from './errors.ts';
import type { MemoryInput } from './types.ts';

/** Throws MEMORY_INVALID_INPUT for a memory no adapter should store. */
export function validateInput(i: MemoryInput): void {
  const bad = (why: string) => new MemoryError('MEMORY_INVALID_INPUT', `memory${i.id ? ` '${i.id}'` : ''}: ${why}`);
  if (typeof i.text !== 'string' || !i.text.trim()) throw bad('text is empty');
  if (typeof i.kind !== 'string' || !i.kind) throw bad('kind is required');
  if (typeof i.writtenBy !== 'string' || !i.writtenBy) throw bad('writtenBy is required');
  if (!i.source || !Array.isArray(i.source.eventIds)) throw bad('source.eventIds must be an array (empty for an operator note)');
  if (i.id !== undefined && (typeof i.id !== 'string' || !i.id)) throw bad('id must be a non-empty string');
  if (i.importance !== undefined && !(i.importance >= 0 && i.importance <= 1)) throw bad(`importance must be within 0..1, got ${String(i.importance)}`);
  if (i.createdAt !== undefined && !Number.isFinite(Date.parse(i.createdAt))) throw bad(`createdAt '${i.createdAt}' is not an ISO 8601 date`);
}

/** How many candidates each retriever (vector, lexical) contributes before fusion. */
export function candidatePool(limit: number): number {
  return Math.max(50, limit * 5);
}
