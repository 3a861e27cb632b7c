/**
 * The intent cache: a model answer is served again, at no cost, to a later request that asks the
 * same thing. "The same thing" is decided in two steps, and both must agree:
 *
 * 1. **the guard** (exact, no model): the two requests carry exactly the same entities — numbers
 *    (order and invoice numbers, amounts, quantities, error codes), currencies, dates (weekdays,
 *    months, yesterday/today/tomorrow, in en/de/fr/es), e-mail addresses and URLs, and the
 *    capitalized names of products, places and integrations — and the same polarity: as many
 *    negations (not, n't, never, no, nothing, no longer, kein, nicht, ne…pas, jamais, no, nunca …)
 *    and the same action verbs from each antonym pair (cancel/keep, add/remove, enable/disable,
 *    upgrade/downgrade, subscribe/unsubscribe, accept/reject …). "Refund order 4417" and "refund
 *    order 4471", "I can log in" and "I can't log in" never share an answer, however close their
 *    vectors are (semantic caches at a 0.8 cosine threshold serve a question's negation).
 * 2. **the neighbourhood**: the cosine similarity of the two requests' embeddings (an injected
 *    LangChain `Embeddings`: the runtime passes the memory layer's embedder) is at least the
 *    threshold ({@link DEFAULT_INTENT_CACHE_THRESHOLD}, measured on the committed pair set
 *    `models/fixtures/intent-cache-pairs.json`, see docs/models-and-cost.md).
 *
 * Only entries of the same capability, normalized intent and customer scope are candidates.
 *
 * Entries are entities of type `model_intent_cache` in the shared state (so every agent process
 * shares them, on SQLite or MongoDB): the answer, the request's vector and signature, the
 * entities the answer used (`uses`: `ticket/T-1`, `order/4417`), and `expiresAt` (TTL,
 * `KEEL_INTENT_CACHE_TTL`). A change event of an entity an answer used deletes the entry
 * ({@link IntentCache.invalidateFromChanges}).
 *
 * ```ts
 * const cache = createIntentCache({ store, embeddings, ttlS: cfg.intentCacheTtlS });
 * const r = await cachedCall({
 *   cache, costs: store, attribution,
 *   request: { capability: 'ticket.suggest-reply', intent: 'refund', scope: 'customer:C-7', text, uses: ['ticket/T-1'] },
 *   call: () => routeAndCall({ ... }),      // runs only on a miss; its answer is stored
 * });
 * r.cacheHit;  // true: a ledger record with costUsd 0 and details { cacheHit: true, savedUsd }
 * ```
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { EmbeddingsInterface } from '@langchain/core/embeddings';
import { defineEntityType, type CommittedEvent, type CostInput, type StateStore } from '../shared-state/index.ts';
import { roundUsd, type TokenUsage } from './prices.ts';

// the shapes of invoke.ts's CostAttribution and CostSink, restated: budgets.ts lists this file's
// entity type and invoke.ts imports budgets.ts, so importing invoke.ts here would close a cycle
interface CostAttribution {
  agent: string;
  capability: string;
  runId?: string;
  customerId?: string;
  entityType?: string;
  entityId?: string;
}
interface CostSink {
  recordCost(rec: CostInput): Promise<unknown>;
}

export const INTENT_CACHE = 'model_intent_cache';

/**
 * The cosine similarity at or above which two guarded requests share an answer. Measured with
 * the default embedder (all-MiniLM-L6-v2) on `models/fixtures/intent-cache-pairs.json`: see
 * docs/models-and-cost.md "Intent cache" for the figures behind it.
 */
export const DEFAULT_INTENT_CACHE_THRESHOLD = 0.75;
/** Candidates compared per lookup (the newest first). */
const MAX_CANDIDATES = 500;

const signatureSchema = z.object({ entities: z.array(z.string()), negations: z.number().int(), actions: z.array(z.string()) });

