import type { WorkflowDef } from '../definition.ts';
import { inboundMessage } from './inbound-message.ts';

/** Workflows that ship with Keel. */
export const BUILTIN_DEFINITIONS: WorkflowDef[] = [inboundMessage];
