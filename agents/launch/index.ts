/**
 * The launch feature: launching a niche product. The operator defines the product, attaches a
 * lifecycle by starting its launch, and three LangGraph agents, each its own process, do the
 * work: the researcher, the writer and the marketer. The `product-launch` workflow tracks who
 * owns what and when it is due, waits for the operator's approval of every asset, publishes at
 * the calendar times, and blocks the product with the reason on any exception. Built only from
 * the public surfaces of the floors below (runtime, workflows, shared state, channels).
 *
 * | capability | agent | what |
 * | --- | --- | --- |
 * | `launch.research` | researcher | notes, documents, memory, web search → research (graph) |
 * | `launch.write` | writer | page / email sequence / posts, self-reviewed → asset versions (graph) |
 * | `launch.plan` | marketer | channel plan and calendar (graph) |
 * | `launch.kickoff`, `launch.apply-review`, `launch.schedule`, `launch.finish` | marketer | the launch's bookkeeping |
 * | `launch.publish-page`, `launch.send-emails`, `launch.publish-posts` (+ `unpublish-page`, `recall-emails`, `unpublish-posts`) | marketer | publishing, compensable |
 * | `launch.block`, `launch.check-overdue`, `launch.link-reply` | marketer | exceptions and follow-ups |
 *
 * See docs/launch.md.
 */
import { defineFeature } from '../../runtime/index.ts';
import { LAUNCH_ENTITY_TYPES } from './entities.ts';
import { launchReply, productLaunch } from './workflow.ts';

const agent = (file: string, description: string) => ({ module: new URL(file, import.meta.url).href, default: true, description });

export const launch = defineFeature({
  name: 'launch',
  description: 'Launching a niche product: research → drafts → operator review → schedule → publish at the calendar time → follow-ups.',
  entities: LAUNCH_ENTITY_TYPES,
  workflows: [productLaunch, launchReply],
  agents: {
    researcher: agent('./researcher.ts', 'launch.research: notes, documents, memory and web search, summarized (LangGraph)'),
    writer: agent('./writer.ts', 'launch.write: landing page, email sequence and posts, self-reviewed (LangGraph)'),
    marketer: agent('./marketer.ts', 'launch.plan (LangGraph), kick-off, review, schedule, publishing, exceptions, follow-ups'),
  },
});
export default launch;

export { productType, taskType, contentAssetType, calendarItemType, LAUNCH_ENTITY_TYPES, PRODUCT, TASK, CONTENT_ASSET, CALENDAR_ITEM, LIFECYCLE, EXCEPTION_KINDS } from './entities.ts';
export type { Lifecycle, ProductException, AssetVersion } from './entities.ts';
export { productLaunch, launchReply, LAUNCH_WORKFLOW, REPLY_WORKFLOW, LaunchInput } from './workflow.ts';
export { LAUNCH_TASKS } from './operations.ts';
export { assetIdOf, calendarIdOf, SLOTS } from './product.ts';
export type { ProductState, AssetState, TaskState, CalendarState } from './product.ts';
export { siteDirOf } from './site.ts';
