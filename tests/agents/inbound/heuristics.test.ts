import { describe, expect, it } from 'vitest';
import {
  cleanText, draftReply, extractEntities, extractJson, firstName, htmlToText, parseModelTriage, summarizeThread, triageText,
} from '../../../agents/inbound/heuristics.ts';
import { customerIdFor, ticketIdFor } from '../../../agents/inbound/ticket.ts';

const triage = (text: string, subject?: string) => triageText(cleanText(text), { subject });

describe('triage heuristics (tier 0)', () => {
  it('a polite refund request: refund, normal urgency, confident, no escalation, order number found', () => {
    const t = triage(
      "Hi,\n\nI bought the annual plan last week but it doesn't fit our needs. Could I get a refund please? Order #48213.\n\nThanks,\nAda",
      'Refund for my order',
    );
    expect(t).toMatchObject({ intent: 'refund', urgency: 'normal', escalate: false, tier: 0 });
    expect(t.sentiment).not.toBe('negative');
    expect(t.confidence).toBeGreaterThanOrEqual(0.6);
    expect(t.entities).toContain('ORDER:48213');
    expect(t.reasons.join(' ')).toMatch(/refund/);
  });

  it('an angry outage complaint with a legal threat escalates', () => {
    const t = triage(
      "Your service has been DOWN for 3 hours!!! This is UNACCEPTABLE, we are losing sales every minute. Fix it immediately or I'm calling my lawyer.",
      'SITE DOWN',
    );
    expect(t).toMatchObject({ intent: 'bug', urgency: 'high', sentiment: 'negative', escalate: true });
    expect(t.reasons.join(' ')).toMatch(/legal threat/);
    expect(t.reasons.join(' ')).toMatch(/!!!/);
  });

  it('strong anger without urgency words still escalates; mild negativity does not', () => {
    expect(triage('This is the worst service ever. Absolutely ridiculous, I am so fed up with you.')).toMatchObject({ sentiment: 'negative', escalate: true });
    const mild = triage('I was charged twice this month, invoice INV-2024-0042. Please fix.');
    expect(mild).toMatchObject({ intent: 'billing', escalate: false });
    expect(mild.entities).toContain('INVOICE:INV-2024-0042');
  });

  it('praise: positive, low urgency', () => {
    const t = triage('Just wanted to say your team is amazing. Love the new dashboard, thanks so much for the quick help!', 'Thank you!');
    expect(t).toMatchObject({ intent: 'praise', sentiment: 'positive', urgency: 'low', escalate: false });
    expect(t.confidence).toBeGreaterThanOrEqual(0.6);
  });

  it('cancellation with "no rush" is low urgency and "not urgent" is not urgent', () => {
    expect(triage('Please cancel my subscription at the end of the month. No rush.')).toMatchObject({ intent: 'cancellation', urgency: 'low' });
    expect(triage('How do I change my billing address? Not urgent.')).toMatchObject({ urgency: 'low', escalate: false });
  });

  it('HTML mail is stripped to text before triage', () => {
    const html = '<html><head><style>p{color:red}</style></head><body><p>Hello,</p><p>How do I export my data &amp; reports as CSV?</p><div>Best,<br>Tom</div></body></html>';
    const text = cleanText(html);
    expect(text).not.toMatch(/[<>]|color:red|&amp;/);
    expect(text).toContain('How do I export my data & reports as CSV?');
    expect(triageText(text)).toMatchObject({ intent: 'question', escalate: false });
  });

  it('non-English-ish junk: intent other with low confidence (a model may look)', () => {
    const t = triage('asdkj qwpeo zxcmn 漢字漢字 ????');
    expect(t.intent).toBe('other');
    expect(t.confidence).toBeLessThan(0.6);
    expect(t.reasons).toContain('little recognizable English text');
    expect(triage('').confidence).toBeLessThan(0.6);
  });

  it('a vague message has no intent and low confidence', () => {
    const t = triage('the thing is weird');
    expect(t.intent).toBe('other');
    expect(t.confidence).toBeLessThan(0.6);
  });
});

describe('text cleanup', () => {
  it('cuts quoted history and signatures', () => {
    const t = cleanText('Still broken.\n\nOn Mon, 2 Jun 2025 at 10:00, Support <support@keel.local> wrote:\n> We fixed it.\n> Regards');
    expect(t).toBe('Still broken.');
    expect(cleanText('Thanks!\n-- \nAda Lovelace\nCEO')).toBe('Thanks!');
    expect(cleanText('> quoted\nmine')).toBe('mine');
  });

  it('decodes entities and drops scripts', () => {
    expect(htmlToText('<script>alert(1)</script><b>5 &lt; 6</b>&#33;&#x21;').trim()).toBe('5 < 6 !!');
  });
});

