import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CONFIG_DOCS, REPO_ROOT } from '../../config/index.ts';

describe('README', () => {
  const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
  it('documents every KEEL_* variable with its default', () => {
    for (const d of CONFIG_DOCS) {
      const row = readme.split('\n').find((l) => l.startsWith(`| \`${d.name}\``));
      expect(row, `README row for ${d.name}`).toBeDefined();
      expect(row).toContain(d.default.replace(/^\((.*)\)$/, '$1'));
    }
  });
  it('gives the two quick-start commands', () => {
    expect(readme).toContain('npm ci && npm start');
    expect(readme).toMatch(/^npm test/m);
  });
});
