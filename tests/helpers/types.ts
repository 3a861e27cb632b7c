import { BUILTIN_FEATURES, entityTypesOf } from '../../agents/index.ts';

/** Every entity type the shipped features declare, plus the workflow run: what the engine's store knows. */
export const ALL_ENTITY_TYPES = entityTypesOf(BUILTIN_FEATURES);
