/**
 * The launch's publishing capabilities and their compensations, on a real SQLite store and the
 * real outbox (the capability test kit): each publication is idempotent (a redelivered task sends
 * nobody twice, writes nothing twice) and each has its undo (unpublish, a recall notice per
 * recipient, once each). Also: linking a reply to its product, and the tier-0 drafts' self-review.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createCapabilityTestKit, type CapabilityTestKit } from '../../../runtime/index.ts';
import { LAUNCH_ENTITY_TYPES } from '../../../agents/launch/index.ts';
import { publishPage, unpublishPage, sendEmails, recallEmails, publishPosts, unpublishPosts } from '../../../agents/launch/publishing.ts';
import { linkReply } from '../../../agents/launch/operations.ts';
import { parseLaunchMessageId } from '../../../agents/launch/mail.ts';
import { fixDraft, reviewDraft, templateDrafts, researchPoints } from '../../../agents/launch/templates.ts';
import type { ProductState } from '../../../agents/launch/product.ts';

const actor = { actor: { kind: 'human' as const, id: 'op' } };
const at = '2030-01-01T09:00:00.000Z';

describe('launch publishing and its compensations', () => {
  let kit: CapabilityTestKit;
  const outbox = () => (existsSync(join(kit.config.dataDir, 'outbox')) ? readdirSync(join(kit.config.dataDir, 'outbox')).filter((f) => f.endsWith('.eml')).map((f) => readFileSync(join(kit.config.dataDir, 'outbox', f), 'utf8')) : []);
  const asset = (slot: string, body: string, title: string, kind: string) => ({
    productId: 'kit', kind, slot, title, status: 'approved', current: 1, approvedVersion: 1, versions: [{ version: 1, title, body, by: 'agent:writer', at, tier: 0 }],
  });

  beforeEach(async () => {
    kit = await createCapabilityTestKit({ entities: LAUNCH_ENTITY_TYPES, agent: 'marketer' });
    await kit.store.append('product', 'kit', 0, [{ type: 'created', data: { name: 'Kite Kit', pitch: 'A kite you build in ten minutes.', audience: 'parents', subscribers: ['a@example.com', 'b@example.com'] } }], actor);
    await kit.store.append('content_asset', 'kit-page', 0, [{ type: 'created', data: asset('page', '# Kite Kit\n\n<script>alert(1)</script> **Get it.**', 'Kite Kit', 'landing_page') }], actor);
    await kit.store.append('content_asset', 'kit-email-1', 0, [{ type: 'created', data: asset('email-1', 'Hi, Kite Kit is out. Reply with questions.', 'Kite Kit is here', 'email') }], actor);
    await kit.store.append('content_asset', 'kit-posts', 0, [{ type: 'created', data: asset('posts', 'One\n\n---\n\nTwo', 'Kite Kit posts', 'post') }], actor);
    for (const slot of ['page', 'email-1', 'posts']) await kit.store.append('calendar_item', `kit-cal-${slot}`, 0, [{ type: 'created', data: { title: slot, startsAt: at, productId: 'kit', assetId: `kit-${slot}`, channel: 'other', status: 'scheduled' } }], actor);
  });
  afterEach(async () => kit.close());

  it('the landing page: written once as static HTML (raw HTML escaped), removed by its compensation', async () => {
    const r = await kit.run(publishPage, { productId: 'kit' }, { idempotencyKey: 'pub-1' });
    const path = join(kit.config.dataDir, 'site', 'kit', 'index.html');
    expect(r.output.path).toBe(path);
    const html = readFileSync(path, 'utf8');
    expect(html).toContain('<h1>Kite Kit</h1>');
    expect(html).not.toContain('<script>');
    expect(html).toContain('&lt;script&gt;');
    expect((await kit.store.get<ProductState>('product', 'kit'))!.state.publications).toEqual([expect.objectContaining({ what: 'page', assetId: 'kit-page', path })]);
    // redelivered: the write is read back from the log, not done again
    const again = await kit.run(publishPage, { productId: 'kit' }, { idempotencyKey: 'pub-1' });
    expect(again.effects.find((e) => e.name === 'publish')!.replayed).toBe(true);
    await kit.run(unpublishPage, r.output, { idempotencyKey: 'unpub-1' });
    expect(existsSync(path)).toBe(false);
    expect((await kit.store.get<ProductState>('product', 'kit'))!.state.publications).toEqual([]);
    expect((await kit.store.get<{ status: string }>('content_asset', 'kit-page'))!.state.status).toBe('recalled');
    expect((await kit.store.get<{ status: string }>('calendar_item', 'kit-cal-page'))!.state.status).toBe('cancelled');
  });

  it('a launch email goes to each subscriber once (a redelivery sends nobody twice); its compensation sends each a recall notice, once', async () => {
    const r = await kit.run(sendEmails, { productId: 'kit', slot: 'email-1' }, { idempotencyKey: 'send-1' });
    expect(r.output).toMatchObject({ sent: 2, recipients: ['a@example.com', 'b@example.com'] });
    expect(outbox()).toHaveLength(2);
    for (const id of r.output.messageIds) expect(parseLaunchMessageId(id)).toEqual({ productId: 'kit', slot: 'email-1' });
    const again = await kit.run(sendEmails, { productId: 'kit', slot: 'email-1' }, { idempotencyKey: 'send-1' });
    expect(again.effects.filter((e) => e.name.startsWith('send:')).every((e) => e.replayed)).toBe(true);
    expect(outbox()).toHaveLength(2);
    await kit.run(recallEmails, r.output, { idempotencyKey: 'recall-1' });
    await kit.run(recallEmails, r.output, { idempotencyKey: 'recall-1' });
    const recalls = outbox().filter((m) => /^Subject: Please disregard: Kite Kit is here$/m.test(m));
    expect(recalls.map((m) => /^To: (.+)$/m.exec(m)![1]).sort()).toEqual(['a@example.com', 'b@example.com']);
    for (const m of recalls) expect(r.output.messageIds).toContain(/^In-Reply-To: (.+)$/m.exec(m)![1]);
    expect((await kit.store.get<{ status: string }>('content_asset', 'kit-email-1'))!.state.status).toBe('recalled');
  });

  it('the posts: published under site/<product>/posts/, removed by their compensation', async () => {
    const r = await kit.run(publishPosts, { productId: 'kit' }, { idempotencyKey: 'posts-1' });
    expect(r.output.posts).toBe(2);
    const json = JSON.parse(readFileSync(join(kit.config.dataDir, 'site', 'kit', 'posts', 'posts.json'), 'utf8'));
    expect(json.posts).toEqual(['One', 'Two']);
    await kit.run(unpublishPosts, r.output, { idempotencyKey: 'posts-undo' });
    expect(existsSync(join(kit.config.dataDir, 'site', 'kit', 'posts'))).toBe(false);
  });

  it('publishing an asset the operator has not approved is refused', async () => {
    await kit.store.append('content_asset', 'kit-email-2', 0, [{ type: 'created', data: { ...asset('email-2', 'x', 'y', 'email'), status: 'review', approvedVersion: undefined } }], actor);
    await expect(kit.run(sendEmails, { productId: 'kit', slot: 'email-2' })).rejects.toMatchObject({ code: 'LAUNCH_NOT_APPROVED' });
    expect(outbox()).toHaveLength(0);
  });

  it('a reply to a launch email is linked to its product once; other replies are not', async () => {
    const ev = (ticketId: string, inReplyTo?: string) => ({ event: { entityType: 'ticket', entityId: ticketId, type: 'message_added', data: { from: 'a@example.com', messageId: `<r-${ticketId}@example.com>`, ...(inReplyTo ? { inReplyTo } : {}) } } });
    const id = '<launch.kit.email-1.0123456789abcdef@keel.local>';
    expect((await kit.run(linkReply, ev('T-1', id))).output).toEqual({ ticketId: 'T-1', productId: 'kit', linked: true });
    await kit.run(linkReply, ev('T-1', id));
    expect((await kit.run(linkReply, ev('T-2', '<other@example.com>'))).output.linked).toBe(false);
    expect((await kit.run(linkReply, ev('T-3', '<launch.nope.email-1.0123456789abcdef@keel.local>'))).output.linked).toBe(false);
    expect((await kit.store.get<ProductState>('product', 'kit'))!.state.followUps.map((f) => f.ticketId)).toEqual(['T-1']);
  });
});

describe('tier-0 drafts and their self-review', () => {
  const p: ProductState = { name: 'Kite Kit', pitch: 'A kite you build in ten minutes.', audience: 'parents', price: { amount: 24, currency: 'EUR' }, notes: 'Parents want a weekend project. Kids lose interest after 20 minutes. Glue is messy.', documents: [], subscribers: [], lifecycle: 'idea', exceptions: [], publications: [], followUps: [], tags: [] };

  it('the templates pass their own review; a draft missing the name, the price and a call to action is repaired', () => {
    const points = researchPoints(p, { sources: [], memories: [] });
    expect(points[0]).toMatch(/minutes/);
    for (const kind of ['page', 'emails', 'posts'] as const) for (const d of templateDrafts(kind, p, points)) expect(reviewDraft(d, p)).toEqual([]);
    const bad = { slot: 'page', kind: 'landing_page' as const, title: 'x', body: 'A fine product. {price}' };
    const problems = reviewDraft(bad, p);
    expect(problems).toEqual(expect.arrayContaining([expect.stringMatching(/name/), expect.stringMatching(/placeholder/), expect.stringMatching(/heading/), expect.stringMatching(/price \(€24\)/), expect.stringMatching(/call to action/)]));
    expect(reviewDraft(fixDraft(bad, p, problems), p)).toEqual([]);
    const long = { slot: 'posts', kind: 'post' as const, title: 'Kite Kit', body: `Kite Kit ${'word '.repeat(80)}\n\n---\n\nKite Kit short` };
    expect(reviewDraft(long, p)).toEqual([expect.stringMatching(/post 1 is \d+ characters/)]);
    expect(reviewDraft(fixDraft(long, p, reviewDraft(long, p)), p)).toEqual([]);
  });
});
