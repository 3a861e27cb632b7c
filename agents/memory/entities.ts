/**
 * The memory feature's entity type: the fidelity policy of one entity type's memories, kept in
 * shared state so every change is an event (who, when, what before) and audited.
 */
import { z } from 'zod';
import { defineEntityType, type EntityTypeDef } from '../../shared-state/index.ts';

export const MEMORY_POLICY = 'memory_policy';

/** id = the entity type it governs (e.g. `ticket`); unset fields fall back to the defaults (memory/policy.ts). */
export const memoryPolicyType = defineEntityType({
  name: MEMORY_POLICY,
  schemaVersion: 1,
  schema: z.strictObject({
    entityType: z.string().min(1).max(64),
    /** days raw memories stay before they are summarized */
    rawDays: z.number().int().min(0).max(36_500).optional(),
    /** days anything is kept */
    retainDays: z.number().int().min(1).max(36_500).optional(),
    /** nothing new is remembered for this type */
    optOut: z.boolean().optional(),
    updatedBy: z.string().max(200).optional(),
    updatedAt: z.iso.datetime({ offset: true }).optional(),
  }),
  searchFields: ['entityType'],
});

export const MEMORY_ENTITY_TYPES: readonly EntityTypeDef[] = [memoryPolicyType];
