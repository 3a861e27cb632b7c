/**
 * Languages at tier 0: which language a customer wrote in, and the rules and reply templates
 * for the ones tier 0 speaks (English, German, French, Spanish). Pure data and functions, used
 * by heuristics.ts (`triageText`, `draftReply`).
 *
 * Detection is by common function words (and a few letters: ß, ñ, ç …) for Latin-script
 * languages, and by script for the others (Cyrillic → `ru`, Han → `zh` …). It is meant for
 * customer mails, not for three-word snippets: a short or ambiguous text counts as English.
 */

/** The languages tier 0 triages and answers in. */
export const TIER0_LANGUAGES = ['en', 'de', 'fr', 'es'] as const;
export type Tier0Language = (typeof TIER0_LANGUAGES)[number];

export const LANGUAGE_NAMES: Readonly<Record<string, string>> = {
  en: 'English', de: 'German', fr: 'French', es: 'Spanish', it: 'Italian', pt: 'Portuguese', nl: 'Dutch',
  ru: 'Russian', el: 'Greek', ar: 'Arabic', he: 'Hebrew', zh: 'Chinese', ja: 'Japanese', ko: 'Korean', hi: 'Hindi', th: 'Thai', und: 'an unknown language',
};

export interface LanguageGuess {
  /** ISO 639-1 (`de`), or `und` when there is too little text to tell */
  language: string;
  /** tier 0 has rules and reply templates for it */
  supported: boolean;
  /** 0..1: how clearly the text is in that language */
  confidence: number;
  /** what decided it, for the triage's reasons */
  cue: string;
}

const FUNCTION_WORDS: Readonly<Record<string, readonly string[]>> = {
  en: ['the', 'and', 'is', 'are', 'was', 'were', 'to', 'of', 'my', 'your', 'you', 'i', 'it', 'for', 'with', 'this', 'that', 'not', 'have', 'has', 'please', 'thanks', 'thank', 'can', 'could', 'would', 'will', 'be', 'we', 'our', 'me', 'what', 'how', 'when', 'why', 'do', 'does', 'did', "don't", "can't", "i'm", 'hi', 'hello', 'just', 'still', 'order', 'an', 'at', 'from', 'but', 'there', 'any', 'if', 'so', 'get', 'been'],
  de: ['der', 'die', 'das', 'und', 'ist', 'nicht', 'ich', 'sie', 'es', 'ein', 'eine', 'einen', 'einem', 'mit', 'für', 'von', 'zu', 'den', 'dem', 'des', 'auf', 'mein', 'meine', 'meinen', 'meiner', 'bitte', 'danke', 'ihr', 'ihre', 'ihnen', 'wir', 'haben', 'habe', 'hat', 'wurde', 'wurden', 'noch', 'auch', 'aber', 'wie', 'was', 'warum', 'kann', 'können', 'sehr', 'guten', 'tag', 'hallo', 'geehrte', 'geehrter', 'grüße', 'grüßen', 'freundlichen', 'bestellung', 'rechnung', 'schon', 'jetzt', 'nach', 'bei', 'ob', 'dass', 'wieder', 'immer', 'zwei', 'mal'],
  fr: ['le', 'la', 'les', 'et', 'est', 'pas', 'je', 'vous', 'il', 'elle', 'un', 'une', 'des', 'du', 'pour', 'avec', 'sur', 'mon', 'ma', 'mes', 'votre', 'vos', 'nous', 'avons', 'ai', 'été', 'merci', 'bonjour', 'madame', 'monsieur', 'ne', 'que', 'qui', 'dans', 'ce', 'cette', 'mais', 'comment', 'pourquoi', 'commande', 'facture', 'cordialement', "j'ai", "c'est", "n'est", 'au', 'aux', 'depuis', 'toujours', 'fois', 'très', 'ça', 'votre'],
  es: ['el', 'los', 'las', 'y', 'es', 'yo', 'usted', 'ustedes', 'una', 'del', 'para', 'con', 'por', 'mi', 'mis', 'su', 'sus', 'pero', 'como', 'qué', 'hola', 'gracias', 'buenos', 'buenas', 'días', 'estimados', 'estimado', 'pedido', 'factura', 'he', 'ha', 'han', 'muy', 'este', 'esta', 'saludos', 'ya', 'todavía', 'desde', 'veces', 'dos', 'me', 'lo', 'le', 'se', 'al', 'está', 'están', 'puedo', 'quiero'],
  it: ['il', 'gli', 'è', 'non', 'io', 'di', 'per', 'con', 'mio', 'mia', 'che', 'ma', 'come', 'perché', 'grazie', 'buongiorno', 'ordine', 'fattura', 'sono', 'ho', 'molto', 'questo', 'questa', 'cordiali', 'saluti', 'della', 'del', 'alla', 'ancora', 'volte', 'vorrei'],
  pt: ['os', 'não', 'eu', 'você', 'um', 'uma', 'do', 'da', 'para', 'com', 'em', 'meu', 'minha', 'que', 'mas', 'como', 'obrigado', 'obrigada', 'olá', 'bom', 'dia', 'pedido', 'fatura', 'tenho', 'foi', 'muito', 'atenciosamente', 'ainda', 'vezes', 'gostaria', 'está'],
  nl: ['het', 'een', 'en', 'is', 'niet', 'ik', 'u', 'je', 'van', 'voor', 'met', 'op', 'mijn', 'uw', 'wij', 'dat', 'die', 'maar', 'hoe', 'waarom', 'bedankt', 'dank', 'hallo', 'goedemorgen', 'bestelling', 'factuur', 'heb', 'heeft', 'zijn', 'graag', 'groeten', 'nog', 'twee', 'keer'],
};
const WORD_SETS = Object.fromEntries(Object.entries(FUNCTION_WORDS).map(([k, v]) => [k, new Set(v)])) as Record<string, Set<string>>;

