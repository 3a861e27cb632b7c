import type { Bench } from './lib.ts';
import { busBench } from './bus.ts';
import { workflowBench } from './workflow.ts';
import { stateBench } from './state.ts';
import { cliBench } from './cli.ts';
import { footprintBench } from './footprint.ts';
import { memoryBench } from './memory.ts';
import { triageBench } from './triage.ts';
import { costBench } from './cost.ts';
import { soakBench } from './soak.ts';

/** Every benchmark by name. Each issue that names a figure adds one. */
export const BENCHES: Record<string, Bench> = {
  bus: busBench,
  workflow: workflowBench,
  state: stateBench,
  cli: cliBench,
  footprint: footprintBench,
  memory: memoryBench,
  triage: triageBench,
  cost: costBench,
  soak: soakBench,
};
