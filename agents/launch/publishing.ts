/**
 * Publishing a launch, each step at its calendar time (the workflow's durable `notBefore`), each
 * idempotent and compensable:
 * - `launch.publish-page` writes the approved landing page to `KEEL_DATA_DIR/site/<product>/`;
 *   `launch.unpublish-page` removes it;
 * - `launch.send-emails` sends an approved launch email to every subscriber (one recorded side
 *   effect per recipient, whose key is the mail's idempotency key: a redelivered task sends nobody
 *   twice); `launch.recall-emails` sends each recipient a recall notice;
 * - `launch.publish-posts` writes the approved posts to `site/<product>/posts/`;
 *   `launch.unpublish-posts` removes them.
 */
import { z } from 'zod';
import { defineCapability, PermanentError, type TaskContext } from '../../runtime/index.ts';
import { CALENDAR_ITEM, CONTENT_ASSET, PRODUCT, TASK } from './entities.ts';
import { launchMailer, launchMessageId } from './mail.ts';
import { SLOTS, advanceLifecycle, approvedVersion, assetIdOf, calendarIdOf, change, finishTask, getAsset, getProduct, setCalendar, sha, type AssetState, type ProductState } from './product.ts';
import { removeSitePage, removeSitePosts, renderPage, renderPosts, writeSitePage, writeSitePosts } from './site.ts';
import { splitPosts } from './templates.ts';

const PUBLISHING = [PRODUCT, TASK, CONTENT_ASSET, CALENDAR_ITEM];
const LAUNCH_TIME_SLOTS = [SLOTS.page, SLOTS.email1, SLOTS.posts];

/** After a publication: the asset, its calendar item, the task; the product is launched, and in follow-up once every launch-time publication is out. */
async function published(ctx: TaskContext<unknown>, productId: string, slot: string, p: { what: 'page' | 'emails' | 'posts'; path?: string; count?: number }, taskId?: string): Promise<void> {
  const at = new Date().toISOString();
  const assetId = assetIdOf(productId, slot);
  await change<AssetState>(ctx, CONTENT_ASSET, assetId, (a) => (!a || a.state.status === 'published' ? undefined : [{ type: 'status_changed', data: { to: 'published', at } }]));
  await setCalendar(ctx, calendarIdOf(productId, slot), { status: 'published', publishedAt: at });
  await change<ProductState>(ctx, PRODUCT, productId, (cur) => (cur?.state.publications.some((x) => x.what === p.what && x.assetId === assetId) ? undefined : [{ type: 'published', data: { ...p, assetId, at } }]));
  if (taskId) await finishTask(ctx, taskId);
  if (slot === SLOTS.email2) return;
  await advanceLifecycle(ctx, productId, 'launched', `${slot} published`);
  const statuses = await Promise.all(LAUNCH_TIME_SLOTS.map(async (s) => (await ctx.state.get<AssetState>(CONTENT_ASSET, assetIdOf(productId, s)))?.state.status));
  if (statuses.every((s) => s === 'published')) await advanceLifecycle(ctx, productId, 'follow-up', 'the launch is out: following up');
}

async function unpublished(ctx: TaskContext<unknown>, productId: string, slot: string, what: 'page' | 'emails' | 'posts'): Promise<void> {
  const assetId = assetIdOf(productId, slot);
  await change<AssetState>(ctx, CONTENT_ASSET, assetId, (a) => (!a || a.state.status === 'recalled' ? undefined : [{ type: 'status_changed', data: { to: 'recalled' } }]));
  await setCalendar(ctx, calendarIdOf(productId, slot), { status: 'cancelled' });
  await change<ProductState>(ctx, PRODUCT, productId, (cur) => (!cur?.state.publications.some((x) => x.what === what && x.assetId === assetId) ? undefined : [{ type: 'unpublished', data: { what, assetId, at: new Date().toISOString() } }]));
}

async function approvedAsset(ctx: TaskContext<unknown>, productId: string, slot: string) {
  const a = await getAsset(ctx, assetIdOf(productId, slot));
  if (!a.state.approvedVersion) throw new PermanentError(`asset '${slot}' of product '${productId}' is not approved`, { code: 'LAUNCH_NOT_APPROVED' });
  return { asset: a, version: approvedVersion(a.state) };
}

