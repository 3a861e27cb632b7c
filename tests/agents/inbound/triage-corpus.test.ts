/**
 * The labeled triage corpus: big enough, labels valid, the split fixed by base message (the
 * generator reproduces the committed file exactly), the hard cases the issue names present, and
 * nothing of the test split written into the rules or the learned tier.
 */
import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { INTENTS, URGENCIES, cleanText } from '../../../agents/inbound/heuristics.ts';
import { loadTriageCorpus } from '../../../agents/inbound/learned.ts';
import { buildCorpus } from '../../../agents/inbound/fixtures/make-triage-corpus.ts';

const corpus = loadTriageCorpus();
/** bases b001..b155 were split 70/30 by stratum; later bases are train only */
const STRATIFIED_BASES = 155;
/** the test split's fingerprint, pinned when the train-only bases were added */
const TEST_SPLIT_SHA256 = '859d5a0dda9cf477b2db7d41f0c0b763b2fc5db6b0b828851e5532f7ee77bc3b';

describe('triage corpus', () => {
  it('has at least 400 messages with valid labels and unique ids', () => {
    expect(corpus.length).toBeGreaterThanOrEqual(400);
    expect(new Set(corpus.map((c) => c.id)).size).toBe(corpus.length);
    for (const c of corpus) {
      expect(INTENTS).toContain(c.intent);
      expect(URGENCIES).toContain(c.urgency);
      expect(typeof c.escalate).toBe('boolean');
      expect(['train', 'test']).toContain(c.split);
      expect(c.text.trim().length).toBeGreaterThan(10);
    }
  });

  it('the split is the committed one, by base message, about 70/30 and stratified', () => {
    // the generator is deterministic: regenerating gives the committed file, split included
    expect(buildCorpus().map((c) => `${c.id}:${c.split}`)).toEqual(corpus.map((c) => `${c.id}:${c.split}`));
    const splitOf = new Map<string, Set<string>>();
    for (const c of corpus) splitOf.set(c.base, (splitOf.get(c.base) ?? new Set()).add(c.split));
    for (const s of splitOf.values()) expect(s.size).toBe(1);
    const test = corpus.filter((c) => c.split === 'test');
    // the stratified bases (corpus-bases-en/more.ts) are split about 70/30; the bases written later
    // (corpus-bases-train.ts) are train only, so the test split never moved
    const stratified = corpus.filter((c) => Number(c.base.slice(1)) <= STRATIFIED_BASES);
    expect(test.every((c) => stratified.includes(c))).toBe(true);
    expect(test.length / stratified.length).toBeGreaterThan(0.25);
    expect(test.length / stratified.length).toBeLessThan(0.35);
    expect(corpus.filter((c) => c.split === 'train').length).toBeGreaterThan(900);
    for (const i of INTENTS) expect(test.filter((c) => c.intent === i).length).toBeGreaterThan(0);
    expect(test.filter((c) => c.escalate).length).toBeGreaterThanOrEqual(15);
  });

  it('the test split is exactly the one the first figures were measured on (ids and texts)', () => {
    const test = corpus.filter((c) => c.split === 'test');
    expect(test.length).toBe(135);
    const digest = createHash('sha256').update(test.map((c) => `${c.id}\u0000${c.subject ?? ''}\u0000${c.text}\u0000${c.intent}\u0000${c.urgency}\u0000${c.escalate}`).join('\u0001')).digest('hex');
    expect(digest).toBe(TEST_SPLIT_SHA256);
  });

  it('covers languages, channels, forwarded and quoted history, signatures and the hard cases', () => {
    for (const l of ['en', 'de', 'fr', 'es']) expect(corpus.filter((c) => c.language === l).length).toBeGreaterThanOrEqual(20);
    expect(corpus.some((c) => c.channel === 'chat')).toBe(true);
    expect(corpus.some((c) => /Forwarded message/.test(c.text))).toBe(true);
    expect(corpus.some((c) => /wrote:\n>/.test(c.text))).toBe(true);
    expect(corpus.some((c) => /\n-- \n/.test(c.text))).toBe(true);
    const has = (re: RegExp, f: (c: (typeof corpus)[number]) => boolean = () => true) => corpus.some((c) => re.test(c.text) && f(c));
    expect(has(/chargeback/i, (c) => c.escalate)).toBe(true);
    expect(has(/lawyer|small claims/i, (c) => c.escalate)).toBe(true);
    expect(has(/smoking|melted|electric shock/i, (c) => c.escalate)).toBe(true);
    expect(has(/taken over|hacked/i, (c) => c.escalate)).toBe(true);
    expect(has(/deadline|client delivery/i, (c) => c.escalate)).toBe(true);
    expect(corpus.some((c) => c.priorContacts >= 3 && c.escalate)).toBe(true);
    expect(has(/./, (c) => c.intent === 'cancellation' && !/cancel/i.test(c.text))).toBe(true);
    expect(has(/./, (c) => c.intent === 'bug' && !/bug|error/i.test(c.text))).toBe(true);
    expect(has(/thank you to \w+/i, (c) => c.intent === 'praise')).toBe(true);
    expect(has(/correct/i, (c) => c.intent === 'billing')).toBe(true);
  });

  it('no sentence of the test split is written into the rules or the learned tier', () => {
    const code = ['../../../agents/inbound/heuristics.ts', '../../../agents/inbound/languages.ts', '../../../agents/inbound/learned.ts']
      .map((f) => readFileSync(new URL(f, import.meta.url), 'utf8').toLowerCase())
      .join('\n');
    const leaks: string[] = [];
    for (const c of corpus.filter((x) => x.split === 'test')) {
      // every run of 6 words of the customer's own words (quoted support replies are not theirs)
      const words = cleanText(c.text).toLowerCase().match(/[\p{L}\p{N}']+/gu) ?? [];
      for (let i = 0; i + 6 <= words.length; i++) {
        const phrase = words.slice(i, i + 6).join(' ');
        if (code.includes(phrase)) leaks.push(`${c.id}: ${phrase}`);
      }
    }
    expect(leaks).toEqual([]);
  });
});
