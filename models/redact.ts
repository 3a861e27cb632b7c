/**
 * Data stays home: before a prompt goes to a cloud provider, personal data and secrets in it are
 * replaced by placeholders, and the placeholders in the model's answer are put back.
 *
 * ```ts
 * const r = createRedactor({ values: ['+49 176 5550123'] });   // + the default kinds, + KEEL_SECRET_* values
 * const sent = r.redact('Call me at +49 176 5550123 or write to ada@example.com');
 * // 'Call me at [PHONE_1] or write to [EMAIL_1]'     r.map: [PHONE_1] → '+49 176 5550123', [EMAIL_1] → 'ada@example.com'
 * r.restore('We will call [PHONE_1] today.');          // 'We will call +49 176 5550123 today.'
 * ```
 *
 * Default kinds: e-mail addresses (`[EMAIL_n]`), phone numbers (`[PHONE_n]`: international `+…`,
 * national with a trunk 0, North-American 3-3-4, and digit runs after "phone:", "tel", "call me at"…),
 * payment card numbers (`[CARD_n]`: 13-19 digits, Luhn-checked), IBANs (`[IBAN_n]`: mod-97
 * checked, any case), postal street addresses where recognizable (`[ADDRESS_n]`: "12 Baker Street",
 * "Hauptstraße 5", "12 rue de la Paix"), the values of this process's `KEEL_SECRET_*` variables
 * (`[SECRET_n]`), and the values of entity fields declared `sensitive` (`[VALUE_n]`, or EMAIL/PHONE
 * when the value is one). The same value always gets the same placeholder within one redactor.
 *
 * A secret's placeholder is never restored: a model that echoes `[SECRET_1]` gets no secret into
 * a reply that may be sent to a customer.
 *
 * Text in the input that already looks like a placeholder (a customer typing `[EMAIL_2]`) is
 * escaped first: it becomes a `[LITERAL_n]` placeholder whose value is that text, so the model
 * never sees a placeholder it did not get from the redactor, and restoring gives the customer's
 * text back rather than someone's address. {@link ownRestorer} restores only the placeholders of
 * one part of a prompt (models/batch.ts: each item's answer gets only its own item's values).
 *
 * `invokeModel` applies it to every call whose provider is a cloud one ({@link CLOUD_PROVIDERS}),
 * as `KEEL_REDACT` says (`cloud` default, `all`, `off`). See docs/data-protection.md.
 */
import { coerceMessageLikeToMessage, isBaseMessage, type AIMessage, type BaseMessageLike } from '@langchain/core/messages';
import type { BaseLanguageModelInput } from '@langchain/core/language_models/base';
import { findCards, MIN_SECRET_LENGTH, secretValues } from '../observability/index.ts';
import { sensitiveFieldsOf, sensitiveValuesOf, type State } from '../shared-state/index.ts';

export type RedactMode = 'cloud' | 'all' | 'off';
export const REDACT_MODES: readonly RedactMode[] = ['cloud', 'all', 'off'];
export const DEFAULT_REDACT_MODE: RedactMode = 'cloud';

/** Providers whose calls leave the machine: their prompts are redacted under `KEEL_REDACT=cloud`. */
export const CLOUD_PROVIDERS: readonly string[] = ['openai', 'anthropic'];

export function isCloudProvider(provider: string): boolean {
  return CLOUD_PROVIDERS.includes(provider);
}

/** Whether a call to `provider` is redacted under `mode`. */
export function shouldRedact(mode: RedactMode, provider: string): boolean {
  return mode === 'all' || (mode === 'cloud' && isCloudProvider(provider));
}

/** `KEEL_REDACT` of `env` (default this process's); an unknown value is refused rather than read as `off`. */
export function redactModeOf(env: Record<string, string | undefined> = process.env): RedactMode {
  const v = (env.KEEL_REDACT ?? '').trim().toLowerCase();
  if (!v) return DEFAULT_REDACT_MODE;
  if ((REDACT_MODES as readonly string[]).includes(v)) return v as RedactMode;
  // fail closed: a typo must not turn redaction off
  return 'all';
}

