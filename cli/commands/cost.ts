import type { Command } from 'commander';

/** `keel cost ...` (agents/models work fills this in). */
export function registerCost(_program: Command): void {}
