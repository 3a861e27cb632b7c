/**
 * Option values every command reads the same way:
 *
 * - enumerated filters (`--status`, `--state`, …) refuse a value outside their list and name the
 *   valid ones ({@link enumOption});
 * - `--since` is a time: a duration back from now (`15m`, `2h`, `7d`) or an ISO timestamp
 *   ({@link parseSince}); positions in a log (the change log's cursor, the audit log's sequence
 *   number) are `--after N`;
 * - counts are integers ({@link intArg}).
 */
import { Option } from 'commander';
import { CliError } from './errors.ts';

/** `--status <status>` that takes only `values`; anything else is a CLI_BAD_ARGUMENT naming them. */
export function enumOption(flags: string, description: string, values: readonly string[]): Option {
  const name = flags.split(/[\s,]+/).find((f) => f.startsWith('--')) ?? flags;
  return new Option(flags, `${description}: ${values.join(' | ')}`).argParser((v: string) => {
    if (values.includes(v)) return v;
    throw new CliError('CLI_BAD_ARGUMENT', `${name} takes ${values.join(', ')}; got '${v}'`, { details: { option: name, value: v, valid: [...values] } });
  });
}

/** An integer option value (>= `min`). */
export function intArg(name: string, min = 0): (v: string) => number {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isInteger(n) || n < min) throw new CliError('CLI_BAD_ARGUMENT', `${name} must be an integer >= ${min} (got '${v}')`, { details: { option: name, value: v } });
    return n;
  };
}

const UNIT_MS: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/**
 * `--since`: a duration back from `now` (`90s`, `15m`, `2h`, `7d`, `2w`, also `1.5h`) or an ISO
 * timestamp (`2026-11-24`, `2026-11-24T09:00:00Z`) → an ISO time. A bare number is refused with
 * a pointer to `--after` when the command has a cursor (`afterHint`).
 */
export function parseSince(text: string, opts: { now?: number; option?: string; afterHint?: string } = {}): string {
  const option = opts.option ?? '--since';
  const t = text.trim();
  const m = /^(\d+(?:\.\d+)?)\s*([smhdw])$/i.exec(t);
  if (m) {
    const ms = Number(m[1]) * UNIT_MS[m[2]!.toLowerCase()]!;
    if (Number.isFinite(ms) && ms > 0) return new Date((opts.now ?? Date.now()) - ms).toISOString();
  }
  if (/^\d{4}-\d{2}-\d{2}([T ][\d:.]+)?(Z|[+-]\d{2}:?\d{2})?$/i.test(t)) {
    const ms = Date.parse(t);
    if (Number.isFinite(ms)) return new Date(ms).toISOString();
  }
  const hint = /^\d+$/.test(t) && opts.afterHint ? ` ('${t}' looks like a position in the log: use ${opts.afterHint} ${t})` : '';
  throw new CliError('CLI_BAD_ARGUMENT', `${option} takes a duration (15m, 2h, 7d; units s m h d w) or an ISO time (2026-11-24T09:00:00Z); got '${text}'${hint}`, { details: { option, value: text } });
}
