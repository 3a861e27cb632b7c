#!/usr/bin/env node
/**
 * The floors check: a folder imports only from floors below it, through their `index.ts`
 * (README, "Architecture"). Exits 1 and names every offending import.
 *
 *   node bin/check-floors.ts          # the repository
 *   node bin/check-floors.ts --json   # machine-readable
 *
 * Rules, for every static `import`/`export ... from` and literal dynamic `import()` of a relative
 * path in the source folders (tests/ is free to reach into internals):
 * 1. the target's top folder sits on a lower floor, or is an allowed sibling (memory → models,
 *    observability → config, channels → config/observability, cli → engine, bench → testkit, agents/index.ts →
 *    each feature, one feature → another feature's index.ts);
 * 2. the target is an `index.ts` (a module's public surface), unless it is inside the importer's
 *    own module (the same top folder, or for agents/ the same feature folder);
 * 3. nothing under shared-state/ names an inbound domain type (the ticket, conversation and
 *    customer types, or the ticket and conversation entity names).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, normalize, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

export const FLOORS: Readonly<Record<string, number>> = {
  config: 1, observability: 1, channels: 1,
  bus: 2,
  'shared-state': 3,
  models: 4, memory: 4,
  workflows: 5,
  runtime: 6,
  agents: 7,
  engine: 8, cli: 8, bench: 8, testkit: 8,
};
/** same-floor imports the layout allows, importer → imported */
const SIBLINGS: ReadonlyArray<[string, string]> = [['memory', 'models'], ['observability', 'config'], ['channels', 'config'], ['channels', 'observability'], ['cli', 'engine'], ['bench', 'testkit']];
/** the inbound feature's types and entity names (a cost record's customer id is attribution, not a schema) */
const DOMAIN_WORDS = /\b(ticketType|conversationType|customerType|TicketState|CustomerState|ConversationState)\b|['"`](ticket|conversation)s?['"`/]/;

export interface Violation {
  file: string;
  line: number;
  target: string;
  rule: 'upward' | 'sibling' | 'internals' | 'domain-in-mechanism';
  message: string;
}

const IMPORT_RE = /(?:^|[^.\w])(?:import|export)\s[^'";]*?from\s*['"](\.{1,2}\/[^'"]+)['"]|import\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*\)/g;

function moduleOf(path: string): { top: string; module: string } {
  const parts = path.split(sep);
  const top = parts[0]!;
  // a feature folder is its own module: agents/inbound/...; agents/index.ts is the catalog
  if (top === 'agents' && parts.length > 2) return { top, module: `agents/${parts[1]}` };
  return { top, module: top };
}

/** Checks one file's source; `file` is relative to the repository root. */
export function checkSource(file: string, src: string): Violation[] {
  const out: Violation[] = [];
  const from = moduleOf(file);
  const floor = FLOORS[from.top];
  if (floor === undefined) return out;
  const lineOf = (idx: number) => src.slice(0, idx).split('\n').length;
  for (const m of src.matchAll(IMPORT_RE)) {
    const spec = m[1] ?? m[2]!;
    const target = normalize(join(dirname(file), spec));
    const to = moduleOf(target);
    const line = lineOf(m.index ?? 0);
    if (to.module === from.module) continue; // inside one module: anything goes
    const toFloor = FLOORS[to.top];
    if (toFloor === undefined) {
      out.push({ file, line, target, rule: 'upward', message: `imports ${target}, which is outside the floors` });
      continue;
    }
    const isIndex = target.endsWith(`${sep}index.ts`);
    if (to.top === from.top) {
      // within agents/: the catalog imports features, a feature another feature, only by index.ts
      if (!isIndex) out.push({ file, line, target, rule: 'internals', message: `imports ${target}: use ${to.module}/index.ts` });
      continue;
    }
    if (toFloor > floor) out.push({ file, line, target, rule: 'upward', message: `floor ${floor} (${from.top}/) imports floor ${toFloor} (${to.top}/): ${target}` });
    else if (toFloor === floor && !SIBLINGS.some(([a, b]) => a === from.top && b === to.top)) {
      out.push({ file, line, target, rule: 'sibling', message: `${from.top}/ and ${to.top}/ share floor ${floor} and may not import each other: ${target}` });
    } else if (!isIndex) out.push({ file, line, target, rule: 'internals', message: `imports ${target}: use ${to.module}/index.ts` });
  }
  if (from.top === 'shared-state') {
    src.split('\n').forEach((l, i) => {
      if (DOMAIN_WORDS.test(l)) out.push({ file, line: i + 1, target: '', rule: 'domain-in-mechanism', message: `shared-state/ is mechanism only, but names a domain type: ${l.trim()}` });
    });
  }
  return out;
}

function walk(dir: string, root: string, acc: string[]): string[] {
  for (const name of readdirSync(dir)) {
    if (name === 'node_modules' || name.startsWith('.')) continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, root, acc);
    else if (name.endsWith('.ts')) acc.push(relative(root, p));
  }
  return acc;
}

/** Every violation under `root`'s source folders. */
export function checkTree(root: string): Violation[] {
  const files = Object.keys(FLOORS).flatMap((top) => {
    try {
      return walk(join(root, top), root, []);
    } catch {
      return []; // a floor folder that does not exist yet (memory/)
    }
  });
  return files.flatMap((f) => checkSource(f, readFileSync(join(root, f), 'utf8')));
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const root = join(dirname(fileURLToPath(import.meta.url)), '..');
  const v = checkTree(root);
  if (process.argv.includes('--json')) console.log(JSON.stringify({ violations: v }));
  else if (v.length === 0) console.log('floors: every import points down a floor, through an index.ts');
  else for (const x of v) console.error(`${x.file}:${x.line}  [${x.rule}] ${x.message}`);
  process.exit(v.length ? 1 : 0);
}
