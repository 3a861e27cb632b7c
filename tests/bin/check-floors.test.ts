import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkSource, checkTree } from '../../bin/check-floors.ts';

const rules = (file: string, src: string) => checkSource(file, src).map((v) => v.rule);

describe('the floors check', () => {
  it('finds no violation in the repository', () => {
    expect(checkTree(join(import.meta.dirname, '..', '..'))).toEqual([]);
  });

  it('refuses an import that points up a floor', () => {
    expect(rules('shared-state/core.ts', "import { WorkflowEngine } from '../workflows/index.ts';")).toEqual(['upward']);
    expect(rules('bus/bus.ts', "import type { StateStore } from '../shared-state/index.ts';")).toEqual(['upward']);
    expect(rules('runtime/runtime.ts', "const m = await import('../agents/inbound/index.ts');")).toEqual(['upward']);
  });

  it('refuses an import into another module\'s internals', () => {
    expect(rules('runtime/runtime.ts', "import { WorkflowEngine } from '../workflows/engine.ts';")).toEqual(['internals']);
    expect(rules('agents/launch/writer.ts', "import { ticketType } from '../inbound/entities.ts';")).toEqual(['internals']);
    expect(rules('agents/index.ts', "import { inbound } from './inbound/ingress.ts';")).toEqual(['internals']);
  });

  it('refuses siblings on one floor unless the layout allows them', () => {
    expect(rules('models/invoke.ts', "import { x } from '../memory/index.ts';")).toEqual(['sibling']);
    expect(rules('engine/index.ts', "import { x } from '../cli/index.ts';")).toEqual(['sibling']);
    expect(rules('memory/index.ts', "import { x } from '../models/index.ts';")).toEqual([]);
    expect(rules('cli/keel.ts', "import { startEngine } from '../engine/index.ts';")).toEqual([]);
  });

  it('allows downward imports through index.ts, a feature to another feature\'s index.ts, and anything inside one module', () => {
    const src = [
      "import { openStore } from '../../shared-state/index.ts';",
      "import type { Feature } from '../../runtime/index.ts';",
      "import { ticketType } from '../inbound/index.ts';",
      "import { helper } from './helper.ts';",
      "export * from './entities.ts';",
    ].join('\n');
    expect(rules('agents/launch/index.ts', src)).toEqual([]);
  });

  it('sees multi-line and type-only imports', () => {
    expect(rules('bus/x.ts', "import type {\n  A,\n  B,\n} from '../runtime/index.ts';")).toEqual(['upward']);
  });

  it('keeps the inbound domain out of shared-state/', () => {
    expect(rules('shared-state/core.ts', "const t = await store.get('ticket', id);")).toEqual(['domain-in-mechanism']);
    expect(rules('shared-state/core.ts', 'export { customerType } from "x";')).toEqual(['domain-in-mechanism']);
    expect(rules('shared-state/core.ts', '// the cost ledger is attributed by customerId')).toEqual([]);
  });
});
