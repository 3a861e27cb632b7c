/**
 * The launch feature: launching a niche product. Today it owns the entity types the launch
 * scenario builds on (product, task, content asset, calendar item); its workflow and agents
 * (researcher, writer, marketer) land here too, without edits below this floor.
 *
 * ```ts
 * import { launch, productType } from './agents/launch/index.ts';
 * const store = await openStore(url, { types: launch.entities });
 * ```
 */
import { defineFeature } from '../../runtime/index.ts';
import { LAUNCH_ENTITY_TYPES } from './entities.ts';

export const launch = defineFeature({
  name: 'launch',
  description: 'Launching a niche product: products, tasks, content assets and calendar items.',
  entities: LAUNCH_ENTITY_TYPES,
  workflows: [],
  agents: {},
});
export default launch;

export { productType, taskType, contentAssetType, calendarItemType, LAUNCH_ENTITY_TYPES } from './entities.ts';
