/**
 * Scrubbing of what leaves a process as diagnostics (log lines, spans, dead-letter reasons, error
 * texts): the values of this process's `KEEL_SECRET_*` variables (and of {@link SECRET_VARIABLES})
 * and operator tokens (`keel_op_<12 hex>_<43 base64url>`, engine/auth.ts's format, whoever's they
 * are) become `[SECRET]` and payment card numbers (13-19 digits, single spaces or dashes between
 * groups, a card prefix 2-6 and a valid Luhn check digit) become `[CARD]`.
 *
 * A match that is only part of a longer run of digits is not one: a secret `20242024` is not
 * found in `1202420245`, a card not inside a 20-digit number. Secret values shorter than
 * {@link MIN_SECRET_LENGTH} are not scrubbed by value at all (see there).
 *
 * Log lines are JSON: {@link scrubJsonLine} (the logger's hook) scrubs each string of the line
 * (decoded, then re-encoded) and replaces a number that is a secret or a card with the quoted
 * mark (`"retry_after_ms":"[SECRET]"`), so every line stays valid JSON.
 *
 * ```ts
 * import { scrub } from './observability/index.ts';
 * scrub(`login failed with ${process.env.KEEL_SECRET_SMTP_PASSWORD}`);  // 'login failed with [SECRET]'
 * scrub('card 4111 1111 1111 1111');                                   // 'card [CARD]'
 * ```
 *
 * It is cheap on purpose (it runs on every log line): a string with fewer than 13 digits is never
 * searched for cards, and the secret search is skipped when the process holds no secret.
 */

/**
 * Shorter secret values are not scrubbed by value: a 4-digit PIN such as `2024` would erase every
 * year in every timestamp, and a short word every word it is part of, making the logs useless
 * while hiding nothing a reader could not guess. Secrets that matter are longer (passwords, keys,
 * tokens); operator tokens are also found by their pattern. See docs/data-protection.md.
 */
export const MIN_SECRET_LENGTH = 8;

export const SECRET_MARK = '[SECRET]';
export const CARD_MARK = '[CARD]';

let cached: { at: number; values: string[] } | undefined;
/** How long this process's secret values are reused before `process.env` is read again. */
const SECRETS_TTL_MS = 1_000;

/**
 * The values of the `KEEL_SECRET_*` variables and {@link SECRET_VARIABLES} of `env` (default: this process's, re-read at most
 * once a second), longest first, each also in its JSON-escaped spelling when that differs (log
 * lines are JSON).
 */
export function secretValues(env?: Record<string, string | undefined>): readonly string[] {
  if (env) return readSecrets(env);
  const now = Date.now();
  if (!cached || now - cached.at > SECRETS_TTL_MS) cached = { at: now, values: readSecrets(process.env) };
  return cached.values;
}

/** Forgets the cached secret values (after changing `KEEL_SECRET_*` variables at run time). */
export function refreshSecrets(): void {
  cached = undefined;
}

/** Variables besides `KEEL_SECRET_*` whose values are secrets (bus passwords, the operator token, provider keys). */
export const SECRET_VARIABLES: readonly string[] = ['KEEL_NATS_PASSWORD', 'KEEL_AGENT_NATS_PASSWORD', 'KEEL_OPERATOR_TOKEN', 'OPENAI_API_KEY', 'ANTHROPIC_API_KEY'];

function readSecrets(env: Record<string, string | undefined>): string[] {
  const out = new Set<string>();
  for (const k of Object.keys(env)) {
    if (!k.startsWith('KEEL_SECRET_') && !SECRET_VARIABLES.includes(k)) continue;
    const v = env[k];
    if (!v || v.length < MIN_SECRET_LENGTH) continue;
    out.add(v);
    const json = JSON.stringify(v).slice(1, -1);
    if (json !== v) out.add(json);
  }
  return [...out].sort((a, b) => b.length - a.length);
}

/** The Luhn (mod 10) check of a string of digits. */
export function luhnValid(digits: string): boolean {
  let sum = 0;
  let double = false;
  for (let i = digits.length - 1; i >= 0; i--) {
    let d = digits.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return false;
    if (double) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    double = !double;
  }
  return digits.length > 0 && sum % 10 === 0;
}