/** The entity type of cache entries; listed in `MODEL_ENTITY_TYPES` so the store knows it. */
export const intentCacheType = defineEntityType({
  name: INTENT_CACHE,
  schemaVersion: 1,
  schema: z.object({
    capability: z.string(),
    intent: z.string(),
    scope: z.string(),
    /** the request, normalized (at most 2,000 characters) */
    text: z.string(),
    embedder: z.string(),
    vector: z.array(z.number()),
    signature: signatureSchema,
    answer: z.object({
      text: z.string(),
      model: z.string(),
      costUsd: z.number(),
      usage: z.object({ inputTokens: z.number(), outputTokens: z.number(), cachedTokens: z.number() }),
    }),
    uses: z.array(z.string()).default([]),
    expiresAt: z.string(),
  }),
  searchFields: ['intent', 'scope'],
});

/** What the guard compares: it must be equal for two requests to share an answer. */
export type RequestSignature = z.infer<typeof signatureSchema>;

export interface CachedAnswer {
  text: string;
  model: string;
  /** what the call that produced it cost */
  costUsd: number;
  usage: TokenUsage;
}

export interface CacheRequest {
  /** what is asked of the model, e.g. `ticket.suggest-reply`: answers of another capability never match */
  capability: string;
  /** the request's intent label (e.g. the triage's `refund`); normalized (trimmed, lower case) */
  intent: string;
  /** whose answer it is: `customer:<id>` for personal answers, `global` for answers anyone may get */
  scope: string;
  /** the request text (the customer's message) */
  text: string;
  /** extra entities the caller extracted (e.g. the triage's `ORDER:4417`): they must match too */
  entities?: readonly string[];
  /** entities the answer used (`ticket/T-1`, `order/4417`): a change event of one deletes the entry */
  uses?: readonly string[];
}

export type CacheLookup =
  | { hit: true; answer: CachedAnswer; entryId: string; similarity: number }
  | { hit: false; reason: string; bestSimilarity?: number };

export interface IntentCacheOptions {
  store: StateStore;
  /** any LangChain embeddings (the runtime passes the memory layer's embedder) */
  embeddings: EmbeddingsInterface;
  /** the embedder's name, stored with every vector (vectors of two models are never compared); default its `id` or 'embeddings' */
  embedder?: string;
  /** time to live of an entry in seconds (`KEEL_INTENT_CACHE_TTL`); 0 disables the cache */
  ttlS: number;
  /** cosine similarity needed for a hit; default {@link DEFAULT_INTENT_CACHE_THRESHOLD} */
  threshold?: number;
  /** names of the business's products and plans (matched exactly, like the capitalized names) */
  products?: readonly string[];
  /** clock, for tests */
  now?: () => Date;
}

export interface IntentCache {
  readonly threshold: number;
  lookup(req: CacheRequest): Promise<CacheLookup>;
  /** stores the answer to `req` (replacing an entry for the same normalized request) */
  put(req: CacheRequest, answer: CachedAnswer): Promise<{ entryId: string }>;
  /** deletes every entry whose answer used one of these entities (`type/id`); returns how many */
  invalidate(refs: readonly string[]): Promise<number>;
  /** reads the store's change log after `cursor`, invalidates by every changed entity, returns the new cursor */
  invalidateFromChanges(cursor: number): Promise<{ cursor: number; invalidated: number }>;
}

// ---- the guard ---------------------------------------------------------------------------

const WEEKDAYS = 'monday|tuesday|wednesday|thursday|friday|saturday|sunday|montag|dienstag|mittwoch|donnerstag|freitag|samstag|sonntag|lundi|mardi|mercredi|jeudi|vendredi|samedi|dimanche|lunes|martes|miércoles|miercoles|jueves|viernes|sábado|sabado|domingo';
const MONTHS =
  'january|february|march|april|may|june|july|august|september|october|november|december|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec|januar|februar|märz|juni|juli|oktober|dezember|janvier|février|fevrier|mars|avril|mai|juin|juillet|août|aout|septembre|octobre|novembre|décembre|decembre|enero|febrero|marzo|abril|mayo|junio|julio|agosto|septiembre|octubre|noviembre|diciembre';
const RELATIVE_DAYS = 'yesterday|today|tomorrow|tonight|weekend|gestern|heute|morgen|übermorgen|vorgestern|hier|aujourd|demain|ayer|hoy|mañana|manana';
const NUMBER_WORDS =
  'one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|hundred|thousand|zwei|drei|vier|fünf|sechs|sieben|acht|neun|zehn|deux|trois|quatre|cinq|sept|huit|neuf|dix|dos|tres|cuatro|cinco|seis|siete|ocho|nueve|diez|once|doce|first|second|third';
