import { z } from 'zod';
import { defineWorkflow } from '../../workflows/index.ts';

/**
 * The `product-launch` workflow: kick-off → research → drafts (page ∥ email sequence ∥ posts) and
 * the channel plan → the operator's review, one approval per asset (an edit becomes a new
 * version) → schedule → at the calendar times (durable `notBefore` timers): the landing page, the
 * announcement email and the posts → the follow-up email → done. Publishing steps compensate (an
 * unpublish, a recall notice) when a later step fails for good; a failed run blocks the product
 * with the reason (`launch.block`), and `keel run retry RUN --from STEP` resumes it.
 *
 * `launch-reply`: a ticket message answering a launch email (its In-Reply-To is a launch
 * Message-ID) is linked to the product.
 */
export const LAUNCH_WORKFLOW = 'product-launch';
export const REPLY_WORKFLOW = 'launch-reply';

export const LaunchInput = z.strictObject({
  productId: z.string().min(1),
  /** when the launch goes out (ISO 8601 with a zone) */
  at: z.iso.datetime({ offset: true }),
  /** how long after the launch the follow-up email goes out */
  followUpMs: z.number().int().min(0),
  budgetUsd: z.number().positive().optional(),
});
export type LaunchInput = z.infer<typeof LaunchInput>;

const product = '$.input.productId';
const task = (step: string) => `$.steps.kickoff.output.tasks.${step}`;
const WRITE_RETRY = { maxAttempts: 3, backoffMs: 2_000, factor: 2 };

const review = (slot: string, write: string) => ({
  after: [write, 'plan'],
  approval: {
    action: 'content.publish',
    // KEEL_POLICY_LAUNCH_CONTENT = approve (default) | audit | auto
    policy: { $literal: 'launch.content' },
    subject: { $concat: ['content_asset/', product, '-', slot] },
    payload: {
      productId: product,
      slot,
      assetId: { $concat: [product, '-', slot] },
      // what the operator reads (and may edit): the draft's text
      text: { $coalesce: [`$.steps.${write}.output.assets.${slot === 'email-2' ? 1 : 0}.body`, { $literal: '' }] },
      title: `$.steps.${write}.output.assets.${slot === 'email-2' ? 1 : 0}.title`,
      version: `$.steps.${write}.output.assets.${slot === 'email-2' ? 1 : 0}.version`,
    },
    deadlineMs: 14 * 86_400_000,
    onTimeout: 'reject' as const,
  },
});
const apply = (slot: string, reviewStep: string) => ({
  capability: 'launch.apply-review',
  after: [reviewStep],
  input: {
    productId: product,
    slot,
    decision: `$.steps.${reviewStep}.output.decision`,
    text: `$.steps.${reviewStep}.output.text`,
    by: `$.steps.${reviewStep}.output.by`,
    reason: `$.steps.${reviewStep}.output.reason`,
    taskId: task(reviewStep),
  },
});

export const productLaunch = defineWorkflow({
  name: LAUNCH_WORKFLOW,
  version: 1,
  description: 'research → drafts ∥ plan → review per asset → schedule → publish at the calendar times → follow-up → done',
  inputSchema: LaunchInput,
  onFailure: { escalate: 'launch.block', input: { productId: product, runId: '$.run.id', reason: { $coalesce: ['$.run.error', { $literal: 'the launch run failed' }] } } },
  steps: {
    kickoff: { capability: 'launch.kickoff', input: { productId: product, runId: '$.run.id', at: '$.input.at', followUpMs: '$.input.followUpMs', budgetUsd: '$.input.budgetUsd' } },
    research: { capability: 'launch.research', after: ['kickoff'], input: { productId: product, taskId: task('research') }, retry: WRITE_RETRY, timeoutMs: 600_000 },
    'write-page': { capability: 'launch.write', after: ['research'], input: { productId: product, kind: 'page', taskId: task('write-page') }, retry: WRITE_RETRY, timeoutMs: 600_000 },
    'write-emails': { capability: 'launch.write', after: ['research'], input: { productId: product, kind: 'emails', taskId: task('write-emails') }, retry: WRITE_RETRY, timeoutMs: 600_000 },
    'write-posts': { capability: 'launch.write', after: ['research'], input: { productId: product, kind: 'posts', taskId: task('write-posts') }, retry: WRITE_RETRY, timeoutMs: 600_000 },
    plan: { capability: 'launch.plan', after: ['research'], input: { productId: product, at: '$.steps.kickoff.output.at', followUpAt: '$.steps.kickoff.output.followUpAt', taskId: task('plan') }, retry: WRITE_RETRY, timeoutMs: 600_000 },
    'review-page': review('page', 'write-page'),
    'review-email-1': review('email-1', 'write-emails'),
    'review-email-2': review('email-2', 'write-emails'),
    'review-posts': review('posts', 'write-posts'),
    'apply-page': apply('page', 'review-page'),
    'apply-email-1': apply('email-1', 'review-email-1'),
    'apply-email-2': apply('email-2', 'review-email-2'),
    'apply-posts': apply('posts', 'review-posts'),
    schedule: { capability: 'launch.schedule', after: ['apply-page', 'apply-email-1', 'apply-email-2', 'apply-posts'], input: { productId: product } },
    'publish-page': {
      capability: 'launch.publish-page',
      after: ['schedule'],
      notBefore: '$.steps.schedule.output.pageAt',
      input: { productId: product, taskId: task('publish-page') },
      retry: WRITE_RETRY,
      compensate: { capability: 'launch.unpublish-page' },
    },
    'send-announcement': {
      capability: 'launch.send-emails',
      after: ['schedule'],
      notBefore: '$.steps.schedule.output.announceAt',
      input: { productId: product, slot: 'email-1', taskId: task('send-announcement') },
      retry: WRITE_RETRY,
      timeoutMs: 900_000,
      compensate: { capability: 'launch.recall-emails' },
    },
    'publish-posts': {
      capability: 'launch.publish-posts',
      after: ['schedule'],
      notBefore: '$.steps.schedule.output.postsAt',
      input: { productId: product, taskId: task('publish-posts') },
      retry: WRITE_RETRY,
      compensate: { capability: 'launch.unpublish-posts' },
    },
    'send-follow-up': {
      capability: 'launch.send-emails',
      after: ['publish-page', 'send-announcement', 'publish-posts'],
      notBefore: '$.steps.schedule.output.followUpAt',
      input: { productId: product, slot: 'email-2', taskId: task('send-follow-up') },
      retry: WRITE_RETRY,
      timeoutMs: 900_000,
    },
    finish: { capability: 'launch.finish', after: ['send-follow-up'], input: { productId: product } },
  },
});

export const launchReply = defineWorkflow({
  name: REPLY_WORKFLOW,
  version: 1,
  description: 'a ticket message answering a launch email → linked to the product',
  trigger: { event: 'ticket.message_added', when: { path: '$.input.event.data.inReplyTo', matches: '^<launch\\.' } },
  steps: {
    link: { capability: 'launch.link-reply', input: { event: '$.input.event' }, retry: { maxAttempts: 3, backoffMs: 1_000, factor: 2 } },
  },
});
