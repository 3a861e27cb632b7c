/**
 * The redactor (models/redact.ts): which values it finds, which it leaves alone, the placeholders
 * it puts back, and LangChain messages in and out.
 */
import { describe, expect, it } from 'vitest';
import { AIMessage, HumanMessage, SystemMessage } from '@langchain/core/messages';
import { createRedactor, ibanValid, redactMessages, redactModeOf, redactText, restoreMessage, shouldRedact } from '../../models/index.ts';
import { luhnValid, findCards } from '../../observability/index.ts';
import { ownRestorer } from '../../models/redact.ts';
import { ConfigError, loadConfig } from '../../config/index.ts';

describe('redactor: what it finds', () => {
  it('card numbers: Luhn-checked, 13-19 digits, whole or in groups of spaces or dashes, in any spacing', () => {
    expect(luhnValid('4111111111111111')).toBe(true);
    expect(luhnValid('4111111111111112')).toBe(false);
    expect(luhnValid('79927398713')).toBe(true);
    const r = createRedactor({ secrets: [] });
    const out = r.redact('Cards: 4111 1111 1111 1111, 4111-1111-1111-1111, 4111111111111111, 5500 0000 0000 0004; not a card: 4111 1111 1111 1112.');
    expect(out).toBe('Cards: [CARD_1], [CARD_1], [CARD_1], [CARD_2]; not a card: 4111 1111 1111 1112.');
    // the same card in three spellings is one placeholder; the map keeps the first spelling
    expect(r.map.get('[CARD_1]')).toBe('4111 1111 1111 1111');
    expect(r.counts()).toEqual({ card: 2 });
  });

  it('a card followed by more digit groups is still found; a 13-digit millisecond timestamp is not a card', () => {
    expect(findCards('paid with 4111 1111 1111 1111 2024 at 1733212345678').map((c) => c.digits)).toEqual(['4111111111111111']);
  });

  it('no false positives on order numbers, invoice numbers, dates, times, amounts and versions', () => {
    const text = 'Order 2024-000123 (INV-2024-0117, order 1234) of 2024-01-15 at 10:30, on 01.02.2024 10:30, 03/12/2024 14, total $1,234.56, v1.2.3, room 101, 3 items.';
    const r = createRedactor({ secrets: [] });
    expect(r.redact(text)).toBe(text);
    expect(r.map.size).toBe(0);
  });

  it('phone numbers: international, national with a trunk 0, North-American, and after a cue word', () => {
    const r = createRedactor({ secrets: [] });
    const out = r.redact('Call me at +49 176 5550123, or 0176 5550123, or (555) 123-4567, or 555.123.4567. Phone: 7654321.');
    // numbered by detector (cue words first), one placeholder per number
    expect(out).toBe('Call me at [PHONE_1], or [PHONE_4], or [PHONE_3], or [PHONE_3]. Phone: [PHONE_2].');
    expect(r.map.get('[PHONE_1]')).toBe('+49 176 5550123');
  });

  it('e-mail addresses (one placeholder per address, whatever its case), IBANs (mod-97 checked) and street addresses', () => {
    expect(ibanValid('DE89 3704 0044 0532 0130 00')).toBe(true);
    expect(ibanValid('DE89 3704 0044 0532 0130 01')).toBe(false);
    const r = createRedactor({ secrets: [] });
    const out = r.redact('Write to ada@example.com or ADA@example.com or bob@test.org. IBAN DE89 3704 0044 0532 0130 00 AND GB82WEST12345698765432. Ship to 221B Baker Street, London; Hauptstraße 5, Berlin; 12 rue de la Paix, Paris.');
    expect(out).toBe('Write to [EMAIL_1] or [EMAIL_1] or [EMAIL_2]. IBAN [IBAN_1] AND [IBAN_2]. Ship to [ADDRESS_1], London; [ADDRESS_2], Berlin; [ADDRESS_3], Paris.');
  });

  it('IBANs in lower case too (the mod-97 check upper-cases them), whole or grouped; lower-case words are not IBANs', () => {
    const r = createRedactor({ secrets: [] });
    expect(r.redact('iban de89370400440532013000 or de89 3704 0044 0532 0130 00, gb82west12345698765432.')).toBe('iban [IBAN_1] or [IBAN_1], [IBAN_2].');
    expect(r.map.get('[IBAN_1]')).toBe('de89370400440532013000');
    const words = 'ab12 cdef ghij klmn opqr stuv wxyz';
    expect(createRedactor({ secrets: [] }).redact(words)).toBe(words);
  });

  it('secrets: the given values, or this process\'s KEEL_SECRET_* values by default', () => {
    const r = createRedactor({ secrets: ['s3cr3t-pass'] });
    expect(r.redact('the SMTP password is s3cr3t-pass (s3cr3t-pass)')).toBe('the SMTP password is [SECRET_1] ([SECRET_1])');
    process.env.KEEL_SECRET_REDACT_TEST = 'env-secret-value-42';
    try {
      expect(createRedactor().redact('key env-secret-value-42')).toBe('key [SECRET_1]');
    } finally {
      delete process.env.KEEL_SECRET_REDACT_TEST;
    }
  });

  it('values of sensitive fields: as written (whole words, any case), phones in any spacing', () => {
    const r = createRedactor({ secrets: [], values: ['Ada Lovelace', '+44 20 7946 0958', 'Flat 3'] });
    const out = r.redact('ada lovelace wrote from +442079460958 about Flat 3 (not Flat 33).');
    expect(out).toBe('[VALUE_1] wrote from [PHONE_1] about [VALUE_2] (not Flat 33).');
  });
});

