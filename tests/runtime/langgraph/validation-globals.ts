import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';

/**
 * `@langchain/langgraph-checkpoint-validation` is written against test globals (`describe`, `it`,
 * `expect`, hooks), which its own CLI gets from vitest's `globals: true`. Our vitest config keeps
 * globals off, so a validation test file installs them with this before it imports the suite:
 *
 *   installVitestGlobals();
 *   const { validate } = await import('@langchain/langgraph-checkpoint-validation');
 */
export function installVitestGlobals(): void {
  Object.assign(globalThis, { describe, it, expect, beforeAll, afterAll, beforeEach, afterEach });
}