function digitCount(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 48 && c <= 57) n++;
  }
  return n;
}

/** Runs of digit groups joined by one space or dash, not glued to letters or other digits. */
const DIGIT_RUN = /(?<![0-9A-Za-z])\d+(?:[ -]\d+)*(?![0-9A-Za-z])/g;

/** A payment card number found in a text: where, and its digits. */
export interface CardMatch {
  index: number;
  /** length in the text (separators included) */
  length: number;
  digits: string;
}

/**
 * Payment card numbers in `text`: 13-19 digits, written whole or in groups separated by single
 * spaces or dashes, starting with 2-6 (the card networks' prefixes), passing the Luhn check.
 * Inside a longer run of groups (`4111 1111 1111 1111 2024`) the card's groups are found too.
 */
export function findCards(text: string): CardMatch[] {
  if (text.length < 13 || digitCount(text) < 13) return [];
  const out: CardMatch[] = [];
  for (const m of text.matchAll(DIGIT_RUN)) {
    const run = m[0];
    if (digitCount(run) < 13) continue;
    // the groups of the run and where each starts
    const groups: { at: number; digits: string }[] = [];
    for (const g of run.matchAll(/\d+/g)) groups.push({ at: g.index, digits: g[0] });
    let i = 0;
    while (i < groups.length) {
      let best = -1;
      let digits = '';
      let bestDigits = '';
      for (let j = i; j < groups.length; j++) {
        digits += groups[j]!.digits;
        if (digits.length > 19) break;
        if (digits.length >= 13 && digits[0]! >= '2' && digits[0]! <= '6' && luhnValid(digits)) {
          best = j;
          bestDigits = digits;
        }
      }
      if (best < 0) {
        i++;
        continue;
      }
      const start = groups[i]!.at;
      const end = groups[best]!.at + groups[best]!.digits.length;
      out.push({ index: m.index + start, length: end - start, digits: bestDigits });
      i = best + 1;
    }
  }
  return out;
}

/** Replaces every card number found by {@link findCards} with `mark`. */
export function replaceCards(text: string, mark: string | ((c: CardMatch) => string) = CARD_MARK): string {
  const cards = findCards(text);
  if (cards.length === 0) return text;
  let out = '';
  let at = 0;
  for (const c of cards) {
    out += text.slice(at, c.index) + (typeof mark === 'string' ? mark : mark(c));
    at = c.index + c.length;
  }
  return out + text.slice(at);
}

/** Operator tokens (engine/auth.ts: `keel_op_<id: 12 hex>_<32 random bytes, base64url>`), found by their shape. */
export const OPERATOR_TOKEN_PATTERN = /(?<![A-Za-z0-9_-])keel_op_[0-9a-f]{12}_[A-Za-z0-9_-]{43,}/g;

const isDigitAt = (s: string, i: number) => {
  const c = s.charCodeAt(i);
  return c >= 48 && c <= 57;
};

/** `text` with every occurrence of `secret` replaced, except where the match is part of a longer digit run. */
function replaceSecret(text: string, secret: string): string {
  let i = text.indexOf(secret);
  if (i < 0) return text;
  const digitStart = isDigitAt(secret, 0);
  const digitEnd = isDigitAt(secret, secret.length - 1);
  let out = '';
  let at = 0;
  while (i >= 0) {
    if ((digitStart && i > 0 && isDigitAt(text, i - 1)) || (digitEnd && isDigitAt(text, i + secret.length))) {
      i = text.indexOf(secret, i + 1);
      continue;
    }
    out += text.slice(at, i) + SECRET_MARK;
    at = i + secret.length;
    i = text.indexOf(secret, at);
  }
  return at === 0 ? text : out + text.slice(at);
}

/** `text` with this process's secret values, operator tokens and any card number replaced (see the module's doc). */
export function scrub(text: string): string {
  if (!text) return text;
  let out = text;
  for (const s of secretValues()) if (out.includes(s)) out = replaceSecret(out, s);
  if (out.includes('keel_op_')) out = out.replace(OPERATOR_TOKEN_PATTERN, SECRET_MARK);
  return replaceCards(out);
}