/** Letters that point at one language. */
const LETTER_CUES: ReadonlyArray<[string, RegExp]> = [['de', /[äöüß]/], ['es', /[ñ¿¡]/], ['fr', /[çœèêëîûù]/], ['pt', /[ãõ]/]];

/** Scripts → a language (the commonest one written in it). */
const SCRIPTS: ReadonlyArray<[string, RegExp]> = [
  ['ru', /\p{Script=Cyrillic}/gu], ['el', /\p{Script=Greek}/gu], ['ar', /\p{Script=Arabic}/gu], ['he', /\p{Script=Hebrew}/gu],
  ['ja', /[\p{Script=Hiragana}\p{Script=Katakana}]/gu], ['ko', /\p{Script=Hangul}/gu], ['zh', /\p{Script=Han}/gu], ['hi', /\p{Script=Devanagari}/gu], ['th', /\p{Script=Thai}/gu],
];

export const wordsOf = (text: string): string[] => text.toLowerCase().match(/[\p{L}][\p{L}'’]*/gu)?.map((w) => w.replace(/’/g, "'")) ?? [];

/** The language a customer wrote in (see the module comment). */
export function detectLanguage(text: string): LanguageGuess {
  const letters = text.match(/\p{L}/gu)?.length ?? 0;
  if (letters === 0) return { language: 'und', supported: false, confidence: 0, cue: 'no letters' };
  for (const [lang, re] of SCRIPTS) {
    const n = text.match(re)?.length ?? 0;
    // Japanese mixes Han with kana: kana decide it before Han does
    if (n / letters > 0.3) return { language: lang, supported: false, confidence: Math.min(1, n / letters), cue: `${LANGUAGE_NAMES[lang]} script` };
  }
  const words = wordsOf(text);
  const lower = text.toLowerCase();
  const score: Record<string, number> = {};
  for (const [lang, set] of Object.entries(WORD_SETS)) score[lang] = words.filter((w) => set.has(w)).length;
  for (const [lang, re] of LETTER_CUES) if (re.test(lower)) score[lang] = (score[lang] ?? 0) + 2;
  const ranked = Object.entries(score).sort((a, b) => b[1] - a[1]);
  const [best, second] = ranked;
  const en = score.en ?? 0;
  // English unless another language clearly wins: short and mixed texts stay English
  if (!best || best[0] === 'en' || best[1] < 3 || best[1] < en * 1.5) {
    if (words.length >= 3 && en === 0 && (best?.[1] ?? 0) < 3) return { language: 'und', supported: false, confidence: 0.2, cue: 'too few common words to tell' };
    return { language: 'en', supported: true, confidence: words.length ? Math.min(1, 0.5 + en / words.length) : 0.5, cue: `${en} English function word(s)` };
  }
  const margin = best[1] - Math.max(en, second?.[0] === best[0] ? 0 : (second?.[1] ?? 0));
  const language = best[0];
  return {
    language,
    supported: (TIER0_LANGUAGES as readonly string[]).includes(language),
    confidence: Math.round(Math.min(1, 0.5 + margin / Math.max(4, words.length / 4)) * 100) / 100,
    cue: `${best[1]} ${LANGUAGE_NAMES[language]} cue(s) vs ${en} English`,
  };
}

// ---- triage rules for German, French and Spanish ----------------------------------------------

export interface LangRule {
  re: RegExp;
  weight: number;
  label: string;
}

/** A Unicode-aware whole-word pattern (JavaScript's `\b` knows only ASCII letters). */
const w = (pattern: string): RegExp => new RegExp(`(?<![\\p{L}\\p{N}])(?:${pattern})(?![\\p{L}\\p{N}])`, 'u');
const r = (pattern: string, weight: number, label: string): LangRule => ({ re: w(pattern), weight, label });

export interface LanguageRules {
  intent: Record<'refund' | 'billing' | 'bug' | 'cancellation' | 'question' | 'praise', LangRule[]>;
  urgent: LangRule[];
  low: RegExp;
  anger: LangRule[];
  /** disappointment without anger: negative sentiment, no escalation */
  negative: RegExp;
  positive: RegExp;
}

export const LANGUAGE_RULES: Readonly<Record<Exclude<Tier0Language, 'en'>, LanguageRules>> = {
  de: {
    intent: {
      refund: [r('rückerstattung\\w*|erstattung|(zurück)?erstatten|zurückerstattet|erstattet', 3, 'Rückerstattung'), r('geld zurück|mein geld', 3, 'Geld zurück'), r('rückzahlung|gutschrift|rückbuchung|zurückbuchen', 2, 'Rückzahlung')],
      billing: [r('rechnung(en|snummer)?|abrechnung', 2, 'Rechnung'), r('doppelt (abgebucht|belastet|berechnet|bezahlt)|zweimal (abgebucht|belastet|berechnet|bezahlt)|zu viel (berechnet|abgebucht)', 3, 'doppelt abgebucht'), r('abgebucht|abbuchung|belastet|berechnet', 1, 'Abbuchung'), r('zahlung|kreditkarte|lastschrift|quittung|mwst|preis|gebühr(en)?', 1, 'Zahlung')],
      bug: [r('fehler(meldung)?|bug|absturz|abgestürzt|stürzt( \\w+)? ab', 2, 'Fehler'), r('(funktioniert|geht|klappt|lädt|startet) (\\w+ )?(nicht|nicht mehr)|kann mich nicht (anmelden|einloggen)|lässt sich nicht', 2, 'funktioniert nicht'), r('ausfall|störung|nicht erreichbar|offline|(ist|sind) down', 3, 'Ausfall'), r('kaputt|defekt', 2, 'kaputt')],
      cancellation: [r('kündigen|kündigung|gekündigt', 3, 'Kündigung'), r('(konto|account|profil) (löschen|schließen)|lösch\\w* (mein|das) (konto|account)', 3, 'Konto löschen'), r('(abo|abonnement|vertrag|mitgliedschaft) (beenden|kündigen)', 3, 'Abo beenden'), r('stornier\\w*|abmelden', 2, 'stornieren')],
      question: [r('wie kann (ich|man)|können sie|könnten sie|gibt es|wo finde ich|was ist|wann (wird|kommt|ist)|ist es möglich|bieten sie|wie funktioniert', 2, 'Frage'), { re: /\?/, weight: 1, label: 'Fragezeichen' }],
      praise: [r('super|toll|großartig|fantastisch|hervorragend|ausgezeichnet|klasse|begeistert|gute arbeit|top', 2, 'Lob'), r('vielen (herzlichen )?dank für (die|ihre|eure) (schnelle|tolle|großartige)?\\s?(hilfe|antwort|unterstützung)', 2, 'herzlicher Dank')],
    },
    urgent: [r('dringend|sofort|umgehend|schnellstmöglich|so schnell wie möglich|notfall|kritisch|eilig|unverzüglich', 1, 'dringend'), r('ausfall|(ist|sind) (down|offline|nicht erreichbar)|produktion steht|alle (kunden|nutzer) (sind )?betroffen|verlieren (geld|kunden|umsatz)', 1, 'Ausfall'), r('anwalt|rechtsanwalt|klage|verklagen|gericht|rechtliche schritte|verbraucherzentrale|abmahnung', 1, 'rechtliche Drohung')],
    low: w('keine eile|nicht dringend|wann immer (sie|es) (passt|zeit haben)|hat zeit|kein stress'),
    anger: [r('wütend|verärgert|stinksauer|sauer|empört', 1, 'Ärger'), r('frechheit|unverschämt|inakzeptabel|lächerlich|katastrophe|miserabel|schrecklich|unglaublich schlecht|zumutung', 1, 'Verachtung'), r('betrug|abzocke|betrüger|diebe', 1, 'Vorwurf'), r('scheiße|scheiss|verdammt|mist', 1, 'Kraftausdruck'), r('nie wieder|werde (wechseln|woanders)|schlechte bewertung|allen erzählen', 1, 'Abwanderung')],
    negative: w('enttäuscht|leider|ärgerlich|schlecht|unzufrieden|problem'),
    positive: w('danke|vielen dank|freue|zufrieden|gerne'),
  },
  fr: {
    intent: {
      refund: [r('rembours\\w*', 3, 'remboursement'), r("récupérer mon argent|rendre (mon|l')argent", 3, 'argent rendu'), r('avoir|rétrofacturation', 1, 'avoir')],
      billing: [r('factur(e|es|ation|é|ée)', 2, 'facture'), r('(débité|prélevé|facturé|payé)e?s? deux fois|double (prélèvement|paiement|facturation)|trop (payé|facturé)', 3, 'débité deux fois'), r('débité|prélèvement|prélevé', 1, 'prélèvement'), r('paiement|carte bancaire|reçu|tva|tarif|prix', 1, 'paiement')],
      bug: [r('erreur|bug|beug|plantage|plant(e|é)|crash', 2, 'erreur'), r("ne (fonctionne|marche|charge|s'ouvre|démarre) (plus|pas)|impossible de (me connecter|se connecter|charger|ouvrir)|n'arrive pas à", 2, 'ne fonctionne pas'), r('panne|hors service|inaccessible|en rade', 3, 'panne'), r('cassé', 2, 'cassé')],
      cancellation: [r('annul(er|ation|é)|résili(er|ation)', 3, 'annulation'), r('(supprimer|fermer|clôturer) mon compte', 3, 'fermer le compte'), r('désabonner|désinscri\\w*|mettre fin à (mon|l\')abonnement', 3, 'désabonnement')],
      question: [r("comment (puis-je|faire|est-ce|fonctionne)|est-il possible|pouvez-vous|pourriez-vous|est-ce que|où (puis-je|trouver|est)|quand (est-ce|sera|va)|qu'est-ce que|proposez-vous", 2, 'question'), { re: /\?/, weight: 1, label: "point d'interrogation" }],
      praise: [r('génial|super|excellent|formidable|bravo|merveilleux|parfait|impressionné|top', 2, 'éloge'), r('merci (beaucoup|infiniment) pour (votre|la) (aide|réponse|rapidité)', 2, 'remerciements')],
    },
    urgent: [r("urgent|urgence|immédiatement|tout de suite|au plus vite|dès que possible|critique|sans délai", 1, 'urgence'), r('panne|hors service|inaccessible|site (est )?en panne|perd(ons|s) des (clients|ventes)|tous (nos|les) (clients|utilisateurs)', 1, 'panne'), r('avocat|plainte|tribunal|poursuites|action en justice|mise en demeure|association de consommateurs', 1, 'menace juridique')],
    low: w("pas urgent|rien ne presse|quand vous aurez le temps|pas pressé"),
    anger: [r('furieu(x|se)|en colère|énervé|excédé|outré', 1, 'colère'), r('scandaleux|inadmissible|inacceptable|honteux|ridicule|lamentable|nul|catastrophique', 1, 'mépris'), r('arnaque|escroquerie|escrocs|voleurs', 1, 'accusation'), r('merde|putain|bordel', 1, 'grossièreté'), r('plus jamais|je vais (partir|changer)|mauvais avis|le dire à tout le monde', 1, 'menace de départ')],
    negative: w('déçue?|malheureusement|mécontente?|problème|pas satisfaite?'),
    positive: w('merci|ravie?|satisfaite?|content(e)?'),
  },
  es: {
    intent: {
      refund: [r('reembols\\w*', 3, 'reembolso'), r('devolución (del|de mi) dinero|devolver(me)? (el|mi) dinero|mi dinero', 3, 'devolución del dinero'), r('devolución', 1, 'devolución')],
      billing: [r('factura(s|ción)?', 2, 'factura'), r('cobrad[oa]s? dos veces|cobro doble|doble cobro|cargo doble|me (han|ha) cobrado de más', 3, 'cobro doble'), r('cobr(o|ado|aron)|cargo', 1, 'cobro'), r('pago|tarjeta|recibo|iva|precio', 1, 'pago')],
      bug: [r('error|fallo|falla|bug|se cuelga|se bloquea', 2, 'error'), r('no (funciona|carga|abre|arranca)|no puedo (entrar|iniciar sesión|acceder|conectarme)', 2, 'no funciona'), r('caíd[oa]|fuera de servicio|no está disponible|sin servicio', 3, 'caída'), r('roto', 2, 'roto')],
      cancellation: [r('cancel(ar|ación|ado)', 3, 'cancelar'), r('dar(me)? de baja|baja de (mi|la) (cuenta|suscripción)', 3, 'dar de baja'), r('(eliminar|cerrar|borrar) (mi|la) cuenta', 3, 'cerrar la cuenta')],
      question: [r('cómo (puedo|se|funciona)|es posible|pueden|podrían|dónde (puedo|está|encuentro)|qué es|cuándo (va|será|llega)|ofrecen', 2, 'pregunta'), { re: /[?¿]/, weight: 1, label: 'signo de interrogación' }],
      praise: [r('genial|excelente|increíble|fantástico|maravilloso|estupendo|buen trabajo|perfecto', 2, 'elogio'), r('muchas gracias por (su|la|tu) (ayuda|respuesta|rapidez)', 2, 'agradecimiento')],
    },
    urgent: [r('urgente|urgencia|inmediatamente|ahora mismo|cuanto antes|lo antes posible|crítico|de inmediato', 1, 'urgencia'), r('caíd[oa]|fuera de servicio|perdiendo (dinero|clientes|ventas)|todos (nuestros|los) (clientes|usuarios)', 1, 'caída'), r('abogad[oa]|demanda(r)?|tribunal|juzgado|acciones legales|denuncia|oficina del consumidor', 1, 'amenaza legal')],
    low: w('no es urgente|sin prisa|cuando puedan|no corre prisa'),
    anger: [r('furios[oa]|enfadad[oa]|enojad[oa]|indignad[oa]|hart[oa]', 1, 'enfado'), r('inaceptable|vergüenza|vergonzoso|ridículo|pésimo|horrible|lamentable|una burla', 1, 'desprecio'), r('estafa|fraude|ladrones|timo', 1, 'acusación'), r('mierda|joder|maldit[oa]', 1, 'grosería'), r('nunca más|me voy a ir|mala reseña|se lo diré a todos', 1, 'amenaza de irse')],
    negative: w('decepcionad[oa]|lamentablemente|molest[oa]|problema|insatisfech[oa]'),
    positive: w('gracias|encantad[oa]|satisfech[oa]|content[oa]'),
  },
};

/** Order, invoice and customer numbers and euro amounts as written in German, French and Spanish mails. */
export function localizedEntities(text: string): string[] {
  const out: string[] = [];
  const kinds: ReadonlyArray<[RegExp, string]> = [
    [/(?:bestell(?:ung|nummer)|auftrag(?:snummer)?|commande|pedido|n[úu]mero de pedido)/iu, 'ORDER'],
    [/(?:rechnung(?:snummer)?|facture|factura)/iu, 'INVOICE'],
    [/(?:kundennummer|kundenkonto|num[ée]ro client|n[úu]mero de cliente)/iu, 'ACCOUNT'],
  ];
  const re = /(?<![\p{L}])(bestellnummer|bestellung|auftragsnummer|auftrag|rechnungsnummer|rechnung|kundennummer|kundenkonto|num[ée]ro de commande|commande|facture|num[ée]ro client|n[úu]mero de pedido|pedido|factura|n[úu]mero de cliente)\s*(?:nr\.?|n[°º]|no\.?|núm\.?|num[ée]ro|#|:)?\s*#?\s*([A-Z0-9][A-Z0-9-]{3,})(?![\p{L}\p{N}])/giu;
  for (const m of text.matchAll(re)) {
    if (!/\d/.test(m[2]!)) continue;
    const kind = kinds.find(([k]) => k.test(m[1]!))?.[1] ?? 'REF';
    out.push(`${kind}:${m[2]!}`);
  }
  for (const m of text.matchAll(/(?<![\p{L}\p{N}])(\d{1,3}(?:[.\s]\d{3})*(?:,\d{1,2})?|\d+(?:[.,]\d{1,2})?)\s?(€|eur(?:o|os)?)(?![\p{L}])/giu)) out.push(`MONEY:${m[1]!} €`);
  for (const m of text.matchAll(/€\s?(\d+(?:[.,]\d{1,2})?)/g)) out.push(`MONEY:€${m[1]!}`);
  return [...new Set(out)];
}

// ---- reply templates ---------------------------------------------------------------------------

export interface ReplyTemplate {
  greeting(first: string | undefined): string;
  bodies: Record<'refund' | 'billing' | 'bug' | 'cancellation' | 'question' | 'praise' | 'other', string>;
  escalated: string;
  urgent: string;
  signOff: string;
  /** the signature when KEEL_SUPPORT_SIGNATURE is left at its English default */
  signature: string;
  /** `ORDER:48213` → ` (order 48213)` in this language */
  refWords: Record<string, string>;
}

export const REPLY_TEMPLATES: Readonly<Record<Tier0Language, ReplyTemplate>> = {
  en: {
    greeting: (f) => (f ? `Hi ${f},` : 'Hello,'),
    bodies: {
      refund: "Thank you for reaching out about a refund{ref}. I'm sorry this didn't work out for you. I'm looking into your purchase now and will confirm the refund and when you can expect it to arrive.",
      billing: "Thank you for getting in touch about your billing{ref}. I'm checking the charges on your account now and will come back to you with a clear breakdown and, if something was charged in error, the correction.",
      bug: "Thank you for reporting this{ref}, and I'm sorry for the trouble. I've passed the details to our engineers and will update you as soon as we know more. If you can, please tell us what you were doing when it happened and send a screenshot of any error.",
      cancellation: "I'm sorry to see you go. I've noted your request to cancel{ref} and will confirm once it has been processed, including the date your access ends and any final charges.",
      question: "Thanks for your question{ref}. I'm looking into it and will get back to you with a full answer shortly.",
      praise: "Thank you so much for your kind words! It means a lot to us, and I'll make sure the whole team sees your message.",
      other: "Thank you for your message{ref}. I've read it and will get back to you shortly.",
    },
    escalated: "I've flagged this as a priority and a member of our team is personally looking into it right now.",
    urgent: "I understand this is urgent and I'm treating it as a priority.",
    signOff: 'Best regards,',
    signature: 'The support team',
    refWords: { ORDER: 'order', INVOICE: 'invoice', REF: 'ref', TICKET: 'ticket', CASE: 'case', ACCOUNT: 'account' },
  },
  de: {
    greeting: (f) => (f ? `Hallo ${f},` : 'Guten Tag,'),
    bodies: {
      refund: 'vielen Dank für Ihre Nachricht zur Rückerstattung{ref}. Es tut mir leid, dass es nicht wie erwartet geklappt hat. Ich prüfe Ihren Kauf gerade und bestätige Ihnen die Rückerstattung und wann Sie mit dem Geld rechnen können.',
      billing: 'vielen Dank für Ihre Nachricht zu Ihrer Rechnung{ref}. Ich prüfe gerade die Abbuchungen auf Ihrem Konto und melde mich mit einer genauen Aufstellung und, falls etwas zu Unrecht berechnet wurde, mit der Korrektur.',
      bug: 'vielen Dank, dass Sie uns das gemeldet haben{ref}, und entschuldigen Sie die Unannehmlichkeiten. Ich habe die Details an unsere Technik weitergegeben und melde mich, sobald wir mehr wissen. Wenn möglich, schreiben Sie uns bitte, was Sie gerade getan haben, als es passiert ist, und schicken Sie uns einen Screenshot der Fehlermeldung.',
      cancellation: 'schade, dass Sie uns verlassen möchten. Ich habe Ihre Kündigung{ref} notiert und bestätige Ihnen, sobald sie bearbeitet ist, auch bis wann Ihr Zugang besteht und ob noch Kosten anfallen.',
      question: 'vielen Dank für Ihre Frage{ref}. Ich kümmere mich darum und melde mich in Kürze mit einer ausführlichen Antwort.',
      praise: 'vielen herzlichen Dank für Ihre freundlichen Worte! Das bedeutet uns sehr viel, und ich sorge dafür, dass das ganze Team Ihre Nachricht sieht.',
      other: 'vielen Dank für Ihre Nachricht{ref}. Ich habe sie gelesen und melde mich in Kürze bei Ihnen.',
    },
    escalated: 'Ich habe Ihr Anliegen als vorrangig markiert, und ein Mitglied unseres Teams kümmert sich persönlich und sofort darum.',
    urgent: 'Ich verstehe, dass es dringend ist, und behandle Ihr Anliegen mit Vorrang.',
    signOff: 'Mit freundlichen Grüßen',
    signature: 'Ihr Support-Team',
    refWords: { ORDER: 'Bestellung', INVOICE: 'Rechnung', REF: 'Referenz', TICKET: 'Ticket', CASE: 'Vorgang', ACCOUNT: 'Kundennummer' },
  },
  fr: {
    greeting: (f) => (f ? `Bonjour ${f},` : 'Bonjour,'),
    bodies: {
      refund: "Merci de nous avoir contactés au sujet d'un remboursement{ref}. Nous sommes désolés que cela ne se soit pas passé comme prévu. J'examine votre achat dès maintenant et je vous confirmerai le remboursement ainsi que le délai dans lequel vous le recevrez.",
      billing: "Merci de nous avoir écrit au sujet de votre facturation{ref}. Je vérifie en ce moment les prélèvements sur votre compte et je reviens vers vous avec un détail clair et, si quelque chose a été facturé par erreur, la correction.",
      bug: "Merci de nous avoir signalé ce problème{ref}, et toutes nos excuses pour la gêne occasionnée. J'ai transmis les détails à nos ingénieurs et je vous tiendrai au courant dès que nous en saurons plus. Si possible, dites-nous ce que vous faisiez au moment du problème et envoyez-nous une capture d'écran du message d'erreur.",
      cancellation: "Nous sommes désolés de vous voir partir. J'ai bien noté votre demande d'annulation{ref} et je vous confirmerai son traitement, avec la date de fin de votre accès et les éventuels derniers frais.",
      question: 'Merci pour votre question{ref}. Je me renseigne et je reviens vers vous très vite avec une réponse complète.',
      praise: "Merci beaucoup pour vos gentils mots ! Cela nous touche énormément, et je veillerai à ce que toute l'équipe voie votre message.",
      other: "Merci pour votre message{ref}. Je l'ai bien lu et je reviens vers vous rapidement.",
    },
    escalated: "J'ai marqué votre demande comme prioritaire et un membre de notre équipe s'en occupe personnellement dès maintenant.",
    urgent: "Je comprends que c'est urgent et je traite votre demande en priorité.",
    signOff: 'Cordialement,',
    signature: "L'équipe support",
    refWords: { ORDER: 'commande', INVOICE: 'facture', REF: 'référence', TICKET: 'ticket', CASE: 'dossier', ACCOUNT: 'compte' },
  },
  es: {
    greeting: (f) => (f ? `Hola, ${f}:` : 'Hola:'),
    bodies: {
      refund: 'Gracias por escribirnos sobre el reembolso{ref}. Lamentamos que no haya salido como esperaba. Estoy revisando su compra ahora mismo y le confirmaré el reembolso y cuándo puede esperar recibirlo.',
      billing: 'Gracias por ponerse en contacto con nosotros sobre su facturación{ref}. Estoy revisando los cargos en su cuenta y le responderé con un desglose claro y, si se cobró algo por error, con la corrección.',
      bug: 'Gracias por informarnos de esto{ref}, y disculpe las molestias. He pasado los detalles a nuestro equipo técnico y le informaré en cuanto sepamos más. Si puede, díganos qué estaba haciendo cuando ocurrió y envíenos una captura de pantalla del error.',
      cancellation: 'Lamentamos que quiera irse. He registrado su solicitud de cancelación{ref} y le confirmaré cuando se haya procesado, incluida la fecha en que termina su acceso y cualquier cargo final.',
      question: 'Gracias por su pregunta{ref}. Lo estoy consultando y le responderé en breve con una respuesta completa.',
      praise: '¡Muchas gracias por sus amables palabras! Significan mucho para nosotros, y me aseguraré de que todo el equipo vea su mensaje.',
      other: 'Gracias por su mensaje{ref}. Lo he leído y le responderé en breve.',
    },
    escalated: 'He marcado su caso como prioritario y un miembro de nuestro equipo se está ocupando de él personalmente ahora mismo.',
    urgent: 'Entiendo que es urgente y lo estoy tratando como prioridad.',
    signOff: 'Saludos cordiales,',
    signature: 'El equipo de soporte',
    refWords: { ORDER: 'pedido', INVOICE: 'factura', REF: 'referencia', TICKET: 'ticket', CASE: 'caso', ACCOUNT: 'cuenta' },
  },
};

export function isTier0Language(l: string | undefined): l is Tier0Language {
  return !!l && (TIER0_LANGUAGES as readonly string[]).includes(l);
}