describe('entities', () => {
  it('finds money, emails, order numbers', () => {
    const e = extractEntities('I paid $450 for order 99812; write to bob@example.com');
    expect(e).toEqual(expect.arrayContaining(['MONEY:$450', 'ORDER:99812', 'EMAIL:bob@example.com']));
  });
});

describe('summary (extractive)', () => {
  it('keeps the sentences that matter, in thread order, and skips greetings', () => {
    const { summary, confidence } = summarizeThread([
      { direction: 'in', from: 'ada@example.com', at: '2025-06-01T10:00:00Z', text: 'Hi there,\nI bought the annual plan last week but it does not fit our needs. Could I get a refund please? Order #48213.\nThanks,\nAda' },
      { direction: 'out', from: 'support@keel.local', at: '2025-06-01T11:00:00Z', text: 'Hi Ada, we are looking into it. Best regards' },
      { direction: 'in', from: 'ada@example.com', at: '2025-06-08T10:00:00Z', text: 'Any update? It has been a week and I still have no refund. The charge of $99 is still on my card.' },
    ], { triage: { intent: 'refund', urgency: 'normal', sentiment: 'negative' } });
    expect(summary.split('\n')[0]).toBe('3 messages (2 from ada@example.com); refund, urgency normal, sentiment negative.');
    expect(summary).toMatch(/refund/);
    expect(summary).not.toMatch(/^Customer: Hi there/m);
    expect(summary.indexOf('annual plan')).toBeLessThan(summary.lastIndexOf('refund'));
    expect(confidence).toBeGreaterThan(0);
  });

  it('an empty thread says so', () => {
    expect(summarizeThread([]).summary).toMatch(/No readable text/);
  });
});

describe('reply drafts', () => {
  it('addresses the customer by first name and names the order', () => {
    const d = draftReply({ intent: 'refund', customerName: 'Ada Lovelace', entities: ['ORDER:48213'], triageConfidence: 0.8 });
    expect(d.text).toMatch(/^Hi Ada,/);
    expect(d.text).toContain('order 48213');
    expect(d.text).toMatch(/The support team$/);
    expect(d.confidence).toBeGreaterThanOrEqual(0.6);
  });

  it('escalated tickets say a person is on it; unknown intents are low confidence', () => {
    expect(draftReply({ intent: 'bug', escalate: true, triageConfidence: 0.9 }).text).toMatch(/personally looking into it/);
    expect(draftReply({ intent: 'whatever', triageConfidence: 0.9 }).confidence).toBeLessThan(0.6);
    expect(draftReply({ intent: 'question', customerName: 'bob@example.com' }).text).toMatch(/^Hello,/);
  });

  it('first names', () => {
    expect(firstName('ada lovelace')).toBe('Ada');
    expect(firstName('"Lovelace, Ada"')).toBe('Lovelace');
    expect(firstName('x@y.z')).toBeUndefined();
    expect(firstName(undefined)).toBeUndefined();
  });
});

describe('model answers', () => {
  it('parses JSON in a fence or bare, normalizes unknown values', () => {
    expect(extractJson('Sure!\n```json\n{"a":1}\n```')).toEqual({ a: 1 });
    expect(extractJson('{"a":2} trailing')).toEqual({ a: 2 });
    expect(extractJson('no json')).toBeUndefined();
    const t = parseModelTriage('{"intent":"Refund","urgency":"extreme","sentiment":"negative","entities":["ORDER:1"],"confidence":0.9,"reasons":["asks for money back"]}');
    expect(t).toMatchObject({ intent: 'refund', urgency: 'normal', sentiment: 'negative', confidence: 0.9, escalate: false });
    expect(parseModelTriage('{"intent":"spaceship"}')).toMatchObject({ intent: 'other' });
    expect(parseModelTriage('I cannot help with that')).toBeUndefined();
  });
});

describe('ids', () => {
  it('are deterministic and distinct per address, handle and thread', () => {
    expect(customerIdFor({ email: 'Ada@Example.com' })).toBe(customerIdFor({ email: 'ada@example.com' }));
    expect(customerIdFor({ email: 'ada@example.com' })).toMatch(/^cus-[0-9a-f]{16}$/);
    expect(customerIdFor({ handle: 'ada' })).not.toBe(customerIdFor({ email: 'ada' }));
    expect(customerIdFor({})).toBeUndefined();
    expect(ticketIdFor('email', '<a@b>')).toBe(ticketIdFor('email', '<a@b>'));
    expect(ticketIdFor('email', '<a@b>')).not.toBe(ticketIdFor('chat', '<a@b>'));
  });
});
