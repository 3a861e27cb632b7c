import type { Bench } from './lib.ts';

/** Every benchmark by name. Each issue that names a figure adds one. */
export const BENCHES: Record<string, Bench> = {};
