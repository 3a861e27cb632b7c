/**
 * The model layer's entity types (budgets and their windows) without loading LangChain: for code
 * that opens stores at startup (the CLI, agents/index.ts, the agent runtime), where importing
 * models/index.ts would load @langchain/core (~250 ms) before any model is called.
 *
 * ```ts
 * import { MODEL_ENTITY_TYPES } from './models/entities/index.ts';
 * const store = await openStore(url, { types: [...featureTypes, ...MODEL_ENTITY_TYPES] });
 * ```
 */
export { MODEL_ENTITY_TYPES } from '../budgets.ts';
