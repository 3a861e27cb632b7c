/**
 * Tier 0 in the customer's language: realistic German, French and Spanish mails are triaged by
 * their own rules and answered in their language; another language is said to be beyond tier 0.
 */
import { describe, expect, it } from 'vitest';
import { cleanText, detectLanguage, draftReply, triageText, type Triage } from '../../../agents/inbound/heuristics.ts';

const triage = (text: string, subject?: string) => triageText(cleanText(text), { subject });
const draft = (t: Triage, customerName = 'Anna Schmidt') =>
  draftReply({ intent: t.intent, customerName, escalate: t.escalate, urgency: t.urgency, entities: t.entities, triageConfidence: t.confidence, language: t.language });

describe('language detection', () => {
  it('tells English, German, French and Spanish apart, and names other languages', () => {
    expect(detectLanguage('Hello, I was charged twice for order 1234. Please refund the second charge.').language).toBe('en');
    expect(detectLanguage('Hallo, ich habe meine Bestellung noch nicht erhalten. Können Sie bitte nachsehen, wo sie ist?').language).toBe('de');
    expect(detectLanguage("Bonjour, je n'ai toujours pas reçu ma commande. Pouvez-vous vérifier où elle est ?").language).toBe('fr');
    expect(detectLanguage('Hola, todavía no he recibido mi pedido. ¿Pueden comprobar dónde está?').language).toBe('es');
    expect(detectLanguage('Buongiorno, non ho ancora ricevuto il mio ordine. Potete verificare dove si trova? Grazie').language).toBe('it');
    expect(detectLanguage('Здравствуйте, я до сих пор не получил свой заказ.')).toMatchObject({ language: 'ru', supported: false });
    // short or mixed text stays English
    expect(detectLanguage('Danke!').language).toBe('en');
    expect(detectLanguage('Thanks, the invoice (Rechnung) arrived.').language).toBe('en');
  });
});