// ---- the landing page --------------------------------------------------------------------------

export const PublishInput = z.object({ productId: z.string().min(1), taskId: z.string().optional() });
export const PagePublished = z.object({ productId: z.string(), path: z.string(), version: z.number().int(), sha256: z.string() });

export const publishPage = defineCapability({
  name: 'launch.publish-page',
  version: '1',
  description: 'Publishes the approved landing page as static HTML under KEEL_DATA_DIR/site/<product>/.',
  input: PublishInput,
  output: PagePublished,
  permissions: { entityTypes: PUBLISHING },
  costClass: 'none',
  async handler(ctx) {
    const { productId, taskId } = ctx.input;
    const { version } = await approvedAsset(ctx, productId, SLOTS.page);
    const html = renderPage({ title: version.title, markdown: version.body, productId, version: version.version });
    const path = await ctx.effect('publish', async () => writeSitePage(ctx.config.dataDir, productId, html));
    await published(ctx, productId, SLOTS.page, { what: 'page', path }, taskId);
    ctx.logger.info({ productId, path, version: version.version }, 'landing page published');
    return { productId, path, version: version.version, sha256: sha(html) };
  },
});

export const unpublishPage = defineCapability({
  name: 'launch.unpublish-page',
  version: '1',
  description: 'Compensation: removes the published landing page.',
  input: PagePublished.partial().extend({ productId: z.string().min(1) }),
  output: z.object({ productId: z.string(), removed: z.boolean() }),
  permissions: { entityTypes: PUBLISHING },
  costClass: 'none',
  async handler(ctx) {
    const { productId } = ctx.input;
    await ctx.effect('unpublish', async () => removeSitePage(ctx.config.dataDir, productId));
    await unpublished(ctx, productId, SLOTS.page, 'page');
    return { productId, removed: true };
  },
});

// ---- launch emails -----------------------------------------------------------------------------

export const SendEmailsInput = z.object({ productId: z.string().min(1), slot: z.enum([SLOTS.email1, SLOTS.email2]), taskId: z.string().optional() });
export const EmailsSent = z.object({ productId: z.string(), slot: z.string(), subject: z.string(), sent: z.number().int(), recipients: z.array(z.string()), messageIds: z.array(z.string()) });

export const sendEmails = defineCapability({
  name: 'launch.send-emails',
  version: '1',
  description: 'Sends an approved launch email to every subscriber of the product, once per recipient (outbox, or KEEL_SMTP_RELAY).',
  input: SendEmailsInput,
  output: EmailsSent,
  permissions: { entityTypes: PUBLISHING, secrets: ['SMTP_PASSWORD'] },
  costClass: 'none',
  timeoutMs: 600_000,
  ackWaitMs: 60_000,
  async handler(ctx) {
    const { productId, slot, taskId } = ctx.input;
    const p = await getProduct(ctx, productId);
    const { version } = await approvedAsset(ctx, productId, slot);
    const { sender, domain } = launchMailer(ctx.config, ctx.secrets.SMTP_PASSWORD);
    const recipients = [...new Set(p.state.subscribers.map((s) => s.toLowerCase()))].sort();
    const messageIds: string[] = [];
    let fresh = 0;
    for (const to of recipients) {
      ctx.working();
      const messageId = launchMessageId(productId, slot, to, domain);
      const sent = await ctx.effect(`send:${to}`, async (key) => {
        fresh++;
        return ctx.connector('smtp', () => sender.send({ to, subject: version.title, text: version.body, messageId, idempotencyKey: key, headers: { 'X-Keel-Product': productId } }));
      });
      messageIds.push(sent.messageId);
    }
    // one record per delivery of the task: how many mails it sent (a redelivery counts only the rest), never the addresses
    if (fresh) await ctx.state.audit?.('email.sent', `product/${productId}`, { slot, kind: 'launch', recipients: fresh, total: recipients.length }).catch((err: unknown) => ctx.logger.error({ err, productId }, 'launch emails could not be audited'));
    await published(ctx, productId, slot, { what: 'emails', count: recipients.length }, taskId);
    ctx.logger.info({ productId, slot, sent: recipients.length }, 'launch email sent');
    return { productId, slot, subject: version.title, sent: recipients.length, recipients, messageIds };
  },
});