const JSON_NUMBER = /-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/y;

/**
 * A JSON text (a log line) scrubbed so that it stays valid JSON: each string literal is decoded,
 * scrubbed and re-encoded; a number that is (or holds) a secret or a card becomes the quoted mark
 * (`"[SECRET]"`, `"[CARD]"`). Keys are strings and are scrubbed too. A text that is not JSON is
 * scrubbed as plain text.
 */
export function scrubJsonLine(line: string): string {
  if (!line) return line;
  const secrets = secretValues();
  // cheap exit: no secret, no operator token, and no card (one hidden behind an escape needs a backslash)
  if (!secrets.some((s) => line.includes(s)) && !line.includes('keel_op_') && (digitCount(line) < 13 || (!line.includes('\\') && findCards(line).length === 0))) return line;
  const head = line.trimStart()[0];
  if (head !== '{' && head !== '[') return scrub(line);
  let out = '';
  let at = 0;
  let i = 0;
  const n = line.length;
  while (i < n) {
    const c = line.charCodeAt(i);
    if (c === 34) {
      // a string literal: find its closing quote (skipping escapes)
      let j = i + 1;
      while (j < n) {
        const d = line.charCodeAt(j);
        if (d === 92) j += 2;
        else if (d === 34) break;
        else j++;
      }
      if (j >= n) return scrub(line); // not JSON after all
      const literal = line.slice(i, j + 1);
      let value: string;
      try {
        value = literal.includes('\\') ? (JSON.parse(literal) as string) : literal.slice(1, -1);
      } catch {
        return scrub(line);
      }
      const clean = scrub(value);
      if (clean !== value) {
        out += line.slice(at, i) + JSON.stringify(clean);
        at = j + 1;
      }
      i = j + 1;
    } else if (c === 45 || (c >= 48 && c <= 57)) {
      JSON_NUMBER.lastIndex = i;
      const m = JSON_NUMBER.exec(line);
      const token = m ? m[0] : line[i]!;
      const clean = m ? scrub(token) : token;
      if (clean !== token) {
        out += line.slice(at, i) + JSON.stringify(clean.includes(SECRET_MARK) ? SECRET_MARK : CARD_MARK);
        at = i + token.length;
      }
      i += token.length;
    } else i++;
  }
  return at === 0 ? line : out + line.slice(at);
}

/**
 * A scrubbed copy of any value (strings, arrays, plain objects and errors, `depth` levels deep);
 * the value itself when nothing needed scrubbing. Errors keep their class (the copy's prototype
 * is theirs), with message, stack, code and cause scrubbed.
 */
export function scrubValue<T>(value: T, depth = 6): T {
  if (typeof value === 'string') return scrub(value) as T;
  if (value === null || typeof value !== 'object' || depth <= 0) return value;
  if (Array.isArray(value)) {
    let changed = false;
    const out = value.map((v: unknown) => {
      const s = scrubValue(v, depth - 1);
      if (s !== v) changed = true;
      return s;
    });
    return (changed ? out : value) as T;
  }
  const proto = Object.getPrototypeOf(value) as object | null;
  const isError = value instanceof Error;
  if (!isError && proto !== Object.prototype && proto !== null) return value;
  let changed = false;
  const copy = Object.create(proto) as Record<string, unknown>;
  for (const key of Object.getOwnPropertyNames(value)) {
    const d = Object.getOwnPropertyDescriptor(value, key)!;
    // an error's `stack` is an own accessor in V8: read it from the original, copy it as data
    const v = 'value' in d ? (d.value as unknown) : isError ? (value as Record<string, unknown>)[key] : undefined;
    if (!('value' in d) && !isError) {
      Object.defineProperty(copy, key, d);
      continue;
    }
    const s = scrubValue(v, depth - 1);
    if (s !== v) changed = true;
    Object.defineProperty(copy, key, { value: s, writable: true, configurable: true, enumerable: d.enumerable ?? false });
  }
  return (changed ? copy : value) as T;
}
