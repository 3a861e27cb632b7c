/**
 * The memory feature: what becomes long-term memory, decentralized. Every feature says how its
 * entity events become memories (`Feature.memory`, a list of rules); this feature turns each
 * rule's event into a triggered workflow whose step the `memorizer` agent runs, and keeps the
 * fidelity policy per entity type (entity `memory_policy`). The memorizer also sweeps: raw
 * memories older than the policy's raw window become summaries, memories past retention go.
 *
 * ```ts
 * import { memoryFeature } from './agents/memory/index.ts';
 * const features = [inbound, launch];
 * const all = [...features, memoryFeature(features)];   // agents/index.ts does this
 * // keel agent start memorizer
 * ```
 *
 * | capability | agent | input | output |
 * | --- | --- | --- | --- |
 * | `memory.record` | memorizer | `{ event: CommittedEvent }` | `{ written: string[], superseded: number, skipped? }` |
 * | `memory.sweep` | memorizer | `{ now? }` | `{ at, summarized, superseded, expired, types }` |
 *
 * See docs/memory.md.
 */
import { defineFeature, type Feature } from '../../runtime/index.ts';
import { MEMORY_ENTITY_TYPES } from './entities.ts';
import { memoryWorkflows } from './workflows.ts';

export const MEMORY_FEATURE = 'memory';

/** The memory feature for these features' memory rules. */
export function memoryFeature(features: readonly Feature[]): Feature {
  const events = features.filter((f) => f.name !== MEMORY_FEATURE).flatMap((f) => (f.memory ?? []).map((r) => r.event));
  return defineFeature({
    name: MEMORY_FEATURE,
    description: 'Long-term memory: the memorizer writes memories from the change log (per each feature\'s memory rules) and applies the fidelity policy.',
    entities: MEMORY_ENTITY_TYPES,
    workflows: memoryWorkflows(events),
    agents: {
      memorizer: { module: new URL('./memorizer.ts', import.meta.url).href, default: true, description: 'memory.record / memory.sweep: writes memories from entity events; summarizes and expires them by policy' },
    },
  });
}

export { memoryPolicyType, MEMORY_POLICY, MEMORY_ENTITY_TYPES } from './entities.ts';
export { memoryWorkflows, memoryWorkflowName } from './workflows.ts';
export { policiesOf, setPolicy, memoryRuleTypes, MemoryPolicyError, type PolicyChange } from './policies.ts';
