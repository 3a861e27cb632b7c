/**
 * Tier 0 of the inbound agents: rules and wink-nlp's English model, no model call, no network.
 * Pure functions (the NLP model loads once per process), unit-tested in tests/agents/inbound.
 *
 * ```ts
 * const t = triageText(cleanText(message.text), { subject: message.subject });
 * // { intent: 'refund', urgency: 'normal', sentiment: 'neutral', confidence: 0.8, escalate: false, ... }
 * const summary = summarizeThread(ticket.messages, { triage: t });
 * const draft = draftReply({ intent: t.intent, customerName: 'Ada', escalate: t.escalate, ... });
 * ```
 */
import { createRequire } from 'node:module';
import type winkNLP from 'wink-nlp';
import type { ItemSentence } from 'wink-nlp';
import { z } from 'zod';
import { LANGUAGE_NAMES, LANGUAGE_RULES, REPLY_TEMPLATES, TIER0_LANGUAGES, detectLanguage, isTier0Language, localizedEntities, wordsOf, type LanguageGuess } from './languages.ts';

export { detectLanguage, TIER0_LANGUAGES, type LanguageGuess } from './languages.ts';

export const INTENTS = ['refund', 'billing', 'bug', 'cancellation', 'question', 'praise', 'other'] as const;
export type Intent = (typeof INTENTS)[number];
export const URGENCIES = ['low', 'normal', 'high'] as const;
export type Urgency = (typeof URGENCIES)[number];
export const SENTIMENTS = ['negative', 'neutral', 'positive'] as const;
export type Sentiment = (typeof SENTIMENTS)[number];

/** Below this confidence an agent asks the next configured model tier. */
export const CONFIDENCE_THRESHOLD = 0.6;

export const TriageSchema = z.object({
  intent: z.enum(INTENTS),
  urgency: z.enum(URGENCIES),
  sentiment: z.enum(SENTIMENTS),
  /** `TYPE:value`, e.g. `MONEY:$450`, `ORDER:12345`, `EMAIL:bob@example.com` */
  entities: z.array(z.string()),
  confidence: z.number().min(0).max(1),
  /** 0 heuristics, 1 small model, 2 large model */
  tier: z.number().int().min(0).max(2),
  escalate: z.boolean(),
  /** why: the cues that decided it, readable by the operator */
  reasons: z.array(z.string()),
  /** the message's language (ISO 639-1; `und` when unknown), detected at tier 0 */
  language: z.string().optional(),
});
export type Triage = z.infer<typeof TriageSchema>;

// ---- the NLP model -------------------------------------------------------------------------

type Nlp = ReturnType<typeof winkNLP>;
let nlpInstance: Nlp | undefined;
/**
 * wink-nlp with its English lite model, loaded on first use (~0.2 s): importing this module costs
 * nothing, so an agent that never reads text never loads the model.
 */
export function nlp(): Nlp {
  if (!nlpInstance) {
    const require = createRequire(import.meta.url);
    const wink = require('wink-nlp') as typeof winkNLP;
    nlpInstance = wink(require('wink-eng-lite-web-model') as Parameters<typeof winkNLP>[0]);
  }
  return nlpInstance;
}

// ---- text cleanup --------------------------------------------------------------------------

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: ' ' };

/** Text of an HTML fragment: scripts and styles dropped, block tags as line breaks, entities decoded. */
export function htmlToText(html: string): string {
  return html
    .replace(/<(script|style|head)\b[\s\S]*?<\/\1\s*>/gi, ' ')
    .replace(/<!--[\s\S]*?-->/g, ' ')
    .replace(/<\s*br\s*\/?>/gi, '\n')
    .replace(/<\/\s*(p|div|li|tr|h[1-6]|blockquote)\s*>/gi, '\n')
    .replace(/<[^>]+>/g, ' ')
    .replace(/&(#x?[0-9a-f]+|[a-z]+);/gi, (m, e: string) => {
      if (e.startsWith('#')) {
        const code = e[1] === 'x' || e[1] === 'X' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10);
        return Number.isFinite(code) && code > 0 && code < 0x110000 ? String.fromCodePoint(code) : ' ';
      }
      return ENTITIES[e.toLowerCase()] ?? m;
    });
}

/**
 * The customer's own words: HTML stripped (if the text looks like HTML), quoted history
 * (`> ...`, "On ... wrote:", forwarded/original blocks) and signatures (`-- `) cut, whitespace
 * collapsed per line.
 */
export function cleanText(text: string): string {
  let t = /<(html|body|div|p|br|span|table)\b/i.test(text) ? htmlToText(text) : text;
  t = t.replace(/\r\n?/g, '\n');
  const out: string[] = [];
  for (const line of t.split('\n')) {
    if (/^\s*>/.test(line)) continue;
    if (/^\s*on\b.{0,200}\bwrote:\s*$/i.test(line)) break;
    if (/^\s*-{2,}\s*(original message|forwarded message)\s*-{2,}/i.test(line)) break;
    if (/^-- ?$/.test(line)) break;
    out.push(line.replace(/[ \t\u00a0]+/g, ' ').trim());
  }
  return out.join('\n').replace(/\n{3,}/g, '\n\n').trim();
}

// ---- triage --------------------------------------------------------------------------------

interface Rule {
  re: RegExp;
  weight: number;
  label: string;
}