describe('German', () => {
  it('a refund request is triaged refund and answered in German with the order number', () => {
    const t = triage(
      `Sehr geehrte Damen und Herren,

ich habe am 3. März die Bestellung 48213 aufgegeben, aber die Jacke passt leider nicht. Ich habe sie gestern zurückgeschickt und bitte um Rückerstattung des Kaufpreises von 89,95 €.

Mit freundlichen Grüßen
Anna Schmidt`,
      'Rückerstattung für Bestellung 48213',
    );
    expect(t).toMatchObject({ language: 'de', intent: 'refund', escalate: false, tier: 0 });
    expect(t.confidence).toBeGreaterThanOrEqual(0.6);
    expect(t.entities).toEqual(expect.arrayContaining(['ORDER:48213', 'MONEY:89,95 €']));
    expect(t.reasons[0]).toMatch(/^language de \(German/);
    const d = draft(t);
    expect(d.language).toBe('de');
    expect(d.text).toMatch(/^Hallo Anna,\n\nvielen Dank für Ihre Nachricht zur Rückerstattung \(Bestellung 48213\)/);
    expect(d.text).toMatch(/Mit freundlichen Grüßen\nIhr Support-Team$/);
    expect(d.confidence).toBeGreaterThanOrEqual(0.6);
  });

  it('an angry outage mail with a legal threat escalates, and the reply says a person is on it', () => {
    const t = triage(
      `Hallo,

unser Shop ist seit heute Morgen nicht erreichbar und wir verlieren jede Stunde Umsatz. Das ist eine absolute Frechheit und völlig inakzeptabel! Wenn das nicht SOFORT behoben wird, schalte ich meinen Anwalt ein.

Thomas Becker`,
      'Shop seit Stunden down',
    );
    expect(t).toMatchObject({ language: 'de', intent: 'bug', urgency: 'high', sentiment: 'negative', escalate: true });
    expect(t.reasons.join(' ')).toMatch(/rechtliche Drohung/);
    expect(draft(t, 'Thomas Becker').text).toMatch(/kümmert sich persönlich und sofort darum/);
  });

  it('a cancellation in German', () => {
    const t = triage('Guten Tag,\n\nhiermit kündige ich mein Abo zum Monatsende. Bitte bestätigen Sie mir die Kündigung schriftlich.\n\nViele Grüße\nPeter Wagner');
    expect(t).toMatchObject({ language: 'de', intent: 'cancellation' });
    expect(draft(t, 'Peter Wagner').text).toMatch(/Ich habe Ihre Kündigung notiert/);
  });
});

describe('French', () => {
  it('a login bug is triaged bug and answered in French', () => {
    const t = triage(
      `Bonjour,

depuis la dernière mise à jour, l'application ne fonctionne plus : impossible de me connecter, j'ai un message d'erreur à chaque fois que j'essaie. J'ai déjà réinstallé l'application, sans succès.

Cordialement,
Julien Martin`,
      'Impossible de me connecter',
    );
    expect(t).toMatchObject({ language: 'fr', intent: 'bug', escalate: false });
    expect(t.confidence).toBeGreaterThanOrEqual(0.6);
    const d = draft(t, 'Julien Martin');
    expect(d.language).toBe('fr');
    expect(d.text).toMatch(/^Bonjour Julien,\n\nMerci de nous avoir signalé ce problème/);
    expect(d.text).toMatch(/Cordialement,\nL'équipe support$/);
  });

  it('a double charge on an invoice is billing, with the invoice named in the reply', () => {
    const t = triage("Bonjour,\n\nj'ai été prélevé deux fois pour la facture F-2024-0042 (2 x 29,00 €). Merci de corriger.\n\nClaire Dubois");
    expect(t).toMatchObject({ language: 'fr', intent: 'billing' });
    expect(t.entities).toContain('INVOICE:F-2024-0042');
    expect(draft(t, 'Claire Dubois').text).toMatch(/votre facturation \(facture F-2024-0042\)/);
  });

  it('praise is positive and low urgency', () => {
    const t = triage('Bonjour, je voulais simplement vous dire que votre service est génial. Merci beaucoup pour votre aide rapide !');
    expect(t).toMatchObject({ language: 'fr', intent: 'praise', sentiment: 'positive', urgency: 'low', escalate: false });
    expect(draft(t).text).toMatch(/Merci beaucoup pour vos gentils mots/);
  });
});

describe('Spanish', () => {
  it('a cancellation is triaged cancellation and answered in Spanish', () => {
    const t = triage(
      `Hola,

quiero cancelar mi suscripción y dar de baja mi cuenta a final de mes. ¿Me pueden confirmar por correo la fecha en que termina el acceso?

Gracias,
María García`,
      'Cancelar suscripción',
    );
    expect(t).toMatchObject({ language: 'es', intent: 'cancellation', escalate: false });
    expect(t.confidence).toBeGreaterThanOrEqual(0.6);
    const d = draft(t, 'María García');
    expect(d.language).toBe('es');
    expect(d.text).toMatch(/^Hola, María:\n\nLamentamos que quiera irse\. He registrado su solicitud de cancelación/);
    expect(d.text).toMatch(/Saludos cordiales,\nEl equipo de soporte$/);
  });

  it('a refund with an angry tone is negative; a refund request names the order', () => {
    const t = triage('Buenos días,\n\nel pedido 77120 llegó roto y quiero el reembolso completo. Es una vergüenza, estoy harta de esperar!!!\n\nLucía Fernández');
    expect(t).toMatchObject({ language: 'es', intent: 'refund', sentiment: 'negative', escalate: true });
    expect(t.entities).toContain('ORDER:77120');
    const d = draft(t, 'Lucía Fernández');
    expect(d.text).toMatch(/Gracias por escribirnos sobre el reembolso \(pedido 77120\)/);
    expect(d.text).toMatch(/se está ocupando de él personalmente/);
  });
});

describe('a language tier 0 does not read', () => {
  it('says so: other at low confidence (a model looks when configured), reply in English with a note', () => {
    const t = triage('Buongiorno,\n\nvorrei il rimborso per l\'ordine 55231, il prodotto è arrivato rotto. Grazie per la vostra attenzione.\n\nCordiali saluti,\nLuca Rossi');
    expect(t).toMatchObject({ language: 'it', intent: 'other', escalate: false });
    expect(t.confidence).toBeLessThan(0.6);
    expect(t.reasons[0]).toMatch(/language it \(Italian.*tier 0 reads only en, de, fr, es/);
    const d = draft(t, 'Luca Rossi');
    expect(d).toMatchObject({ language: 'en', note: expect.stringMatching(/no tier-0 template in Italian/) });
    expect(d.text).toMatch(/^Hi Luca,/);
    expect(d.confidence).toBeLessThan(0.3);
  });

  it('English mail keeps its English triage and draft (language en)', () => {
    const t = triage('Hello, I was charged twice for order 1234. Please refund the second charge.', 'Refund for order 1234');
    expect(t).toMatchObject({ language: 'en', intent: 'refund' });
    const d = draft(t, 'Ada Lovelace');
    expect(d).toMatchObject({ language: 'en' });
    expect(d.text).toMatch(/^Hi Ada,\n\nThank you for reaching out about a refund \(order 1234\)/);
    expect(d.text).toMatch(/Best regards,\nThe support team$/);
    // a configured signature is kept in every language
    expect(draftReply({ intent: 'refund', language: 'de', signature: 'Ada, Acme GmbH' }).text).toMatch(/Ada, Acme GmbH$/);
  });
});
