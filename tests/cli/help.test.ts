/**
 * Every `keel` command's --help carries an example, and the option helpers hold the one contract
 * (enumerated values named, --since a time, --after a position).
 */
import { describe, expect, it } from 'vitest';
import { Command } from 'commander';
import { addExamples, commandPath, examplesOf, EXAMPLES } from '../../cli/help.ts';
import { enumOption, parseSince } from '../../cli/args.ts';
import { usageErrorCode } from '../../cli/errors.ts';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../../config/index.ts';

/** Every command module keel.ts loads (read from its source, so a new module is covered too). */
const modules = [...readFileSync(join(REPO_ROOT, 'cli', 'keel.ts'), 'utf8').matchAll(/import\('\.\/commands\/([\w-]+\.ts)'\)/g)].map((m) => m[1]!);
const registers: Array<(p: Command) => void> = [];
for (const m of modules) {
  const mod = (await import(join(REPO_ROOT, 'cli', 'commands', m))) as Record<string, unknown>;
  for (const [name, fn] of Object.entries(mod)) if (name.startsWith('register') && typeof fn === 'function') registers.push(fn as (p: Command) => void);
}

function program(): Command {
  const p = new Command().name('keel');
  for (const r of registers) r(p);
  return p;
}

const all = (c: Command): Command[] => [c, ...c.commands.flatMap(all)];

describe('keel --help', () => {
  it('every command (and the program) shows at least one example', () => {
    expect(modules).toEqual(expect.arrayContaining(['tickets.ts', 'approvals.ts', 'state.ts', 'init.ts']));
    const p = program();
    const missing = all(p).filter((c) => examplesOf(c).length === 0).map((c) => commandPath(c) || 'keel');
    expect(missing).toEqual([]);
    // every leaf command has its own examples, each a keel command line
    for (const c of all(p).filter((x) => x.commands.length === 0)) {
      expect(EXAMPLES[commandPath(c)], commandPath(c)).toBeDefined();
      for (const e of EXAMPLES[commandPath(c)]!) expect(e, commandPath(c)).toMatch(new RegExp(`^(\\S+=\\S+ )*keel ${commandPath(c)}( |$)`));
    }
  });

  it('prints the examples under the help text', () => {
    const p = program();
    addExamples(p);
    const tickets = p.commands.find((c) => c.name() === 'tickets')!;
    let out = '';
    tickets.configureOutput({ writeOut: (s) => (out += s) });
    tickets.outputHelp();
    expect(out).toMatch(/Examples:\n {2}\$ keel tickets --status open --since 1d\n {2}\$ keel tickets --customer alice@example\.com/);
    expect(out).toMatch(/--status <status>\s+only tickets in this status: open \| pending \| escalated \|\s+resolved \| closed/);
  });
});

describe('option values', () => {
  it('an enumerated option refuses other values and names the valid ones', () => {
    const o = enumOption('--state <state>', 'state', ['pending', 'approved']);
    expect(o.parseArg!('approved', undefined)).toBe('approved');
    expect(() => o.parseArg!('bogus', undefined)).toThrow(expect.objectContaining({ code: 'CLI_BAD_ARGUMENT', message: "--state takes pending, approved; got 'bogus'", details: { option: '--state', value: 'bogus', valid: ['pending', 'approved'] } }));
  });

  it('--since is a duration or an ISO time; a bare number points at --after', () => {
    const now = Date.parse('2026-11-25T12:00:00Z');
    expect(parseSince('15m', { now })).toBe('2026-11-25T11:45:00.000Z');
    expect(parseSince('2h', { now })).toBe('2026-11-25T10:00:00.000Z');
    expect(parseSince('7d', { now })).toBe('2026-11-18T12:00:00.000Z');
    expect(parseSince('2026-11-24', { now })).toBe('2026-11-24T00:00:00.000Z');
    expect(parseSince('2026-11-24T09:30:00+01:00', { now })).toBe('2026-11-24T08:30:00.000Z');
    expect(() => parseSince('yesterday')).toThrow(/--since takes a duration \(15m, 2h, 7d; units s m h d w\) or an ISO time/);
    expect(() => parseSince('42', { afterHint: '--after' })).toThrow(/use --after 42/);
  });

  it('maps commander usage errors to UPPER_SNAKE codes', () => {
    expect(usageErrorCode('commander.unknownOption')).toBe('CLI_UNKNOWN_OPTION');
    expect(usageErrorCode('commander.missingArgument')).toBe('CLI_MISSING_ARGUMENT');
    expect(usageErrorCode('commander.unknownCommand')).toBe('CLI_UNKNOWN_COMMAND');
    expect(usageErrorCode('commander.somethingNew')).toBe('CLI_USAGE');
  });
});