export type SensitiveKind = 'email' | 'phone' | 'card' | 'iban' | 'address' | 'secret' | 'value';
export const SENSITIVE_KINDS: readonly SensitiveKind[] = ['email', 'phone', 'card', 'iban', 'address', 'secret', 'value'];
const LABEL: Record<SensitiveKind, string> = { email: 'EMAIL', phone: 'PHONE', card: 'CARD', iban: 'IBAN', address: 'ADDRESS', secret: 'SECRET', value: 'VALUE' };
const KIND_OF_LABEL = Object.fromEntries(Object.entries(LABEL).map(([k, v]) => [v, k as SensitiveKind])) as Record<string, SensitiveKind>;
/** A placeholder as restored (the model may add spaces inside the brackets); LITERAL marks escaped input text. */
const PLACEHOLDER = /\[\s*(EMAIL|PHONE|CARD|IBAN|ADDRESS|SECRET|VALUE|LITERAL)_(\d+)\s*\]/g;

export interface RedactorOptions {
  /** secret values to redact; default this process's `KEEL_SECRET_*` values */
  secrets?: readonly string[];
  /** values of sensitive fields (entity fields declared `sensitive`): redacted wherever they appear */
  values?: readonly string[];
  /** the pattern kinds looked for; default all (`secret` and `value` come from the lists above) */
  kinds?: readonly Exclude<SensitiveKind, 'secret' | 'value'>[];
}

export interface Redactor {
  /** `text` with every sensitive value replaced by its placeholder (`[EMAIL_1]`, `[CARD_2]` …) */
  redact(text: string): string;
  /** the placeholders of this redactor in `text` replaced by their values (secrets excepted); with `only`, just those placeholders */
  restore(text: string, only?: ReadonlySet<string>): string;
  /** placeholder → original value */
  readonly map: ReadonlyMap<string, string>;
  /** how many distinct values of each kind were redacted so far */
  counts(): Partial<Record<SensitiveKind, number>>;
}