export const recallEmails = defineCapability({
  name: 'launch.recall-emails',
  version: '1',
  description: 'Compensation: sends every recipient of a launch email a recall notice, once each.',
  input: EmailsSent.partial().extend({ productId: z.string().min(1), slot: z.string().min(1) }),
  output: z.object({ productId: z.string(), slot: z.string(), recalled: z.number().int() }),
  permissions: { entityTypes: PUBLISHING, secrets: ['SMTP_PASSWORD'] },
  costClass: 'none',
  timeoutMs: 600_000,
  async handler(ctx) {
    const { productId, slot, recipients = [], messageIds = [], subject = 'our launch email' } = ctx.input;
    const p = await getProduct(ctx, productId);
    const { sender, domain } = launchMailer(ctx.config, ctx.secrets.SMTP_PASSWORD);
    let fresh = 0;
    for (const [i, to] of recipients.entries()) {
      ctx.working();
      const original = messageIds[i];
      await ctx.effect(`recall:${to}`, (key) => {
        fresh++;
        return ctx.connector('smtp', () =>
          sender.send({
            to,
            subject: `Please disregard: ${subject}`,
            text: `Hi,\n\nPlease disregard our earlier email "${subject}" about ${p.state.name}: it was sent in error, and the launch is on hold.\n\nSorry for the noise.\n`,
            messageId: launchMessageId(productId, slot, to, domain, '-recall'),
            ...(original ? { inReplyTo: original, references: [original] } : {}),
            idempotencyKey: key,
            headers: { 'X-Keel-Product': productId },
          }),
        );
      });
    }
    if (fresh) await ctx.state.audit?.('email.sent', `product/${productId}`, { slot, kind: 'recall', recipients: fresh, total: recipients.length }).catch((err: unknown) => ctx.logger.error({ err, productId }, 'recall emails could not be audited'));
    await unpublished(ctx, productId, slot, 'emails');
    return { productId, slot, recalled: recipients.length };
  },
});

// ---- posts -------------------------------------------------------------------------------------

export const PostsPublished = z.object({ productId: z.string(), path: z.string(), posts: z.number().int(), version: z.number().int() });

export const publishPosts = defineCapability({
  name: 'launch.publish-posts',
  version: '1',
  description: 'Publishes the approved launch posts under KEEL_DATA_DIR/site/<product>/posts/ (index.html, posts.json).',
  input: PublishInput,
  output: PostsPublished,
  permissions: { entityTypes: PUBLISHING },
  costClass: 'none',
  async handler(ctx) {
    const { productId, taskId } = ctx.input;
    const { version } = await approvedAsset(ctx, productId, SLOTS.posts);
    const posts = splitPosts(version.body);
    const html = renderPosts({ title: version.title, posts, productId, version: version.version });
    const path = await ctx.effect('publish', async () => writeSitePosts(ctx.config.dataDir, productId, html, posts));
    await published(ctx, productId, SLOTS.posts, { what: 'posts', path, count: posts.length }, taskId);
    return { productId, path, posts: posts.length, version: version.version };
  },
});

export const unpublishPosts = defineCapability({
  name: 'launch.unpublish-posts',
  version: '1',
  description: 'Compensation: removes the published launch posts.',
  input: PostsPublished.partial().extend({ productId: z.string().min(1) }),
  output: z.object({ productId: z.string(), removed: z.boolean() }),
  permissions: { entityTypes: PUBLISHING },
  costClass: 'none',
  async handler(ctx) {
    await ctx.effect('unpublish', async () => removeSitePosts(ctx.config.dataDir, ctx.input.productId));
    await unpublished(ctx, ctx.input.productId, SLOTS.posts, 'posts');
    return { productId: ctx.input.productId, removed: true };
  },
});