describe('redactor: restoring the answer', () => {
  it('puts every known placeholder back, leaves unknown ones, and never restores a secret', () => {
    const { text, map } = redactText('Card 4111 1111 1111 1111, mail ada@example.com, key s3cr3t-pass', { secrets: ['s3cr3t-pass'] });
    expect(text).toBe('Card [CARD_1], mail [EMAIL_1], key [SECRET_1]');
    expect(map.size).toBe(3);
    const r = createRedactor({ secrets: ['s3cr3t-pass'] });
    r.redact('Card 4111 1111 1111 1111, mail ada@example.com, key s3cr3t-pass');
    expect(r.restore('We charged [CARD_1] and wrote to [ EMAIL_1 ]; [PHONE_9] stays; [SECRET_1] stays.')).toBe('We charged 4111 1111 1111 1111 and wrote to ada@example.com; [PHONE_9] stays; [SECRET_1] stays.');
  });

  it('placeholders typed into the input are escaped: the model never sees them as ours, and they come back as typed', () => {
    const r = createRedactor({ secrets: [] });
    const original = 'My address is [EMAIL_1] (not really), and [ phone_2 ] [EMAIL_1]; write to ada@example.com.';
    const sent = r.redact(original);
    expect(sent).toBe('My address is [LITERAL_1] (not really), and [ phone_2 ] [LITERAL_1]; write to [EMAIL_1].');
    // the model echoing what it saw gets the customer's text back, not the address
    expect(r.restore(sent)).toBe(original);
    expect(r.restore('echo [LITERAL_1]')).toBe('echo [EMAIL_1]');
    expect(r.counts()).toEqual({ email: 1 });
  });

  it('ownRestorer: an answer about one part of a prompt gets only that part\'s values back', () => {
    const r = createRedactor({ secrets: [] });
    const a = 'Ada: ada@example.com, please echo everything';
    const b = 'Bob: bob@test.org, card 4111 1111 1111 1111, typed [EMAIL_1]';
    r.redact(`${a}\n${b}`);
    const answer = 'seen [EMAIL_1] [EMAIL_2] [CARD_1] [LITERAL_1]';
    expect(ownRestorer(r, a)(answer)).toBe('seen ada@example.com [EMAIL_2] [CARD_1] [LITERAL_1]');
    expect(ownRestorer(r, b)(answer)).toBe('seen [EMAIL_1] bob@test.org 4111 1111 1111 1111 [EMAIL_1]');
  });

  it('round trip: redact then restore gives the text back (secrets aside)', () => {
    const original = 'Hi, I am Ada (ada@example.com, +49 176 5550123). Card 5500 0000 0000 0004 was charged twice for order 2024-000123.';
    const r = createRedactor({ secrets: [] });
    const sent = r.redact(original);
    expect(sent).not.toMatch(/ada@|5550123|5500/);
    expect(sent).toContain('2024-000123');
    expect(r.restore(sent)).toBe(original);
  });
});

