/**
 * The launch feature's entity types: products, their tasks, content assets and calendar items.
 * Declared here, with the feature that owns them (the launch scenario builds on them).
 */
import { z } from 'zod';
import { defineEntityType, type EntityTypeDef } from '../../shared-state/index.ts';

const tags = z.array(z.string().min(1).max(64)).max(100).default([]);
const isoTime = z.iso.datetime({ offset: true });
const entityRef = z.strictObject({ type: z.string().min(1), id: z.string().min(1) });
const priority = z.enum(['low', 'normal', 'high', 'urgent']).default('normal');

export const productType = defineEntityType({
  name: 'product',
  schemaVersion: 1,
  schema: z.strictObject({
    name: z.string().min(1).max(200),
    description: z.string().max(20_000).optional(),
    lifecycle: z.enum(['idea', 'research', 'building', 'launched', 'retired']).default('idea'),
    price: z.strictObject({ amount: z.number().nonnegative(), currency: z.string().length(3) }).optional(),
    owner: z.string().optional(),
    tags,
  }),
  searchFields: ['name', 'description', 'tags'],
});

export const taskType = defineEntityType({
  name: 'task',
  schemaVersion: 1,
  schema: z.strictObject({
    title: z.string().min(1).max(500),
    description: z.string().max(20_000).optional(),
    status: z.enum(['todo', 'in_progress', 'blocked', 'done', 'cancelled']).default('todo'),
    priority,
    assignee: z.string().optional(),
    dueAt: isoTime.optional(),
    related: entityRef.optional(),
    tags,
  }),
  searchFields: ['title', 'description', 'assignee', 'tags'],
});

export const contentAssetType = defineEntityType({
  name: 'content_asset',
  schemaVersion: 1,
  schema: z.strictObject({
    title: z.string().min(1).max(500),
    kind: z.enum(['post', 'email', 'page', 'image', 'video', 'doc', 'other']),
    status: z.enum(['draft', 'review', 'approved', 'published', 'archived']).default('draft'),
    body: z.string().max(500_000).optional(),
    url: z.url().optional(),
    productId: z.string().optional(),
    tags,
  }),
  searchFields: ['title', 'body', 'tags'],
});

export const calendarItemType = defineEntityType({
  name: 'calendar_item',
  schemaVersion: 1,
  schema: z.strictObject({
    title: z.string().min(1).max(500),
    startsAt: isoTime,
    endsAt: isoTime.optional(),
    location: z.string().max(500).optional(),
    attendees: z.array(z.string()).default([]),
    related: entityRef.optional(),
  }),
  searchFields: ['title', 'location', 'attendees'],
});


/** Every entity type the launch feature owns. */
export const LAUNCH_ENTITY_TYPES: readonly EntityTypeDef[] = [productType, taskType, contentAssetType, calendarItemType];
