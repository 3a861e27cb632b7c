/**
 * Finding a customer the way an operator names one: by id (`cus-…`), by email address, or by
 * chat handle. `keel tickets|runs|cost --customer` go through {@link resolveCustomer}.
 *
 * ```ts
 * const c = await resolveCustomer(store, 'alice@example.com');
 * // { id: 'cus-3f…', by: 'email', found: true, name: 'Alice' }
 * ```
 */
import type { StateStore } from '../../shared-state/index.ts';
import { CUSTOMER, customerIdFor, type CustomerState } from './ticket.ts';

export interface ResolvedCustomer {
  /** the customer id to filter on (`cus-…`); the text itself when nothing matched */
  id: string;
  /** how the text was read */
  by: 'id' | 'email' | 'handle';
  /** whether a customer record matched (false: `id` is the text, or the id an address would have) */
  found: boolean;
  name?: string;
  email?: string;
}

type Reader = Pick<StateStore, 'get' | 'query'>;

async function byId(store: Reader, id: string): Promise<ResolvedCustomer | undefined> {
  const e = await store.get<CustomerState>(CUSTOMER, id).catch(() => null);
  if (!e || e.deleted) return undefined;
  return { id, by: 'id', found: true, name: e.state.name, ...(e.state.email ? { email: e.state.email } : {}) };
}

/**
 * Reads `text` as a customer id, an email address or a chat handle (`bob42` or `@bob42`):
 *
 * 1. a customer with that id;
 * 2. an address: the id intake derives from it, else a customer whose `email` is it (a chat
 *    customer who later wrote by email);
 * 3. a handle: the id intake derives from it, else a customer tagged `handle:<handle>`;
 * 4. otherwise `{ id: text, found: false }`, so ids that only the cost ledger knows still filter.
 */
export async function resolveCustomer(store: Reader, text: string): Promise<ResolvedCustomer> {
  const t = text.trim();
  if (!t) return { id: t, by: 'id', found: false };
  if (/^[A-Za-z0-9_-]{1,128}$/.test(t)) {
    const hit = await byId(store, t);
    if (hit) return hit;
  }
  if (/^[^\s@]+@[^\s@]+$/.test(t)) {
    const email = t.toLowerCase();
    const derived = customerIdFor({ email })!;
    const hit = await byId(store, derived);
    if (hit) return { ...hit, by: 'email' };
    const page = await store.query<CustomerState>(CUSTOMER, { filter: { email }, limit: 1 });
    const e = page.items[0];
    if (e) return { id: e.entityId, by: 'email', found: true, name: e.state.name, email };
    return { id: derived, by: 'email', found: false, email };
  }
  const handle = t.replace(/^@/, '');
  if (handle && !/\s/.test(handle)) {
    const derived = customerIdFor({ handle })!;
    const hit = await byId(store, derived);
    if (hit) return { ...hit, by: 'handle' };
    for (const tag of new Set([`handle:${handle}`.slice(0, 64), `handle:${handle.toLowerCase()}`.slice(0, 64)])) {
      const page = await store.query<CustomerState>(CUSTOMER, { filter: { tags: { $contains: tag } }, limit: 1 });
      const e = page.items[0];
      if (e) return { id: e.entityId, by: 'handle', found: true, name: e.state.name, ...(e.state.email ? { email: e.state.email } : {}) };
    }
  }
  return { id: t, by: 'id', found: false };
}