const EMAIL = /(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+/g;
/** IBANs in any case (`de89 3704 …` too); mod-97 checked below, and one not all in upper case needs ≥ 10 digits. */
const IBAN = /(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]{1,4}){3,8}(?![A-Za-z0-9])/g;
const ibanCandidate = (s: string) => ibanValid(s) && (s === s.toUpperCase() || digitsOf(s).length >= 10);
const PHONE_INTL = /(?<![\w+])\+\d{1,3}(?:[ .\-/]?\(?\d{1,5}\)?){2,6}(?![\w])/g;
const PHONE_NATIONAL = /(?<![\w\-/.+])\(?0\d{1,5}\)?(?:[ \-/]?\d{2,}){1,4}(?![\w])/g;
const PHONE_NANP = /(?<![\w\-+])(?:\(\d{3}\)\s?|\d{3}[-. ])\d{3}[-. ]\d{4}(?![\w-])/g;
const PHONE_CUE = /\b(?:phone|tel|telephone|mobile|cell|fax|whatsapp|call me(?: back)?(?: at| on)?|reach me (?:at|on)|handy|telefon|mobil|téléphone|portable|teléfono|móvil)\b\s*(?:number|no\.?|nr\.?|:|#)?\s*:?\s*(\+?\(?\d[\d ().\-/]{5,}\d)/giu;
const DATE_LIKE = /^\d{1,2}[.\-/]\d{1,2}[.\-/]\d{2,4}\b/;
const STREET_EN = /\b\d{1,5}[A-Za-z]?,?\s+(?:[A-Z][A-Za-z'.-]*\s+){1,3}(?:Street|St\.?|Avenue|Ave\.?|Road|Rd\.?|Boulevard|Blvd\.?|Lane|Ln\.?|Drive|Dr\.?|Court|Ct\.?|Place|Pl\.?|Terrace|Square|Sq\.?|Parkway|Pkwy\.?|Highway|Hwy\.?)(?![\w])/g;
const STREET_DE = /(?<![\p{L}])(?:[A-ZÄÖÜ][\p{L}-]*(?:straße|strasse|str\.|weg|allee|platz|gasse|damm|ring|ufer)|(?:[A-ZÄÖÜ][\p{L}-]*\s+)?(?:Straße|Strasse|Str\.|Weg|Allee|Platz|Gasse|Damm|Ring|Ufer))\s+\d{1,4}\s?[a-z]?(?![\p{L}\d])/gu;
const STREET_FR = /\b\d{1,4}(?:\s?(?:bis|ter))?,?\s+(?:rue|avenue|boulevard|bd|place|chemin|allée|impasse|quai|calle|avenida|paseo)\s+(?:(?:de|du|des|la|le|l'|d'|del)\s*)*[A-ZÉÈÀ][\p{L}'-]*(?:\s+[A-ZÉÈÀ][\p{L}'-]*){0,3}/gu;

const digitsOf = (s: string) => s.replace(/\D/g, '');

/** The ISO 13616 check of an IBAN (spaces removed): mod 97 of the rearranged number is 1. */
export function ibanValid(iban: string): boolean {
  const s = iban.replace(/\s/g, '').toUpperCase();
  if (!/^[A-Z]{2}\d{2}[A-Z0-9]{11,30}$/.test(s)) return false;
  const moved = s.slice(4) + s.slice(0, 4);
  let rem = 0;
  for (const ch of moved) {
    const v = ch >= 'A' ? String(ch.charCodeAt(0) - 55) : ch;
    for (const d of v) rem = (rem * 10 + (d.charCodeAt(0) - 48)) % 97;
  }
  return rem === 1;
}

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const isEmail = (v: string) => /^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(v);
/** A phone-shaped value: digits (7 to 15) with only the separators phones are written with. */
const isPhone = (v: string) => /^\+?[\d\s().\-/]+$/.test(v) && digitsOf(v).length >= 7 && digitsOf(v).length <= 15;

/** A pattern for a known value: phones in any spacing (`+49 176 5550123` = `+491765550123`), others as written, case-insensitively. */
function valuePattern(v: string): RegExp {
  if (isPhone(v)) {
    const d = digitsOf(v);
    const body = d.split('').map(escapeRe).join('[\\s().\\-/]{0,2}');
    return new RegExp(`(?<![\\w+])\\+?${body}(?![\\w])`, 'g');
  }
  return new RegExp(`(?<![\\p{L}\\p{N}])${escapeRe(v)}(?![\\p{L}\\p{N}])`, 'giu');
}

/**
 * A redactor (see the module's doc). One per model call: placeholders are numbered per redactor,
 * and the same value always gets the same one, so a multi-message prompt is consistent.
 */
export function createRedactor(o: RedactorOptions = {}): Redactor {
  const kinds = new Set(o.kinds ?? ['email', 'phone', 'card', 'iban', 'address']);
  const secrets = [...new Set((o.secrets ?? secretValues()).filter((s) => s.length >= MIN_SECRET_LENGTH))].sort((a, b) => b.length - a.length);
  const values = [...new Set((o.values ?? []).map((v) => v.trim()).filter((v) => v.length >= 3))].sort((a, b) => b.length - a.length);
  const valuePatterns = values.map((v) => ({ v, re: valuePattern(v), kind: (isEmail(v) ? 'email' : isPhone(v) ? 'phone' : 'value') as SensitiveKind }));
  const map = new Map<string, string>();
  const byKey = new Map<string, string>();
  const counter: Partial<Record<SensitiveKind, number>> = {};

  const keyOf = (kind: SensitiveKind, value: string) => {
    if (kind === 'card' || kind === 'phone') return `${kind}:${digitsOf(value)}`;
    if (kind === 'email' || kind === 'iban') return `${kind}:${value.replace(/\s/g, '').toLowerCase()}`;
    return `${kind}:${value}`;
  };
  const placeholder = (kind: SensitiveKind, value: string): string => {
    const key = keyOf(kind, value);
    const seen = byKey.get(key);
    if (seen) return seen;
    const n = (counter[kind] ?? 0) + 1;
    counter[kind] = n;
    const p = `[${LABEL[kind]}_${n}]`;
    byKey.set(key, p);
    map.set(p, value);
    return p;
  };
  let literals = 0;
  /** input text shaped like a placeholder → `[LITERAL_n]` (restored to that text) */
  const escapeLiteral = (m: string): string => {
    const key = `literal:${m}`;
    const seen = byKey.get(key);
    if (seen) return seen;
    const p = `[LITERAL_${++literals}]`;
    byKey.set(key, p);
    map.set(p, m);
    return p;
  };
  /**
   * `text` with its IBANs replaced. A match of {@link IBAN} may run into neighbouring words
   * (`iban de89… or de89 3704 …`): from each word of it that can start one, the longest valid run
   * of words is taken, and the search goes on right after it (or after the match's start when none is).
   */
  const ibans = (text: string): string => {
    const re = new RegExp(IBAN.source, 'g');
    let out = '';
    let at = 0;
    for (let m = re.exec(text); m; m = re.exec(text)) {
      const parts = m[0].split(' ');
      let offset = 0;
      let found = false;
      for (let i = 0; i < parts.length && !found; offset += parts[i]!.length + 1, i++) {
        if (!/^[A-Za-z]{2}\d{2}/.test(parts[i]!)) continue;
        for (let n = parts.length; n > i; n--) {
          const cand = parts.slice(i, n).join(' ');
          if (!ibanCandidate(cand)) continue;
          const start = m.index + offset;
          out += text.slice(at, start) + placeholder('iban', cand);
          at = start + cand.length;
          found = true;
          break;
        }
      }
      re.lastIndex = found ? at : m.index + 1;
    }
    return at === 0 ? text : out + text.slice(at);
  };
  const replaceAll = (text: string, re: RegExp, kind: SensitiveKind, accept: (m: string) => boolean = () => true) =>
    text.replace(re, (m: string) => (accept(m) ? placeholder(kind, m) : m));

  return {
    map,
    counts: () => ({ ...counter }),
    redact(text) {
      if (!text) return text;
      // placeholders already in the input are the input's text, never a placeholder of ours
      let t = text.replace(PLACEHOLDER, escapeLiteral);
      for (const s of secrets) if (t.includes(s)) t = t.split(s).join(placeholder('secret', s));
      for (const { re, kind } of valuePatterns) t = replaceAll(t, re, kind);
      if (kinds.has('email') && t.includes('@')) t = replaceAll(t, EMAIL, 'email');
      if (kinds.has('iban')) t = ibans(t);
      if (kinds.has('card')) {
        const cards = findCards(t);
        if (cards.length) {
          let out = '';
          let at = 0;
          for (const c of cards) {
            out += t.slice(at, c.index) + placeholder('card', t.slice(c.index, c.index + c.length));
            at = c.index + c.length;
          }
          t = out + t.slice(at);
        }
      }
      if (kinds.has('phone')) {
        t = t.replace(PHONE_CUE, (m, num: string) => {
          const d = digitsOf(num).length;
          return d >= 7 && d <= 15 ? m.slice(0, m.length - num.length) + placeholder('phone', num.trim()) : m;
        });
        t = replaceAll(t, PHONE_INTL, 'phone', (m) => digitsOf(m).length >= 8 && digitsOf(m).length <= 15);
        t = replaceAll(t, PHONE_NANP, 'phone');
        t = replaceAll(t, PHONE_NATIONAL, 'phone', (m) => digitsOf(m).length >= 9 && digitsOf(m).length <= 13 && !DATE_LIKE.test(m));
      }
      if (kinds.has('address')) {
        t = replaceAll(t, STREET_EN, 'address');
        t = replaceAll(t, STREET_DE, 'address');
        t = replaceAll(t, STREET_FR, 'address');
      }
      return t;
    },
    restore(text, only) {
      if (!text || map.size === 0) return text;
      return text.replace(PLACEHOLDER, (m, label: string, n: string) => {
        if (KIND_OF_LABEL[label] === 'secret') return m;
        const p = `[${label}_${n}]`;
        if (only && !only.has(p)) return m;
        return map.get(p) ?? m;
      });
    },
  };
}

/** The placeholders (`[EMAIL_1]`, spaces inside the brackets removed) in an already redacted `text`. */
export function placeholdersIn(text: string): Set<string> {
  return new Set([...text.matchAll(PLACEHOLDER)].map((m) => `[${m[1]}_${m[2]}]`));
}

/**
 * A restorer for an answer about one part of a prompt (`source`, as it was before redaction): it
 * restores only the placeholders `r` gives that part, so an answer can never receive values that
 * only another part (another customer's batch item) held. Call it after `r` redacted the prompt.
 */
export function ownRestorer(r: Redactor, source: string): (text: string) => string {
  const own = placeholdersIn(r.redact(source));
  return (text) => r.restore(text, own);
}

/** One-shot: `text` redacted, and the placeholder map. */
export function redactText(text: string, o: RedactorOptions = {}): { text: string; map: ReadonlyMap<string, string> } {
  const r = createRedactor(o);
  return { text: r.redact(text), map: r.map };
}

type Content = string | Array<Record<string, unknown> | string>;

function redactContent(c: unknown, f: (s: string) => string): unknown {
  if (typeof c === 'string') return f(c);
  if (Array.isArray(c)) return c.map((part: unknown) => (typeof part === 'string' ? f(part) : part && typeof part === 'object' && typeof (part as { text?: unknown }).text === 'string' ? { ...(part as object), text: f((part as { text: string }).text) } : part));
  return c;
}

/**
 * The messages of a model call with every text content redacted: strings, `[role, content]`
 * tuples, `{ role, content }` objects, LangChain messages (same class, new content) and prompt values.
 */
export function redactMessages(messages: BaseLanguageModelInput, r: Redactor): BaseLanguageModelInput {
  const f = (s: string) => r.redact(s);
  if (typeof messages === 'string') return f(messages);
  const list: BaseMessageLike[] = Array.isArray(messages) ? (messages as BaseMessageLike[]) : (messages as { toChatMessages(): BaseMessageLike[] }).toChatMessages();
  return list.map((m): BaseMessageLike => {
    if (typeof m === 'string') return f(m);
    if (Array.isArray(m)) return [m[0], redactContent(m[1], f) as Content] as BaseMessageLike;
    if (isBaseMessage(m)) {
      const content = redactContent(m.content, f);
      // a history message's tool calls and provider extras (OpenAI `tool_calls[].function.arguments`…) go out too
      const extra = redactExtras(m as unknown as Record<string, unknown>, f);
      if (content === m.content && Object.keys(extra).length === 0) return m;
      const copy = Object.assign(Object.create(Object.getPrototypeOf(m) as object) as object, m, { content, ...extra }) as typeof m;
      const kw = (m as unknown as { lc_kwargs?: Record<string, unknown> }).lc_kwargs;
      if (kw) (copy as unknown as { lc_kwargs: Record<string, unknown> }).lc_kwargs = { ...kw, content, ...extra };
      return copy;
    }
    if (m && typeof m === 'object' && 'content' in m) return { ...(m as object), content: redactContent((m as { content: unknown }).content, f), ...redactExtras(m as Record<string, unknown>, f) } as BaseMessageLike;
    return coerceMessageLikeToMessage(m);
  });
}

/** Every string in `v` (arrays and objects, `depth` levels deep) passed through `f`. */
function mapDeep(v: unknown, f: (s: string) => string, depth = 8): unknown {
  if (typeof v === 'string') return f(v);
  if (depth <= 0 || v === null || typeof v !== 'object') return v;
  if (Array.isArray(v)) return v.map((x) => mapDeep(x, f, depth - 1));
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, mapDeep(x, f, depth - 1)]));
}
const restoreDeep = mapDeep;

