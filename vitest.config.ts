import { defineConfig } from 'vitest/config';

// Tests that start real servers (*.int.test.ts) and scenario tests that start the engine as
// processes share the machine's two cores; forks keep each file in its own process so a
// crashed server or a killed child can never take the runner with it.
export default defineConfig({
  test: {
    include: ['**/*.test.ts'],
    exclude: ['node_modules/**', '.keel/**'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ['default'],
  },
});