describe('redactor: LangChain messages', () => {
  it('redacts strings, tuples, role objects and message instances (same class), and restores the answer with its tool calls', () => {
    const r = createRedactor({ secrets: [] });
    const sys = new SystemMessage('You help ada@example.com');
    const out = redactMessages([sys, new HumanMessage({ content: [{ type: 'text', text: 'my card 4111 1111 1111 1111' }] }), ['user', 'call +49 176 5550123'], { role: 'user', content: 'again ada@example.com' }, 'plain 4111111111111111'], r) as unknown[];
    expect(out[0]).toBeInstanceOf(SystemMessage);
    expect((out[0] as SystemMessage).content).toBe('You help [EMAIL_1]');
    expect(sys.content).toBe('You help ada@example.com'); // the caller's message is untouched
    expect(((out[1] as HumanMessage).content as Array<{ text: string }>)[0]!.text).toBe('my card [CARD_1]');
    expect(out[2]).toEqual(['user', 'call [PHONE_1]']);
    expect(out[3]).toEqual({ role: 'user', content: 'again [EMAIL_1]' });
    expect(out[4]).toBe('plain [CARD_1]');
    const answer = new AIMessage({ content: 'Sure [EMAIL_1], we call [PHONE_1].', tool_calls: [{ name: 'note', args: { to: '[EMAIL_1]', n: 1 }, id: 't1' }] });
    const restored = restoreMessage(answer, r);
    expect(restored).toBeInstanceOf(AIMessage);
    expect(restored.content).toBe('Sure ada@example.com, we call +49 176 5550123.');
    expect(restored.tool_calls![0]!.args).toEqual({ to: 'ada@example.com', n: 1 });
  });

  it('history messages: tool-call arguments and additional_kwargs are redacted too (instances, role objects), the originals untouched', () => {
    const r = createRedactor({ secrets: [] });
    const call = { name: 'send_mail', args: { to: 'ada@example.com', nested: { card: ['4111 1111 1111 1111'] }, n: 1 }, id: 't1', type: 'tool_call' as const };
    const raw = { tool_calls: [{ id: 't1', type: 'function' as const, function: { name: 'send_mail', arguments: '{"to":"ada@example.com"}' } }] };
    const ai = new AIMessage({ content: '', tool_calls: [call], additional_kwargs: raw });
    const obj = { role: 'assistant', content: 'ok', tool_calls: [{ id: 't2', type: 'function', function: { name: 'pay', arguments: '{"iban":"DE89 3704 0044 0532 0130 00"}' } }], additional_kwargs: { note: 'ring +49 176 5550123' } };
    const out = redactMessages([ai, obj], r) as unknown[];
    const m = out[0] as AIMessage;
    expect(m).toBeInstanceOf(AIMessage);
    expect(m.tool_calls![0]!.args).toEqual({ to: '[EMAIL_1]', nested: { card: ['[CARD_1]'] }, n: 1 });
    expect(m.tool_calls![0]!.name).toBe('send_mail');
    expect(m.additional_kwargs).toEqual({ tool_calls: [{ id: 't1', type: 'function', function: { name: 'send_mail', arguments: '{"to":"[EMAIL_1]"}' } }] });
    expect(out[1]).toEqual({ role: 'assistant', content: 'ok', tool_calls: [{ id: 't2', type: 'function', function: { name: 'pay', arguments: '{"iban":"[IBAN_1]"}' } }], additional_kwargs: { note: 'ring [PHONE_1]' } });
    expect(JSON.stringify(out)).not.toMatch(/ada@|4111|DE89|5550123/);
    expect(ai.tool_calls![0]!.args.to).toBe('ada@example.com'); // the caller's message is untouched
    expect(obj.tool_calls[0]!.function.arguments).toContain('DE89');
  });

  it('KEEL_REDACT: cloud (default) redacts openai and anthropic only; all redacts local models too; off never; a typo fails closed', () => {
    expect(redactModeOf({})).toBe('cloud');
    expect(shouldRedact('cloud', 'openai')).toBe(true);
    expect(shouldRedact('cloud', 'anthropic')).toBe(true);
    expect(shouldRedact('cloud', 'ollama')).toBe(false);
    expect(shouldRedact('cloud', 'scripted')).toBe(false);
    expect(shouldRedact('all', 'ollama')).toBe(true);
    expect(shouldRedact('off', 'openai')).toBe(false);
    expect(redactModeOf({ KEEL_REDACT: 'OFF' })).toBe('off');
    expect(redactModeOf({ KEEL_REDACT: 'clod' })).toBe('all');
    // the engine refuses it at start
    expect(() => loadConfig({ KEEL_REDACT: 'clod' })).toThrow(ConfigError);
    expect(() => loadConfig({ KEEL_REDACT: 'all' })).not.toThrow();
  });
});
