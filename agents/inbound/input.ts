/**
 * The `inbound-message` workflow's input schema, in its own module: the workflow loads it only
 * when a run is started (it pulls in the channels' message schema).
 */
import { z } from 'zod';
import { InboundMessageSchema } from '../../channels/index.ts';

/** What an `inbound-message` run takes: one inbound message (channels' `InboundMessage`). */
export const InboundRunInput = z.object({ message: InboundMessageSchema });
export type InboundRunInput = z.infer<typeof InboundRunInput>;
