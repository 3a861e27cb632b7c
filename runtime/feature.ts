import type { Server } from 'node:http';
import type { Hono } from 'hono';
import type { KeelConfig } from '../config/index.ts';
import type { Bus } from '../bus/index.ts';
import type { CommittedEvent, Entity, EntityTypeDef, StateStore } from '../shared-state/index.ts';
import type { WorkflowDef, WorkflowEngine } from '../workflows/index.ts';
import type { Logger } from '../observability/index.ts';
import { DefinitionError } from './errors.ts';

/** One agent a feature ships: its module (default-exports `defineAgent(...)`) and whether `keel start` runs it by default. */
export interface FeatureAgent {
  /** absolute file URL or path of the module, e.g. `new URL('./triage.ts', import.meta.url).href` */
  module: string;
  default: boolean;
  description: string;
}

/**
 * One memory a feature wants written for an entity event (see {@link MemoryRule}). The memory
 * agent adds the provenance (the event's id, the time, itself as writer) and a stable id.
 */
export interface MemoryDraft {
  text: string;
  /** `message` (raw, summarized later by the fidelity policy), `summary`, `history`, … */
  kind: string;
  customerId?: string;
  entityType: string;
  entityId: string;
  /** 0..1 (default 0.5) */
  importance?: number;
  /** when what it remembers happened (default the event's time) */
  createdAt?: string;
  /** distinguishes several memories of one event (default its index) */
  key?: string;
  /** true: supersedes the entity's earlier active memories of the same kind (a new summary replaces the old) */
  replacesPrevious?: boolean;
  /** free metadata, e.g. `{ subject }` (shown in recall and the context builder) */
  meta?: Record<string, unknown>;
}

/**
 * How a feature's entity events become long-term memory: the memory agent (agents/memory/)
 * consumes the change log and, for every event named here, writes what `toMemory` returns. The
 * memory agent knows no domain types; the feature that owns the entity says what is worth
 * remembering about it.
 */
export interface MemoryRule {
  /** `entityType.eventType`, e.g. `ticket.message_added` */
  event: string;
  /** the memories of one event, given the entity as it was right after it (none: nothing to remember) */
  toMemory(event: CommittedEvent, entity: Entity | null, history?: readonly CommittedEvent[]): MemoryDraft[];
  /** the rule needs the entity's whole history (e.g. to write an event-history memory) */
  needsHistory?: boolean;
}

/** What an ingress receives from the engine that hosts it. */
export interface IngressContext {
  config: KeelConfig;
  bus: Bus;
  store: StateStore;
  /** starts runs as the engine (actor `system:engine`) */
  workflows: WorkflowEngine;
  logger: Logger;
}

/** A running ingress: channels that feed the bus, hosted in the engine process. */
export interface Ingress {
  /** routes on the engine's HTTP API */
  mount?(app: Hono): void;
  /** the engine's HTTP server, once listening (WebSockets) */
  attach?(server: Server): void;
  /** counters the engine exposes on /metrics, by metric name then label value */
  stats?(): Record<string, Record<string, number>>;
  close(): Promise<void>;
}

/**
 * A feature: everything one scenario owns, in one folder. The engine and the CLI open the store
 * with every feature's entity types, start runs of its workflows, supervise its agents and host
 * its ingress; nothing below floor 7 names a feature.
 */
export interface Feature {
  name: string;
  description: string;
  entities: readonly EntityTypeDef[];
  workflows: readonly WorkflowDef[];
  agents: Readonly<Record<string, FeatureAgent>>;
  /** how this feature's entity events become long-term memory (agents/memory/ writes them) */
  memory?: readonly MemoryRule[];
  /** loaded by the engine only (agent processes never import it) */
  ingress?: () => Promise<{ startIngress(ctx: IngressContext): Promise<Ingress> }>;
}

const NAME = /^[a-z0-9][a-z0-9-]*$/;

/** Declares a feature; checks that names are well formed and that agents' modules are given. */
export function defineFeature(f: Feature): Feature {
  if (!NAME.test(f.name)) throw new DefinitionError(`invalid feature name '${f.name}': lowercase letters, digits and '-'`);
  for (const [name, a] of Object.entries(f.agents)) {
    if (!NAME.test(name)) throw new DefinitionError(`feature '${f.name}': invalid agent name '${name}'`);
    if (!a.module) throw new DefinitionError(`feature '${f.name}': agent '${name}' has no module`);
  }
  for (const r of f.memory ?? []) {
    const [type, ev] = r.event.split('.');
    if (!type || !ev || r.event.split('.').length !== 2) throw new DefinitionError(`feature '${f.name}': memory rule event '${r.event}' must be 'entityType.eventType'`);
    if (!f.entities.some((e) => e.name === type)) throw new DefinitionError(`feature '${f.name}': memory rule '${r.event}' names entity type '${type}', which the feature does not declare`);
  }
  return f;
}