/** The tool calls (`args`, `function.arguments`) and `additional_kwargs` of a message, redacted: only the fields it has. */
function redactExtras(m: Record<string, unknown>, f: (s: string) => string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const calls = (list: unknown) =>
    (list as Record<string, unknown>[]).map((c) => {
      if (!c || typeof c !== 'object') return c;
      const x: Record<string, unknown> = { ...c };
      if ('args' in c) x.args = mapDeep(c.args, f);
      const fn = c.function as Record<string, unknown> | undefined;
      if (fn && typeof fn === 'object') x.function = { ...fn, ...('arguments' in fn ? { arguments: mapDeep(fn.arguments, f) } : {}) };
      return x;
    });
  if (Array.isArray(m.tool_calls) && m.tool_calls.length) out.tool_calls = calls(m.tool_calls);
  if (Array.isArray(m.invalid_tool_calls) && m.invalid_tool_calls.length) out.invalid_tool_calls = calls(m.invalid_tool_calls);
  if (m.additional_kwargs && typeof m.additional_kwargs === 'object' && Object.keys(m.additional_kwargs).length) out.additional_kwargs = mapDeep(m.additional_kwargs, f);
  return out;
}

/** The model's answer with the redactor's placeholders restored, in its text and in its tool calls' arguments. */
export function restoreMessage<M extends AIMessage>(message: M, r: Redactor): M {
  if (r.map.size === 0) return message;
  const f = (s: string) => r.restore(s);
  const content = redactContent(message.content, f);
  const toolCalls = message.tool_calls?.map((c) => ({ ...c, args: restoreDeep(c.args, f) as Record<string, unknown> }));
  const copy = Object.assign(Object.create(Object.getPrototypeOf(message) as object) as object, message, { content }) as M;
  if (toolCalls) copy.tool_calls = toolCalls;
  const kw = (message as unknown as { lc_kwargs?: Record<string, unknown> }).lc_kwargs;
  if (kw) (copy as unknown as { lc_kwargs: Record<string, unknown> }).lc_kwargs = { ...kw, content, ...(toolCalls ? { tool_calls: toolCalls } : {}) };
  return copy;
}