const INTENT_RULES: Record<Exclude<Intent, 'other'>, Rule[]> = {
  refund: [
    { re: /\brefund(s|ed|ing)?\b/, weight: 3, label: 'refund' },
    { re: /\bmoney back\b/, weight: 3, label: 'money back' },
    { re: /\breimburse(ment|d)?\b/, weight: 2, label: 'reimburse' },
    { re: /\bcharge ?back\b/, weight: 2, label: 'chargeback' },
    { re: /\breturn (it|the|my)\b/, weight: 1, label: 'return' },
    { re: /\b(send|sent|give|put|get|getting|paid|want) (it |them |the \w+ |\w+ )?back\b|\bmy money\b|\breimbursed\b/, weight: 2, label: 'money or item back' },
  ],
  billing: [
    { re: /\binvoices?\b/, weight: 2, label: 'invoice' },
    { re: /\b(double|over)[- ]?charged\b/, weight: 3, label: 'overcharged' },
    { re: /\bcharged?\b/, weight: 1, label: 'charge' },
    { re: /\bbilling\b|\bbilled\b/, weight: 2, label: 'billing' },
    { re: /\b(payment|credit card|receipt|vat|pricing|price plan|subscription fee)s?\b/, weight: 1, label: 'payment' },
    { re: /\b(debited|bank statement|bank transfer|payment reminder|paid (this|it) already|purchase order|po number|vat (number|id)|reissue|re-issue|billing email|currency|discount code|seats?|price (change|went up|increase))\b/, weight: 2, label: 'billing detail' },
  ],
  bug: [
    { re: /\b(bug|crash(es|ed|ing)?|exception|stack ?trace)\b/, weight: 2, label: 'bug/crash' },
    { re: /\b(error|errors|fails?|failed|failing|broken)\b/, weight: 2, label: 'error' },
    { re: /\b(not|isn't|is not|doesn't|does not|won't|can't|cannot) (work|working|load|loading|open|log ?in|sign ?in|connect)\b/, weight: 2, label: 'not working' },
    { re: /\b(outage|downtime|502|503|500 error)\b|\b(is|are|was|were|been|went|still|goes|keeps going) down\b/, weight: 3, label: 'outage' },
    { re: /\b(no longer|never|not|doesn't|don't|won't|isn't|aren't|hasn't|haven't|didn't) (\w+ )?(sync|syncing|synced|show|showing|show up|shows up|appear|appeared|appearing|update|updating|updated|load|loads|arriving|arrive|arrived|come through|coming through|pulled|pull|the same|saved|sending|work)\b/, weight: 2, label: 'stopped working' },
    { re: /\b(sync(ing)?|synchroni[sz]\w*|spinner|spinning|stuck|grey boxes|disappear\w*|changes are gone|counting wrong|nothing happens|unreadable|cannot see what|loops? back|access denied|freez\w*|glitch\w*)\b/, weight: 2, label: 'malfunction' },
  ],
  cancellation: [
    { re: /\bcancel(l?ed|l?ing|lation)?\b/, weight: 3, label: 'cancel' },
    { re: /\b(close|delete|terminate) my account\b/, weight: 3, label: 'close account' },
    { re: /\bunsubscribe\b/, weight: 2, label: 'unsubscribe' },
    { re: /\b(stop|end) (my|the) (subscription|plan|membership)\b/, weight: 3, label: 'end subscription' },
    { re: /\b(don't|do not|not) renew\b|\bwon't (need|be needing)\b|\bno longer (need|use|using)\b|\bstop (paying|charging|the membership|my membership)\b|\bwill be leaving\b|\b(close|delete) (my|the|our) account\b|\bterminate (my|our|the) (account|contract)\b|\b(go back to|downgrade to) the free plan\b|\bfinish my subscription\b/, weight: 3, label: 'leaving' },
  ],
  question: [
    { re: /\b(how (do|can|does|would)|is it possible|do you (offer|have|support|ship)|does (it|the|your) \w+|is there (any|a way)|where (is|can|do)|what (is|are|does|happens)|when (will|is|does)|will (it|your|you)|which \w+)\b/, weight: 2, label: 'question phrase' },
    { re: /\b(can (i|you|we)|could you)\b/, weight: 1, label: 'request frame' },
    { re: /\?/, weight: 1, label: 'question mark' },
  ],
  praise: [
    { re: /\b(love|awesome|amazing|fantastic|excellent|brilliant|wonderful|great job|great work|well done|kudos|impressed)\b/, weight: 2, label: 'praise word' },
    { re: /\bthank(s| you)\b.{0,40}\b(so much|a lot|for (the|your) (help|quick|fast|great))/, weight: 2, label: 'heartfelt thanks' },
    { re: /\b(thank(s| you)( so much)?( to)? \w+ (for|who|from)|(say|tell \w+) thank you|big thanks|above and beyond|appreciat\w+|made my (day|week)|recommended you|best (customer )?service|keep (doing|it up)|saved me|compliments)\b/, weight: 3, label: 'thanks to a person' },
  ],
};

/** Tie-break order when two intents score the same: the more actionable one wins. */
const INTENT_PRIORITY: Intent[] = ['cancellation', 'refund', 'bug', 'billing', 'question', 'praise', 'other'];

const URGENT_RULES: Rule[] = [
  { re: /\b(urgent(ly)?|asap|a\.s\.a\.p|immediately|right now|right away|emergency|critical|time[- ]sensitive)\b/, weight: 1, label: 'urgent wording' },
  { re: /\b(outage|(is|are|was|were|been|went|still) down|production (is )?down|all (our )?(users|customers) (are )?(affected|blocked)|losing (money|customers|sales))\b/, weight: 1, label: 'outage' },
  { re: /\b(lawyer|attorney|legal action|sue|suing|lawsuit|court|small claims|ombudsman|regulator|trading standards)\b/, weight: 1, label: 'legal threat' },
];
const LOW_URGENCY = /\b(no rush|not urgent|whenever you (can|get a chance)|when you get a chance|low priority|no hurry|fyi)\b/;

const ANGER_RULES: Rule[] = [
  { re: /\b(angry|furious|livid|outraged|disgusted|fed up|sick (and tired )?of|had enough)\b/, weight: 1, label: 'anger word' },
  { re: /\b(unacceptable|ridiculous|outrageous|pathetic|useless|incompetent|disgraceful|terrible|horrible|awful|worst|joke)\b/, weight: 1, label: 'contempt word' },
  { re: /\b(scam|fraud|rip[- ]?off|stole|stealing|thieves)\b/, weight: 1, label: 'accusation' },
  { re: /\b(wtf|damn|crap|shit|f\*+k|fuck\w*|bloody|hell)\b/, weight: 1, label: 'profanity' },
  { re: /\b(never again|last time i|will be leaving|switching to|bad review|tell everyone)\b/, weight: 1, label: 'churn threat' },
];

// ---- escalation rules ----------------------------------------------------------------------

/**
 * One escalation rule: a situation a one-person company must see at once. These rules always win:
 * no learned tier or model can talk them down. `cues` are tried on the lowercased text, every
 * tier-0 language at once (a German mail may quote an English threat).
 */
export interface EscalationRule {
  /** stable name, shown to the operator: `threat.chargeback`, `safety`, `account.compromise` … */
  rule: string;
  /** what the operator reads */
  label: string;
  cues: RegExp[];
  /** a second condition that must hold too (e.g. "the whole team" AND "cannot log in") */
  also?: RegExp;
}

const rx = (s: string) => new RegExp(`(?<![\\p{L}\\p{N}])(?:${s})(?![\\p{L}\\p{N}])`, 'u');

export const ESCALATION_RULES: readonly EscalationRule[] = [
  {
    rule: 'threat.chargeback',
    label: 'chargeback threat',
    cues: [
      rx("charge ?backs?|(file|filing|open|opened|opening|raise|raised) a (dispute|claim)|dispute (it|this|the (charges?|payments?|transaction)|everything)( \\w+){0,3} with (my|the) (bank|card issuer|credit card company)|disputing with my bank|go(ing)? to my bank|call it fraud|(reported|reporting|report) (the |these |those )?(charges?|payments?) (as )?(unauthori[sz]ed|fraud\\w*)|dispute with (visa|mastercard|amex|paypal|my bank)"),
      rx('zurückbuch\\w*|rückbuchung|über (meine|die) bank zurück\\w*|lastschrift (zurückgeben|widerrufen)'),
      rx("(faire|je fais|fais) opposition|opposition (auprès de|à) (ma|la) banque|rétrofacturation"),
      rx('contracargo|(reclamación|disputa) (a|con|en) (mi|el) banco'),
    ],
  },
  {
    rule: 'threat.legal',
    label: 'legal threat',
    cues: [
      rx('lawyers?|attorneys?|solicitors?|legal (action|steps|proceedings)|sue|suing|lawsuit|small claims|court|ombudsman|consumer (protection|rights)|trading standards|regulator'),
      rx('anwalt|anwältin|rechtliche schritte|klage|verklagen|gericht|verbraucherzentrale'),
      rx("avocate?|tribunal|mise en demeure|poursuites|action en justice|porter plainte|plainte|association de consommateurs"),
      rx('abogad[oa]|demandar|demanda judicial|tribunal|juzgado|acciones legales|denuncia|oficina del consumidor'),
    ],
  },
  {
    rule: 'safety',
    label: 'safety incident',
    cues: [
      rx("caught fire|on fire|fire|smoke|smoking|melted|melting|burn(ed|t|ing)?|electric(al)? shocks?|shocked|sparks?|sparking|explod\\w*|explosion|swollen|swelling|injur(ed|y|ies)|bleeding|hospital|dangerous|unsafe|choking|hit my \\w+( \\w+)? on the head"),
      rx("(privacy|data) breach|data leak|(orders|data|details|names|addresses) of other (people|customers|users)|other (people|customers|users)'?s? (orders|data|details|names|addresses)"),
      rx('qualm\\w*|rauch\\w*|brennt|brennen|gebrannt|brand|geschmolzen|stromschlag|verletzt|explodier\\w*|gefährlich'),
      rx('fumée|brûl\\w*|incendie|électrocut\\w*|blessée?s?|explos\\w*|dangereu(x|se)'),
      rx('humo|quem\\w*|incendio|fuego|descarga eléctrica|herid[oa]s?|explot\\w*|peligros[oa]'),
    ],
  },
  {
    rule: 'account.compromise',
    label: 'account compromise',
    cues: [
      rx("hacked|hijacked|taken over|took over my account|compromised|someone (else )?(has |had |is |got )?(logged in|log in|got into|accessed|has access|is in my account|changed my)|(login|sign-in|log-in) (alert|attempt|notification) from|suspicious (login|activity|sign-in)|(i|we) (did not|didn't|never) (do|authori[sz]e|create|make|place|request) (this|that|any|it|them)|(did not|didn't|never) authori[sz]e|unauthori[sz]ed (login|access|purchases?|orders?|charges?|payments?)|password was changed|(email|e-mail) address was (changed|switched)"),
      rx('gehackt|jemand hat sich .{0,40}eingeloggt|(habe|hab) das nicht gemacht|unbefugt\\w*|fremder zugriff'),
      rx("piraté|pirater|quelqu'un .{0,40}(connecté|accès|accédé)|je n'ai pas (passé|fait|autorisé)"),
      rx('hackead[oa]|cuenta robada|robaron (mi|la) cuenta|alguien (ha )?(entrado|accedido)|yo no he sido|no (he|hice) (autorizado|sido)'),
    ],
  },
  {
    rule: 'blocked.team',
    label: 'team locked out',
    cues: [
      rx('(whole|entire) (team|company|office|staff)|none of (the|our|us)( \\d+)?( people| users| staff)?|all \\d+ of us|for all \\d+( of us)?|all of us|nobody (can|in the team)|no one (can|in the team)|everyone (on|in) (our|the) (team|company)'),
      rx('alle (mitarbeiter|kollegen|nutzer)|(niemand|keiner) (von uns|im team) kann'),
      rx("toute l.équipe|personne (ne peut|chez nous)"),
      rx('todo el equipo|nadie (puede|del equipo)'),
    ],
    also: rx("log ?in|logged in|locked out|access\\w*|can'?t|cannot|denied|loops?|blocked|sign in|zugriff|anmelden|einloggen|accès|connecter|acceder|entrar"),
  },
  {
    rule: 'outage',
    label: 'production down',
    cues: [
      rx('(api|site|website|shop|store|checkout|server|service|production|platform)( \\w+){0,6} (is |are |was |has been |have been |went )?(down|offline|unreachable)|(returning|returns|throwing|giving) (5\\d\\d|errors)( \\w+){0,2} (for|on) (all|every)|losing (sales|money|customers|revenue|orders)'),
      rx('nicht (mehr )?erreichbar|verlieren .{0,30}umsatz|ausgefallen'),
      rx('en panne|hors service|perd(ons|ent) des (clients|ventes)'),
      rx('caíd[oa]|fuera de servicio|perdiendo (dinero|clientes|ventas)'),
    ],
  },
  {
    rule: 'repeat.contacts',
    label: 'repeat contacts',
    cues: [
      rx("(third|fourth|fifth|sixth|seventh|3rd|4th|5th|6th|7th) (time|e-?mail|message|request|attempt)|(three|four|five|six|seven|eight|\\d+) (e-?mails|messages|requests)( already| now| this week| in a row)?|(asked|written|wrote|emailed|contacted you|called) .{0,25}(three|four|five|six|\\d+) times|no (answer|reply|response) to any|(zero|no) (answers|replies|responses)"),
      rx('zum (dritten|vierten|fünften|x-ten) mal|(drei|vier|fünf|sechs) (mails|e-mails|nachrichten)'),
      rx('(troisième|quatrième|cinquième) (message|mail|e-mail|fois)|(trois|quatre|cinq) (messages|mails|fois)'),
      rx('(tercer|cuarto|quinto) (correo|mensaje|email)|(tres|cuatro|cinco) (veces|correos|mensajes)'),
    ],
  },
  {
    rule: 'abuse',
    label: 'abuse',
    cues: [
      rx('idiots?|morons?|stupid|garbage|scammers?|crooks|thieves|liars|bastards|threaten(ed|ing|s)?|shouted at me|yelled at me|scared|harass\\w*|fuck\\w*|shit'),
      rx('idioten|betrüger|bedroht|angeschrien|scheiße|arschl\\w*'),
      rx('escrocs|voleurs|menacée?|insulté|connards?|merde'),
      rx('ladrones|estafadores|amenaz\\w*|idiotas|mierda'),
    ],
  },
];

/** How many earlier messages from the customer, within the window, make a repeat contact. */
export const REPEAT_CONTACTS = { count: 3, windowDays: 7 } as const;

export interface EscalationHit {
  rule: string;
  label: string;
  /** the text that fired it, or the history fact */
  cue: string;
}

/**
 * The escalation rules that fire on a message: the lexical rules above, the customer's history
 * (`priorContacts` of their messages in the last {@link REPEAT_CONTACTS}.windowDays days, at least
 * {@link REPEAT_CONTACTS}.count), and shouting. Each hit says its rule and the words that fired it.
 */
export function escalationHits(full: string, opts: { priorContacts?: number | undefined; shouting?: boolean } = {}): EscalationHit[] {
  const lower = full.toLowerCase();
  const hits: EscalationHit[] = [];
  for (const r of ESCALATION_RULES) {
    if (r.also && !r.also.test(lower)) continue;
    for (const re of r.cues) {
      const m = re.exec(lower);
      if (m) {
        hits.push({ rule: r.rule, label: r.label, cue: m[0] });
        break;
      }
    }
  }
  const prior = opts.priorContacts ?? 0;
  if (prior >= REPEAT_CONTACTS.count && !hits.some((x) => x.rule === 'repeat.contacts')) {
    hits.push({ rule: 'repeat.contacts', label: 'repeat contacts', cue: `${prior} earlier messages in ${REPEAT_CONTACTS.windowDays} days` });
  }
  if (opts.shouting) hits.push({ rule: 'shouting', label: 'shouting', cue: 'capital letters' });
  return hits;
}

/** `escalate: chargeback threat (rule threat.chargeback: "filing a chargeback")` */
export const escalationReason = (h: EscalationHit): string => `escalate: ${h.label} (rule ${h.rule}: "${h.cue}")`;

export interface TriageOptions {
  subject?: string | undefined;
  /** the customer's inbound messages in the {@link REPEAT_CONTACTS} window before this one (their history) */
  priorContacts?: number | undefined;
}

function matches(text: string, rules: Rule[]): Rule[] {
  return rules.filter((r) => r.re.test(text));
}

const round = (n: number) => Math.round(n * 100) / 100;

/**
 * Tier-0 triage of one customer message (pass it through {@link cleanText} first).
 *
 * - intent: keyword rules, each with a weight; the highest total wins (ties by actionability);
 *   confidence grows with the winner's total and shrinks with a close runner-up.
 * - urgency: `high` on urgent wording, `!!!`, shouting, outages or legal threats; `low` on
 *   "no rush"-style wording or pure praise.
 * - sentiment: wink-nlp's sentiment score plus an anger lexicon; anger cues make it negative.
 * - escalate: an escalation rule ({@link ESCALATION_RULES}: threats, safety, account compromise,
 *   a locked-out team, production down, repeat contacts — also from `opts.priorContacts` —,
 *   abuse, shouting), or negative sentiment with strong anger; each with its reason. Urgent
 *   wording alone raises urgency, not an escalation; an escalation makes urgency high.
 * - little recognizable English text: intent `other` at low confidence, so a model can look.
 */
export function triageText(text: string, opts: TriageOptions = {}): Triage {
  const full = [opts.subject ?? '', text].filter(Boolean).join('\n');
  const guess = detectLanguage(full);
  // German, French, Spanish: their own rules; another recognized language: said so, left to a model
  if (guess.language !== 'en' && guess.language !== 'und') return triageOtherLanguage(full, guess, opts.priorContacts);
  const lower = full.toLowerCase();
  const reasons: string[] = [];

  const doc = nlp().readDoc(full);
  const its = nlp().its;
  const types = doc.tokens().out(its.type) as string[];
  const words = doc.tokens().out(its.value).filter((_, i) => types[i] === 'word');
  const letters = (full.match(/[A-Za-z]/g) ?? []).length;
  const visible = (full.match(/\S/g) ?? []).length || 1;
  const vocab = words.filter((w) => /^[a-z]{2,}$/i.test(w) && KNOWN.test(w.toLowerCase())).length;
  const junk = words.length < 2 || letters / visible < 0.5 || vocab / Math.max(1, words.length) < 0.2;

  // intent
  let { intent, confidence } = rankIntents(lower, INTENT_RULES, reasons);

  // sentiment
  const score = doc.out(its.sentiment) as unknown as number;
  const anger = matches(lower, ANGER_RULES);
  const exclaim = /!{3,}/.test(full);
  const shoutWords = (full.match(/\b[A-Z]{3,}\b/g) ?? []).filter((w) => !ACRONYMS.has(w));
  const shouting = shoutWords.length >= 3 || (shoutWords.length >= 1 && letters > 0 && shoutWords.join('').length / letters > 0.3);
  let sentiment: Sentiment = 'neutral';
  if (anger.length > 0 || score <= -0.15) sentiment = 'negative';
  else if (score >= 0.2 || (intent === 'praise' && score >= 0)) sentiment = 'positive';
  reasons.push(`sentiment ${sentiment} (score ${round(score)}${anger.length ? `; ${anger.map((r) => r.label).join(', ')}` : ''})`);
  const strongAnger = anger.length >= 2 || (anger.length >= 1 && (exclaim || shouting));

  // urgency
  const urgent = matches(lower, URGENT_RULES);
  let urgency: Urgency = 'normal';
  if (urgent.length > 0 || exclaim || shouting) {
    urgency = 'high';
    reasons.push(`urgency high: ${[...urgent.map((r) => r.label), ...(exclaim ? ['!!!'] : []), ...(shouting ? ['shouting'] : [])].join(', ')}`);
  } else if (LOW_URGENCY.test(lower) || (intent === 'praise' && sentiment !== 'negative')) {
    urgency = 'low';
  }
  // "not urgent" must not count as urgent wording
  if (urgency === 'high' && LOW_URGENCY.test(lower) && urgent.length === 1 && urgent[0]!.label === 'urgent wording' && !exclaim && !shouting) {
    urgency = 'low';
    reasons.pop();
  }

  if (junk) {
    if (intent !== 'other') reasons.splice(0, reasons.findIndex((r) => r.startsWith('sentiment ')), 'ignored intent cues');
    intent = 'other';
    confidence = Math.min(confidence, 0.2);
    reasons.push('little recognizable English text');
  }

  const { escalate, urgency: finalUrgency } = decideEscalation(full, reasons, urgency, sentiment === 'negative' && strongAnger, shouting, opts.priorContacts);

  return {
    intent,
    urgency: finalUrgency,
    sentiment,
    entities: extractEntities(full),
    confidence: round(Math.max(0.05, Math.min(0.95, confidence))),
    tier: 0,
    escalate,
    reasons,
    language: guess.language,
  };
}

/**
 * Whether to escalate, and why: the escalation rules ({@link escalationHits}: threats, safety,
 * account compromise, a locked-out team or production down, repeat contacts, abuse, shouting)
 * and strong anger. Urgent wording alone ("need it today") raises urgency, not an escalation.
 * An escalation makes the urgency high. Pushes one reason per rule that fired.
 */
function decideEscalation(full: string, reasons: string[], urgency: Urgency, strongAnger: boolean, shouting: boolean, priorContacts: number | undefined): { escalate: boolean; urgency: Urgency } {
  const hits = escalationHits(full, { priorContacts, shouting });
  for (const h of hits) reasons.push(escalationReason(h));
  if (strongAnger) reasons.push('escalate: strong anger');
  const escalate = hits.length > 0 || strongAnger;
  return { escalate, urgency: escalate ? 'high' : urgency };
}

/**
 * The intent whose rules score highest (ties by INTENT_PRIORITY), and a confidence that falls
 * with the runner-up's score (less so when the runner-up is a question frame or a thanks);
 * `other` at 0.3 when nothing matched. Pushes its reasons.
 */
function rankIntents(lower: string, rulesByIntent: Partial<Record<Intent, Rule[]>>, reasons: string[]): { intent: Intent; confidence: number } {
  const ranked = (Object.entries(rulesByIntent) as [Intent, Rule[]][])
    .map(([i, rs]) => {
      const hit = matches(lower, rs);
      return [i, { score: hit.reduce((sum, x) => sum + x.weight, 0), labels: hit.map((x) => x.label) }] as const;
    })
    .sort((a, b) => b[1].score - a[1].score || INTENT_PRIORITY.indexOf(a[0]) - INTENT_PRIORITY.indexOf(b[0]));
  const [first, second] = ranked;
  if (!first || first[1].score === 0) {
    reasons.push('no intent keyword matched');
    return { intent: 'other', confidence: 0.3 };
  }
  const top = first[1].score;
  const runnerUp = second?.[1].score ?? 0;
  // a question frame ("could I get a refund?") or a polite thanks hardly competes with a concrete intent
  const weakRunnerUp = second?.[0] === 'question' || second?.[0] === 'praise';
  reasons.push(`intent ${first[0]}: ${first[1].labels.join(', ')}`);
  if (runnerUp > 0 && second) reasons.push(`also ${second[0]} (${second[1].labels.join(', ')})`);
  return { intent: first[0], confidence: Math.min(0.95, 0.4 + 0.12 * top) - (weakRunnerUp ? 0.15 : 0.3) * (runnerUp / top) };
}

/**
 * Tier-0 triage of a message in another language than English. German, French and Spanish have
 * their own intent, urgency and anger lexicons (languages.ts), scored like English; sentiment
 * comes from those lexicons (wink-nlp's sentiment is English only). Another recognized language
 * (Italian, Russian …) is `other` at low confidence with a reason saying tier 0 cannot read it,
 * so a configured model looks at it; its urgency still follows `!!!` and shouting.
 */
function triageOtherLanguage(full: string, guess: LanguageGuess, priorContacts: number | undefined): Triage {
  const lower = full.toLowerCase();
  const reasons: string[] = [];
  const name = LANGUAGE_NAMES[guess.language] ?? guess.language;
  const rules = isTier0Language(guess.language) && guess.language !== 'en' ? LANGUAGE_RULES[guess.language] : undefined;
  reasons.push(
    rules
      ? `language ${guess.language} (${name}; ${guess.cue})`
      : `language ${guess.language} (${name}; ${guess.cue}): tier 0 reads only ${TIER0_LANGUAGES.join(', ')}, so intent is left as other and the reply is drafted in English`,
  );

  let { intent, confidence } = rules ? rankIntents(lower, rules.intent, reasons) : { intent: 'other' as Intent, confidence: 0.15 };

  const anger = rules ? matches(lower, rules.anger) : [];
  const letters = (full.match(/\p{L}/gu) ?? []).length;
  const exclaim = /!{3,}/.test(full);
  const shoutWords = (full.match(/(?<![\p{L}\p{N}])\p{Lu}{3,}(?![\p{L}\p{N}])/gu) ?? []).filter((x) => !ACRONYMS.has(x));
  const shouting = shoutWords.length >= 3 || (shoutWords.length >= 1 && letters > 0 && shoutWords.join('').length / letters > 0.3);
  let sentiment: Sentiment = 'neutral';
  if (anger.length > 0 || rules?.negative.test(lower)) sentiment = 'negative';
  else if (intent === 'praise') sentiment = 'positive';
  reasons.push(`sentiment ${sentiment} (${anger.length ? anger.map((x) => x.label).join(', ') : rules ? `${name} lexicon` : 'no lexicon'})`);
  const strongAnger = anger.length >= 2 || (anger.length >= 1 && (exclaim || shouting));

  const urgent = rules ? matches(lower, rules.urgent) : [];
  let urgency: Urgency = 'normal';
  if (urgent.length > 0 || exclaim || shouting) {
    urgency = 'high';
    reasons.push(`urgency high: ${[...urgent.map((x) => x.label), ...(exclaim ? ['!!!'] : []), ...(shouting ? ['shouting'] : [])].join(', ')}`);
  } else if (rules?.low.test(lower) || (intent === 'praise' && sentiment !== 'negative')) urgency = 'low';
  if (urgency === 'high' && rules?.low.test(lower) && urgent.length === 1 && urgent[0] === rules.urgent[0] && !exclaim && !shouting) {
    urgency = 'low';
    reasons.pop();
  }

  const words = wordsOf(full);
  if (rules && (words.length < 2 || letters / Math.max(1, (full.match(/\S/g) ?? []).length) < 0.5)) {
    intent = 'other';
    confidence = Math.min(confidence, 0.2);
    reasons.push(`little recognizable ${name} text`);
  }

  const { escalate, urgency: finalUrgency } = decideEscalation(full, reasons, urgency, sentiment === 'negative' && strongAnger, shouting, priorContacts);
  return {
    intent,
    urgency: finalUrgency,
    sentiment,
    entities: [...new Set([...localizedEntities(full), ...extractEntities(full)])].slice(0, 20),
    confidence: round(Math.max(0.05, Math.min(0.95, confidence))),
    tier: 0,
    escalate,
    reasons,
    language: guess.language,
  };
}

const ACRONYMS = new Set(['API', 'URL', 'CSV', 'PDF', 'VAT', 'USD', 'EUR', 'GBP', 'SMS', 'FAQ', 'SSO', 'DNS', 'SSL', 'TLS', 'HTTP', 'HTTPS', 'CEO', 'CTO', 'IBAN', 'UTC', 'GMT', 'PST', 'EST', 'JSON', 'HTML', 'AWS', 'IOS']);

// a rough English check: common function words and support vocabulary
const KNOWN = new RegExp(
  '^(' +
    [
      'the', 'a', 'an', 'i', 'you', 'we', 'my', 'our', 'your', 'it', 'is', 'are', 'was', 'be', 'to', 'of', 'and', 'or', 'in', 'on', 'for', 'with', 'this', 'that', 'not',
      'have', 'has', 'do', 'does', 'did', 'can', 'could', 'would', 'will', 'please', 'thanks', 'thank', 'hi', 'hello', 'me', 'at', 'from', 'but', 'so', 'if', 'no', 'yes',
      'what', 'how', 'when', 'where', 'why', 'order', 'account', 'help', 'need', 'want', 'get', 'got', 'still', 'just', 'again', 'all', 'any', 'some', 'there', 'here',
      'refund', 'invoice', 'charge', 'charged', 'payment', 'error', 'bug', 'cancel', 'site', 'app', 'down', 'working', 'work', 'problem', 'issue', 'love', 'great',
      'urgent', 'asap', 'now', 'today', 'money', 'back', 'service', 'subscription', 'plan', 'team', 'support', 'email', 'login', 'page', 'price', 'week', 'day',
    ].join('|') +
    ')$',
);

/** Entities worth keeping on the ticket: wink-nlp's (money, dates, emails, urls, ...) plus order/invoice numbers. */
export function extractEntities(text: string): string[] {
  const its = nlp().its;
  const out = new Set<string>();
  const found = nlp().readDoc(text).entities().out(its.detail) as unknown as { value: string; type: string }[];
  for (const e of found) {
    if (['MONEY', 'DATE', 'TIME', 'EMAIL', 'URL', 'PERCENT', 'HASHTAG', 'MENTION'].includes(e.type)) out.add(`${e.type}:${e.value}`);
  }
  for (const m of text.matchAll(/\b(order|invoice|ticket|case|account|ref(?:erence)?)\s*(?:no\.?|number|#|:)?\s*#?\s*([A-Z0-9][A-Z0-9-]{3,})\b/gi)) {
    const kind = m[1]!.toLowerCase().startsWith('ref') ? 'REF' : m[1]!.toUpperCase();
    if (/\d/.test(m[2]!)) out.add(`${kind}:${m[2]!}`);
  }
  for (const m of text.matchAll(/#(\d{4,})\b/g)) if (![...out].some((e) => e.endsWith(`:${m[1]!}`))) out.add(`REF:${m[1]!}`);
  return [...out].slice(0, 20);
}

// ---- summary -------------------------------------------------------------------------------

export interface ThreadMessage {
  direction: 'in' | 'out';
  from: string;
  text: string;
  at: string;
  channel?: string;
}

export interface SummaryOptions {
  /** sentences to keep (default 3, 5 for threads of more than 4 messages) */
  maxSentences?: number;
  triage?: { intent: string; urgency: string; sentiment: string } | undefined;
}

const GREETING_LINE = /^(hi|hello|hey|dear|good (morning|afternoon|evening))\b[^.!?\n]{0,40}[,!.:]?$/i;
const SIGN_OFF_LINE = /^(thanks|thank you|many thanks|best|best regards|regards|kind regards|cheers|sincerely|all the best)[,!.]?$/i;

/** The message without its greeting line ("Hi Ada,") and sign-off ("Thanks,\nAda"). */
export function stripSalutations(text: string): string {
  const lines = text.split('\n');
  while (lines.length > 1 && GREETING_LINE.test(lines[0]!.trim())) lines.shift();
  const signOff = lines.findIndex((l, i) => i > 0 && i >= lines.length - 4 && SIGN_OFF_LINE.test(l.trim()));
  if (signOff > 0) lines.length = signOff;
  return lines.join('\n').trim();
}

const FILLER = /^(hi|hello|hey|dear|good (morning|afternoon|evening)|thanks?( you)?|many thanks|best|regards|kind regards|cheers|sincerely)\b[^.!?]{0,40}[.!?,]?$/i;

/**
 * Extractive summary of a thread: wink-nlp splits every message into sentences; each sentence
 * scores by the thread's frequent content words it contains, plus bonuses for cues that matter
 * to support (money, order numbers, dates, intent and urgency words) and for opening a customer
 * message; greetings and sign-offs score nothing. The best sentences are kept in thread order.
 * Confidence is how much of the thread the summary covers (a long thread summarized in a few
 * sentences loses more).
 */
export function summarizeThread(messages: readonly ThreadMessage[], opts: SummaryOptions = {}): { summary: string; confidence: number } {
  const its = nlp().its;
  const inbound = messages.filter((m) => m.direction === 'in');
  const customer = inbound[0]?.from ?? messages[0]?.from ?? 'the customer';
  const sentences: { text: string; msg: number; pos: number; words: string[]; dir: 'in' | 'out' }[] = [];
  const freq = new Map<string, number>();
  messages.forEach((m, mi) => {
    const doc = nlp().readDoc(stripSalutations(cleanText(m.text)));
    let pos = 0;
    doc.sentences().each((s: ItemSentence) => {
      const text = (s.out() as string).replace(/\s+/g, ' ').trim();
      if (!text || FILLER.test(text)) return;
      const stop = s.tokens().out(its.stopWordFlag) as unknown as boolean[];
      const types = s.tokens().out(its.type) as string[];
      const words = (s.tokens().out(its.normal) as string[]).filter((w, i) => types[i] === 'word' && !stop[i] && w.length > 2);
      for (const w of new Set(words)) freq.set(w, (freq.get(w) ?? 0) + 1);
      sentences.push({ text, msg: mi, pos: pos++, words, dir: m.direction });
    });
  });
  const head = `${messages.length} message${messages.length === 1 ? '' : 's'} (${inbound.length} from ${customer})` +
    (opts.triage ? `; ${opts.triage.intent}, urgency ${opts.triage.urgency}, sentiment ${opts.triage.sentiment}` : '') + '.';
  if (sentences.length === 0) return { summary: `${head} No readable text.`, confidence: 0.5 };

  const max = opts.maxSentences ?? (messages.length > 4 ? 5 : 3);
  const cue = /(\$|€|£|\d{3,}|refund|invoice|charge|cancel|error|crash|down|outage|urgent|asap|lawyer|deadline|broken|not work)/i;
  const scored = sentences.map((s, i) => {
    const content = s.words.reduce((sum, w) => sum + Math.log(1 + (freq.get(w) ?? 0)), 0) / Math.sqrt(Math.max(1, s.words.length));
    const bonus = (cue.test(s.text) ? 1 : 0) + (s.pos === 0 && s.dir === 'in' ? 0.75 : 0) + (s.dir === 'in' ? 0.25 : 0);
    return { i, score: content + bonus };
  });
  const keep = new Set(scored.sort((a, b) => b.score - a.score || a.i - b.i).slice(0, max).map((s) => s.i));
  const lines: string[] = [head];
  let lastMsg = -1;
  for (const [i, s] of sentences.entries()) {
    if (!keep.has(i)) continue;
    const cut = s.text.length > 300 ? `${s.text.slice(0, 297)}...` : s.text;
    if (s.msg !== lastMsg) lines.push(`${s.dir === 'in' ? 'Customer' : 'We'}: ${cut}`);
    else lines[lines.length - 1] += ` ${cut}`;
    lastMsg = s.msg;
  }
  const confidence = round(Math.min(1, keep.size / sentences.length + 0.3));
  return { summary: lines.join('\n'), confidence };
}

// ---- reply drafts --------------------------------------------------------------------------

export interface DraftInput {
  intent: Intent | string;
  customerName?: string | undefined;
  escalate?: boolean;
  urgency?: Urgency;
  entities?: readonly string[];
  /** confidence of the triage the draft is based on (default 0.5) */
  triageConfidence?: number;
  /** signs the reply (default "The support team", or its translation) */
  signature?: string;
  /** the customer's language (the triage's `language`); tier 0 writes en, de, fr and es, else English */
  language?: string | undefined;
}

export interface Draft {
  text: string;
  confidence: number;
  /** the language the draft is written in */
  language: string;
  /** set when the customer's language has no tier-0 template (the draft is in English) */
  note?: string;
}

/**
 * A reply from the intent's template in the customer's language (English, German, French or
 * Spanish; any other language gets the English template, at half the confidence, and a `note`
 * saying so), addressed by first name, naming the order/invoice it concerns. Confidence follows
 * the triage's (a template for `other` is a weak answer); an escalated ticket says a person is on
 * it. A signature left at the English default is translated.
 */
export function draftReply(d: DraftInput): Draft {
  const intent: Intent = (INTENTS as readonly string[]).includes(d.intent) ? (d.intent as Intent) : 'other';
  const lang = isTier0Language(d.language) ? d.language : 'en';
  const unsupported = !!d.language && d.language !== 'und' && !isTier0Language(d.language);
  const tpl = REPLY_TEMPLATES[lang];
  const first = firstName(d.customerName);
  const refEntity = d.entities?.find((e) => /^(ORDER|INVOICE|REF|TICKET|CASE|ACCOUNT):/.test(e));
  const kind = refEntity?.split(':')[0];
  const ref = refEntity ? ` (${tpl.refWords[kind!] ?? kind!.toLowerCase()} ${refEntity.slice(refEntity.indexOf(':') + 1)})` : '';
  const parts = [tpl.greeting(first), '', tpl.bodies[intent].replace('{ref}', ref)];
  if (d.escalate) parts.push('', tpl.escalated);
  else if (d.urgency === 'high') parts.push('', tpl.urgent);
  const signature = !d.signature || d.signature === REPLY_TEMPLATES.en.signature ? tpl.signature : d.signature;
  parts.push('', tpl.signOff, signature);
  const base = d.triageConfidence ?? 0.5;
  const fit = (intent === 'other' ? 0.5 : d.escalate ? 0.8 : 0.95) * (unsupported ? 0.5 : 1);
  return {
    text: parts.join('\n'),
    confidence: round(Math.max(0.05, Math.min(0.95, base * fit))),
    language: lang,
    ...(unsupported ? { note: `no tier-0 template in ${LANGUAGE_NAMES[d.language!] ?? d.language} (${d.language}): drafted in English` } : {}),
  };
}

/** "Ada Lovelace" → "Ada"; an address or handle gives no name. */
export function firstName(name: string | undefined): string | undefined {
  if (!name) return undefined;
  const n = name.replace(/["<>]/g, '').trim();
  if (!n || n.includes('@')) return undefined;
  const f = n.split(/[\s,]+/)[0];
  return f && /^\p{L}[\p{L}'-]*$/u.test(f) ? f.charAt(0).toUpperCase() + f.slice(1) : undefined;
}

// ---- model answers -------------------------------------------------------------------------

/** The first JSON object in a model's answer (bare, or inside a ```json fence), or undefined. */
export function extractJson(text: string): unknown {
  const fenced = /```(?:json)?\s*([\s\S]*?)```/i.exec(text);
  const candidates = [fenced?.[1], text];
  for (const c of candidates) {
    if (!c) continue;
    const start = c.indexOf('{');
    const end = c.lastIndexOf('}');
    if (start < 0 || end <= start) continue;
    try {
      return JSON.parse(c.slice(start, end + 1));
    } catch {
      // try the next candidate
    }
  }
  return undefined;
}

const ModelTriageSchema = z.object({
  intent: z.string().transform((s) => ((INTENTS as readonly string[]).includes(s.toLowerCase()) ? (s.toLowerCase() as Intent) : 'other')),
  urgency: z.enum(URGENCIES).catch('normal'),
  sentiment: z.enum(SENTIMENTS).catch('neutral'),
  entities: z.array(z.string()).catch([]),
  confidence: z.number().min(0).max(1).catch(0.7),
  escalate: z.boolean().optional(),
  reasons: z.array(z.string()).catch([]),
});

/** A model's triage answer, normalized; undefined when it is not a usable JSON triage. */
export function parseModelTriage(content: string): Omit<Triage, 'tier'> | undefined {
  const r = ModelTriageSchema.safeParse(extractJson(content));
  if (!r.success) return undefined;
  const t = r.data;
  return {
    intent: t.intent,
    urgency: t.urgency,
    sentiment: t.sentiment,
    entities: t.entities.slice(0, 20),
    confidence: round(t.confidence),
    escalate: t.escalate ?? t.urgency === 'high',
    reasons: t.reasons.slice(0, 10),
  };
}
