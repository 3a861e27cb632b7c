import type { Command } from 'commander';

/** `keel entity ...`, `keel changes`, `keel audit ...` (shared-state). */
export function registerState(_program: Command): void {
  // filled in by the shared-state work
}