const DATE_WORD = new RegExp(`^(${WEEKDAYS}|${MONTHS}|${RELATIVE_DAYS})$`);
const NUMBER_WORD = new RegExp(`^(${NUMBER_WORDS})$`);
const PERIOD = new RegExp(`^(week|month|year|weekend|quarter|${WEEKDAYS}|${MONTHS})$`);

// negation words of en, de, es (French is counted by its `ne`, below)
const NEGATIONS = new Set(['not', 'no', 'never', 'nothing', 'none', 'nobody', 'nowhere', 'neither', 'nor', 'without', 'unable', 'nicht', 'nie', 'niemals', 'nichts', 'ohne', 'weder', 'kein', 'keine', 'keinen', 'keinem', 'keiner', 'keines', 'nunca', 'jamás', 'nada', 'nadie', 'ningún', 'ninguna', 'ninguno', 'sin', 'tampoco', 'sans']);
const FR_NE = new Set(['ne', 'n']);
const FR_NEGATIONS_WITHOUT_NE = new Set(['pas', 'jamais', 'aucun', 'aucune', 'rien']);

/** Antonym classes of action verbs (prefixes of the words, en/de/fr/es). A request's set of classes must match. */
const ACTIONS: Record<string, string[]> = {
  cancel: ['cancel', 'terminat', 'kündig', 'kuendig', 'storn', 'annul', 'résili', 'resili', 'darse de baja'],
  keep: ['=keep', '=kept', 'retain', 'behalt', 'behält', 'garder', 'conserv', 'manten', 'mantén', 'mantien'],
  add: ['add', 'hinzufüg', 'ajout', 'añad', 'agreg'],
  remove: ['remov', 'delet', 'entfern', 'lösch', 'supprim', 'elimin', 'quit', 'borr'],
  enable: ['enabl', 'activat', 'aktivier', 'activer', 'activ', 'turn on', 'einschalt'],
  disable: ['disabl', 'deactivat', 'deaktivier', 'désactiv', 'desactiv', 'turn off', 'ausschalt'],
  upgrade: ['upgrad'],
  downgrade: ['downgrad'],
  subscribe: ['subscrib', 'abonnier', 'abonn', 'suscrib'],
  unsubscribe: ['unsubscrib', 'abbestell', 'désabonn', 'desabonn', 'desuscrib'],
  accept: ['accept', 'agree', 'approv', 'akzeptier', 'zustimm', 'accepter', 'acept'],
  reject: ['reject', 'declin', 'refus', 'disagre', 'ablehn', 'rechaz'],
  increase: ['increas', 'rais', 'erhöh', 'augment', 'aument'],
  decrease: ['decreas', 'reduc', 'lower', 'senk', 'verringer', 'diminu', 'rédui', 'redui', 'reduz'],
  pause: ['paus'],
  resume: ['resum', 'reactivat', 'fortsetz', 'reprend', 'reanud'],
  lock: ['lock', 'block', 'sperr', 'bloqu'],
  unlock: ['unlock', 'unblock', 'entsperr', 'débloqu', 'debloqu', 'desbloqu'],
  include: ['includ', 'enthalt', 'enthält', 'inclu'],
  exclude: ['exclud', 'exklusiv', 'exclu'],
};
const ACTION_LIST = Object.entries(ACTIONS)
  .flatMap(([cls, stems]) => stems.map((s) => ({ cls, s })))
  // longest stem first, so `unsubscrib` wins over `subscrib` and `deactivat` over `activ`
  .sort((a, b) => b.s.length - a.s.length);

/** Capitalized words that are not names. */
const NOT_NAMES = new Set(['i', "i'm", "i'd", "i've", "i'll", 'sie', 'ihr', 'ihre', 'ihnen', 'ihren', 'ihrem', 'ihrer', 'hi', 'hello', 'hey', 'dear', 'thanks', 'please', 'ok', 'bonjour', 'hola', 'hallo', 'vous', 'usted']);

function normalizeText(text: string): string {
  return text.normalize('NFC').replace(/\s+/g, ' ').trim();
}

