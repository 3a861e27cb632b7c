/**
 * Tier 0 of the launch agents: research, drafts, self-review and the channel plan from the
 * product's own fields and the operator's notes, with no model. Pure functions: the same product
 * and notes always give the same text (replays compare it).
 */
import { terms, type ProductState } from './product.ts';

export interface Source {
  title: string;
  url?: string;
  snippet?: string;
}

const sentences = (text: string) =>
  text
    .replace(/\r/g, '')
    .split(/(?<=[.!?])\s+|\n+/)
    .map((s) => s.replace(/^[-*•#\s]+/, '').trim())
    .filter((s) => s.length >= 12 && s.length <= 400);

export const priceText = (p?: ProductState['price']) => (p ? `${p.currency === 'USD' ? '$' : p.currency === 'EUR' ? '€' : p.currency === 'GBP' ? '£' : `${p.currency} `}${p.amount % 1 === 0 ? p.amount : p.amount.toFixed(2)}` : undefined);

/**
 * The research points: sentences of the notes, documents, search results and earlier customer
 * messages that share the most words with the product's pitch, audience and description.
 */
export function researchPoints(p: ProductState, extra: { sources: Source[]; memories: string[] }, limit = 6): string[] {
  const focus = new Set(terms(`${p.name} ${p.pitch} ${p.audience} ${p.description ?? ''}`));
  const pool: { s: string; score: number; i: number }[] = [];
  const texts = [p.notes ?? '', ...p.documents.map((d) => d.text), ...extra.sources.map((s) => s.snippet ?? ''), ...extra.memories];
  let i = 0;
  for (const t of texts)
    for (const s of sentences(t)) {
      const words = terms(s);
      if (!words.length) continue;
      const hits = words.filter((w) => focus.has(w)).length;
      const signal = /\b(need|want|wish|problem|pain|hate|love|pay|paid|price|cost|hours?|minutes?|every|always|never)\b/i.test(s) ? 1 : 0;
      const number = /\d/.test(s) ? 0.5 : 0;
      pool.push({ s, score: hits + signal + number, i: i++ });
    }
  const seen = new Set<string>();
  return pool
    .sort((a, b) => b.score - a.score || a.i - b.i)
    .filter((x) => {
      const k = x.s.toLowerCase();
      if (seen.has(k)) return false;
      seen.add(k);
      return true;
    })
    .slice(0, limit)
    .map((x) => x.s);
}

export function researchSummary(p: ProductState, points: string[], counts: { notes: number; documents: number; sources: number; memories: number }): string {
  const from = [
    counts.notes ? 'the operator\'s notes' : '',
    counts.documents ? `${counts.documents} document(s)` : '',
    counts.sources ? `${counts.sources} web result(s)` : '',
    counts.memories ? `${counts.memories} earlier customer message(s) from memory` : '',
  ].filter(Boolean);
  const head = `${p.name} is for ${p.audience}: ${p.pitch.replace(/\.$/, '')}.`;
  if (!points.length) return `${head} No notes, documents or search results to draw on: the drafts rest on the product's own description.`;
  return `${head} From ${from.join(', ') || 'the product description'}, the strongest signals: ${points.slice(0, 3).map((x) => x.replace(/\.$/, '')).join('; ')}.`;
}

export interface Draft {
  slot: string;
  kind: 'landing_page' | 'email' | 'post';
  title: string;
  body: string;
}

const sig = (p: ProductState) => `The ${p.name} team`;

/** Tier-0 drafts of a launch asset kind, filled from the product and the research. */
export function templateDrafts(kind: 'page' | 'emails' | 'posts', p: ProductState, points: string[]): Draft[] {
  const price = priceText(p.price);
  const why = points.length ? points.slice(0, 3) : [`Made for ${p.audience}.`];
  if (kind === 'page') {
    const body = [
      `# ${p.name}`,
      '',
      `## ${p.pitch}`,
      '',
      p.description ?? `Built for ${p.audience}.`,
      '',
      `### Why ${p.audience}`,
      '',
      ...why.map((w) => `- ${w}`),
      '',
      ...(price ? ['### Price', '', `${price}, once. No subscription.`, ''] : []),
      `**Get ${p.name} today: reply to our launch email and we will set you up.**`,
      '',
    ].join('\n');
    return [{ slot: 'page', kind: 'landing_page', title: `${p.name}: ${p.pitch}`.slice(0, 200), body }];
  }
  if (kind === 'emails') {
    const announce = [
      'Hi,',
      '',
      `Today we launch ${p.name}: ${p.pitch.replace(/\.$/, '')}.`,
      '',
      `It is made for ${p.audience}.${why[0] ? ` ${why[0]}` : ''}`,
      '',
      ...(price ? [`It costs ${price}.`, ''] : []),
      'Reply to this email with any question: we read every answer.',
      '',
      `— ${sig(p)}`,
    ].join('\n');
    const follow = [
      'Hi,',
      '',
      `A few days ago we launched ${p.name}. ${why[1] ?? why[0] ?? ''}`.trim(),
      '',
      `If ${p.name} is not for you, no need to do anything. If it is, or you are unsure, reply and tell us what you need.`,
      '',
      `— ${sig(p)}`,
    ].join('\n');
    return [
      { slot: 'email-1', kind: 'email', title: `Introducing ${p.name}`, body: announce },
      { slot: 'email-2', kind: 'email', title: `${p.name}: a few days in`, body: follow },
    ];
  }
  const posts = [
    `Launching today: ${p.name}. ${p.pitch.replace(/\.$/, '')}.${price ? ` ${price}.` : ''}`,
    `Made for ${p.audience}. ${why[0] ?? ''}`.trim(),
    `Questions about ${p.name}? Ask away: we answer every one.`,
  ].map((x) => clip(x, 280));
  return [{ slot: 'posts', kind: 'post', title: `${p.name}: launch posts`, body: posts.join('\n\n---\n\n') }];
}

const clip = (s: string, n: number) => (s.length <= n ? s : `${s.slice(0, n - 1).replace(/\s+\S*$/, '')}…`);

/** What the self-review checks in every draft, whatever wrote it: problems, in words. */
export function reviewDraft(d: Draft, p: ProductState): string[] {
  const problems: string[] = [];
  if (!d.body.trim()) problems.push('the draft is empty');
  if (!d.body.toLowerCase().includes(p.name.toLowerCase()) && !d.title.toLowerCase().includes(p.name.toLowerCase())) problems.push(`the product's name (${p.name}) does not appear`);
  if (/\{[a-z_]+\}|\[(?:insert|todo|tbd)[^\]]*\]|lorem ipsum/i.test(d.body)) problems.push('an unfilled placeholder is left in the text');
  const price = priceText(p.price);
  if (d.kind === 'landing_page') {
    if (!/^#\s/m.test(d.body)) problems.push('the page has no heading');
    if (price && !d.body.includes(price)) problems.push(`the page does not state the price (${price})`);
    if (!/\b(get|buy|order|join|start|try|sign up|reply)\b/i.test(d.body)) problems.push('the page has no call to action');
  }
  if (d.kind === 'email' && !/\breply\b/i.test(d.body)) problems.push('the email does not invite a reply');
  if (d.kind === 'post') {
    const posts = splitPosts(d.body);
    if (!posts.length) problems.push('no post');
    posts.forEach((x, i) => x.length > 280 && problems.push(`post ${i + 1} is ${x.length} characters (over 280)`));
  }
  return problems;
}

/** Tier-0 fixes for what the self-review found (what a template can repair). */
export function fixDraft(d: Draft, p: ProductState, problems: string[]): Draft {
  let body = d.body;
  const price = priceText(p.price);
  for (const pr of problems) {
    if (pr.startsWith('the product\'s name')) body = d.kind === 'landing_page' ? `# ${p.name}\n\n${body}` : `${p.name}: ${body}`;
    else if (pr.startsWith('the page has no heading')) body = `# ${p.name}\n\n${body}`;
    else if (pr.startsWith('the page does not state the price') && price) body = `${body.trimEnd()}\n\n### Price\n\n${price}\n`;
    else if (pr.startsWith('the page has no call to action')) body = `${body.trimEnd()}\n\n**Get ${p.name} today.**\n`;
    else if (pr.startsWith('the email does not invite a reply')) body = `${body.trimEnd()}\n\nReply to this email with any question.`;
    else if (pr.startsWith('an unfilled placeholder')) body = body.replace(/\{[a-z_]+\}|\[(?:insert|todo|tbd)[^\]]*\]/gi, '').replace(/lorem ipsum/gi, '');
  }
  if (d.kind === 'post') body = splitPosts(body).map((x) => clip(x, 280)).join('\n\n---\n\n');
  return { ...d, body };
}

export const splitPosts = (body: string) => body.split(/\n\s*---+\s*\n/).map((x) => x.trim()).filter(Boolean);

/** The channel plan at tier 0: the site always; email when there are subscribers; social posts. */
export function templatePlan(p: ProductState): { channels: { channel: 'site' | 'email' | 'social'; why: string }[]; rationale: string } {
  const channels: { channel: 'site' | 'email' | 'social'; why: string }[] = [{ channel: 'site', why: 'the landing page is where every other channel points' }];
  if (p.subscribers.length) channels.push({ channel: 'email', why: `${p.subscribers.length} subscriber(s) asked to hear about it: the announcement at launch, a follow-up a few days later` });
  channels.push({ channel: 'social', why: `short posts for ${p.audience}, pointing to the page` });
  const rationale = `Launch ${p.name} on ${channels.map((c) => c.channel).join(', ')} at the same time, then follow up by email. ${p.subscribers.length ? '' : 'No subscribers yet: no launch email goes out. '}Replies to the launch email become tickets linked to the product.`;
  return { channels, rationale: rationale.trim() };
}