/** Where the values of sensitive fields are read: a `StateStore` is one. */
export interface SensitiveSource {
  typesOf(entityId: string): Promise<string[]>;
  get(entityType: string, entityId: string): Promise<{ state: unknown } | null>;
}

/** `x` as a {@link SensitiveSource} when it is one (the runtime's cost sink is its StateStore). */
export function sensitiveSourceOf(x: unknown): SensitiveSource | undefined {
  const s = x as Partial<SensitiveSource> | null | undefined;
  return s && typeof s.get === 'function' && typeof s.typesOf === 'function' ? (s as SensitiveSource) : undefined;
}

/** An entity whose sensitive values a prompt may hold; without `entityType`, every type with that id that declares sensitive fields. */
export interface SensitiveRef {
  entityType?: string;
  entityId: string;
}

/** The values of the sensitive fields of the entities `refs` name, read from `source`. */
export async function sensitiveValuesFor(source: SensitiveSource, refs: readonly SensitiveRef[]): Promise<string[]> {
  const out = new Set<string>();
  const seen = new Set<string>();
  for (const ref of refs) {
    if (!ref.entityId) continue;
    const types = ref.entityType ? [ref.entityType] : await source.typesOf(ref.entityId);
    for (const type of types) {
      const key = `${type}/${ref.entityId}`;
      if (seen.has(key) || sensitiveFieldsOf(type).length === 0) continue;
      seen.add(key);
      const e = await source.get(type, ref.entityId);
      if (e && e.state && typeof e.state === 'object') for (const v of sensitiveValuesOf(type, e.state as State)) out.add(v);
    }
  }
  return [...out];
}