/**
 * The guard's view of a request: its entities (exact), its number of negations and its action
 * classes. Two requests may share an answer only when these are equal.
 */
export function requestSignature(text: string, opts: { entities?: readonly string[]; products?: readonly string[] } = {}): RequestSignature {
  const raw = normalizeText(text);
  const entities = new Set<string>();
  for (const e of opts.entities ?? []) entities.add(`given:${e.toLowerCase()}`);
  for (const m of raw.matchAll(/[\w.+-]+@[\w-]+(?:\.[\w-]+)+/g)) entities.add(`email:${m[0].toLowerCase()}`);
  for (const m of raw.matchAll(/\bhttps?:\/\/\S+/gi)) entities.add(`url:${m[0].toLowerCase()}`);
  // numbers: order and invoice numbers, amounts, quantities, dates, codes (with letters around them: INV-2024-0117)
  for (const m of raw.replace(/[\w.+-]+@[\w-]+(?:\.[\w-]+)+/g, ' ').matchAll(/[\p{L}]*\d[\p{L}\d]*(?:[.,:/-]\d[\p{L}\d]*)*/gu)) entities.add(`num:${m[0].toLowerCase().replace(/,/g, '.')}`);
  for (const m of raw.matchAll(/[$€£¥]|\b(usd|eur|gbp|chf|dollars?|euros?|pounds?)\b/gi)) entities.add(`cur:${normCurrency(m[0])}`);
  for (const p of opts.products ?? []) if (p && raw.toLowerCase().includes(p.toLowerCase())) entities.add(`product:${p.toLowerCase()}`);
  // capitalized words that do not open a sentence: product, place and integration names
  for (const m of raw.matchAll(/(^|[\s,;:("'«¿¡])([\p{Lu}][\p{L}\p{N}'’-]*)/gu)) {
    const word = m[2]!;
    const before = raw.slice(0, m.index! + m[1]!.length).trimEnd();
    if (before === '' || /[.!?¿¡:\n]$/.test(before)) continue; // opens a sentence
    const w = word.toLowerCase().replace(/’/g, "'");
    if (NOT_NAMES.has(w)) continue;
    entities.add(`name:${w}`);
  }

  // words: "can't" → "can not"; French elisions "n'" and "l'" stand apart
  const lower = raw.toLowerCase().replace(/’/g, "'").replace(/\bcannot\b/g, 'can not').replace(/n't\b/g, ' not').replace(/\b(n|l|d|j|qu|c|s|m|t)'/g, '$1 ');
  const words = lower.split(/[^\p{L}\p{N}]+/u).filter(Boolean);
  let negations = 0;
  let frNe = 0;
  let frOther = 0;
  for (const [i, w] of words.entries()) {
    if (DATE_WORD.test(w)) entities.add(`date:${w}`);
    if (NUMBER_WORD.test(w) && !(w === 'second' && words[i - 1] === 'a')) entities.add(`qty:${w}`);
    if ((w === 'last' || w === 'next' || w === 'this') && PERIOD.test(words[i + 1] ?? '')) entities.add(`date:${w} ${words[i + 1]!}`);
    if (NEGATIONS.has(w)) negations++;
    else if (FR_NE.has(w)) frNe++;
    else if (FR_NEGATIONS_WITHOUT_NE.has(w)) frOther++;
  }
  negations += frNe > 0 ? frNe : frOther;

  const actions = new Set<string>();
  const joined = ` ${words.join(' ')} `;
  for (const w of words) {
    const a = ACTION_LIST.find((x) => !x.s.includes(' ') && (x.s.startsWith('=') ? w === x.s.slice(1) : w.startsWith(x.s)));
    if (a) actions.add(a.cls);
  }
  for (const x of ACTION_LIST) if (x.s.includes(' ') && joined.includes(` ${x.s}`)) actions.add(x.cls);
  return { entities: [...entities].sort(), negations, actions: [...actions].sort() };
}

function normCurrency(c: string): string {
  const l = c.toLowerCase();
  if (l === '$' || l.startsWith('dollar') || l === 'usd') return 'usd';
  if (l === '€' || l.startsWith('euro') || l === 'eur') return 'eur';
  if (l === '£' || l.startsWith('pound') || l === 'gbp') return 'gbp';
  return l;
}

/** Why two signatures may not share an answer, or undefined when they may. */
export function signatureMismatch(a: RequestSignature, b: RequestSignature): string | undefined {
  if (a.negations !== b.negations) return `negation differs (${a.negations} vs ${b.negations})`;
  const diff = (x: string[], y: string[]) => x.filter((v) => !y.includes(v));
  const ea = diff(a.entities, b.entities);
  const eb = diff(b.entities, a.entities);
  if (ea.length || eb.length) return `entities differ (${[...ea, ...eb.map((e) => `≠${e}`)].slice(0, 4).join(', ')})`;
  const aa = diff(a.actions, b.actions);
  const ab = diff(b.actions, a.actions);
  if (aa.length || ab.length) return `actions differ (${[...aa, ...ab].join(', ')})`;
  return undefined;
}

export function cosine(a: readonly number[], b: readonly number[]): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    dot += a[i]! * b[i]!;
    na += a[i]! * a[i]!;
    nb += b[i]! * b[i]!;
  }
  return na && nb ? dot / Math.sqrt(na * nb) : 0;
}

// ---- the cache ---------------------------------------------------------------------------

interface EntryState {
  capability: string;
  intent: string;
  scope: string;
  text: string;
  embedder: string;
  vector: number[];
  signature: RequestSignature;
  answer: CachedAnswer;
  uses: string[];
  expiresAt: string;
}

const ACTOR = { kind: 'system', id: 'intent-cache' } as const;
const normIntent = (s: string) => s.trim().toLowerCase();

export function createIntentCache(o: IntentCacheOptions): IntentCache {
  const { store } = o;
  const threshold = o.threshold ?? DEFAULT_INTENT_CACHE_THRESHOLD;
  const ownId = (o.embeddings as unknown as { id?: unknown }).id;
  const embedder = o.embedder ?? (typeof ownId === 'string' ? ownId : 'embeddings');
  const now = o.now ?? (() => new Date());
  const sig = (req: CacheRequest) => requestSignature(req.text, { entities: req.entities, products: o.products });
  const idOf = (req: CacheRequest) =>
    createHash('sha256').update(JSON.stringify([req.capability, normIntent(req.intent), req.scope, normalizeText(req.text).toLowerCase()])).digest('hex').slice(0, 40);

  const cache: IntentCache = {
    threshold,
    async lookup(req) {
      if (o.ttlS <= 0) return { hit: false, reason: 'cache disabled (ttl 0)' };
      const page = await store.query<EntryState>(INTENT_CACHE, {
        filter: { capability: req.capability, intent: normIntent(req.intent), scope: req.scope, embedder, expiresAt: { $gt: now().toISOString() } },
        sort: { updatedAt: 'desc' },
        limit: MAX_CANDIDATES,
      });
      if (page.items.length === 0) return { hit: false, reason: 'no entry for this capability, intent and scope' };
      const mine = sig(req);
      const guarded = page.items.filter((e) => signatureMismatch(mine, e.state.signature) === undefined);
      if (guarded.length === 0) return { hit: false, reason: `guard: ${signatureMismatch(mine, page.items[0]!.state.signature)!}` };
      const v = await o.embeddings.embedQuery(normalizeText(req.text));
      let best: { e: (typeof guarded)[number]; s: number } | undefined;
      for (const e of guarded) {
        const s = cosine(v, e.state.vector);
        if (!best || s > best.s) best = { e, s };
      }
      const s = Math.round(best!.s * 10_000) / 10_000;
      if (best!.s < threshold) return { hit: false, reason: `similarity ${s} below ${threshold}`, bestSimilarity: s };
      return { hit: true, answer: best!.e.state.answer, entryId: best!.e.entityId, similarity: s };
    },
    async put(req, answer) {
      const id = idOf(req);
      if (o.ttlS <= 0) return { entryId: id };
      const vector = await o.embeddings.embedQuery(normalizeText(req.text));
      const state: EntryState = {
        capability: req.capability,
        intent: normIntent(req.intent),
        scope: req.scope,
        text: normalizeText(req.text).slice(0, 2_000),
        embedder,
        vector,
        signature: sig(req),
        answer: { text: answer.text, model: answer.model, costUsd: answer.costUsd, usage: { ...answer.usage } },
        uses: [...new Set(req.uses ?? [])],
        expiresAt: new Date(now().getTime() + o.ttlS * 1000).toISOString(),
      };
      for (let attempt = 0; ; attempt++) {
        const cur = await store.get(INTENT_CACHE, id);
        try {
          // a deleted (invalidated) entry is replaced by a new version of the same entity
          const events = !cur ? [{ type: 'created', data: state }] : cur.deleted ? [{ type: 'restored' }, { type: 'updated', data: state }] : [{ type: 'updated', data: state }];
          await store.append(INTENT_CACHE, id, cur?.version ?? 0, events, { actor: ACTOR });
          return { entryId: id };
        } catch (err) {
          // another process stored the same request at the same time: theirs is as good
          if ((err as { code?: string }).code === 'STATE_VERSION_CONFLICT' && attempt < 2) continue;
          throw err;
        }
      }
    },
    async invalidate(refs) {
      let n = 0;
      for (const ref of new Set(refs)) {
        for (;;) {
          const page = await store.query<EntryState>(INTENT_CACHE, { filter: { uses: { $contains: ref } }, limit: 1000 });
          if (page.items.length === 0) break;
          for (const e of page.items) {
            try {
              await store.append(INTENT_CACHE, e.entityId, e.version, [{ type: 'deleted' }], { actor: ACTOR });
              n++;
            } catch (err) {
              if ((err as { code?: string }).code !== 'STATE_VERSION_CONFLICT') throw err;
            }
          }
          if (page.items.length < 1000) break;
        }
      }
      return n;
    },
    async invalidateFromChanges(cursor) {
      let since = cursor;
      let invalidated = 0;
      for (;;) {
        const page = await store.changes({ since, limit: 1000 });
        const refs = page.events.filter((e: CommittedEvent) => e.entityType !== INTENT_CACHE).map((e) => `${e.entityType}/${e.entityId}`);
        if (refs.length) invalidated += await cache.invalidate(refs);
        since = page.cursor;
        if (!page.hasMore) break;
      }
      return { cursor: since, invalidated };
    },
  };
  return cache;
}

export interface CachedCallAnswer {
  text: string;
  model: string;
  costUsd: number;
  usage: TokenUsage;
}

export interface CachedCallOptions<A extends CachedCallAnswer> {
  cache: IntentCache;
  request: CacheRequest;
  /** the model call to make on a miss (its own ledger record is its business) */
  call: () => Promise<A>;
  /** where the hit's savings record goes (the StateStore) */
  costs: CostSink;
  attribution: CostAttribution;
}

/**
 * Serves `request` from the cache, or makes the call and stores its answer. A hit writes one
 * ledger record with `costUsd: 0`, the answer's model and `details: { cacheHit: true, savedUsd,
 * similarity, entryId, route: 'cache' }`, so `keel cost` shows what the cache saved.
 */
export async function cachedCall<A extends CachedCallAnswer>(o: CachedCallOptions<A>): Promise<(A | CachedCallAnswer) & { cacheHit: boolean; savedUsd: number }> {
  const found = await o.cache.lookup(o.request);
  if (found.hit) {
    const a = o.attribution;
    await o.costs.recordCost({
      agent: a.agent,
      capability: a.capability,
      ...(a.runId ? { runId: a.runId } : {}),
      ...(a.customerId ? { customerId: a.customerId } : {}),
      ...(a.entityType ? { entityType: a.entityType } : {}),
      ...(a.entityId ? { entityId: a.entityId } : {}),
      model: found.answer.model,
      tokensIn: 0,
      tokensOut: 0,
      tokensCached: 0,
      costUsd: 0,
      computeMs: 0,
      details: { cacheHit: true, route: 'cache', savedUsd: roundUsd(found.answer.costUsd), similarity: found.similarity, entryId: found.entryId, intent: normIntent(o.request.intent) },
    });
    return { ...found.answer, cacheHit: true, savedUsd: roundUsd(found.answer.costUsd) };
  }
  const answer = await o.call();
  await o.cache.put(o.request, { text: answer.text, model: answer.model, costUsd: answer.costUsd, usage: answer.usage });
  return { ...answer, cacheHit: false, savedUsd: 0 };
}
