import { afterAll, beforeAll } from 'vitest';
import { QdrantClient } from '@qdrant/js-client-rest';
import { openMemory } from '../../memory/index.ts';
import { startQdrant, uniqueName, reportSkip, type ServerHandle } from '../../testkit/index.ts';
import { memoryStoreContract } from './contract.ts';

// A real Qdrant wherever QDRANT_URL is set or a Docker engine answers; skipped (with the reason) otherwise.
let server: ServerHandle | undefined;
let reason = '';
const prefixes: string[] = [];
beforeAll(async () => {
  const q = await startQdrant();
  if (q.ok) server = q.server;
  else {
    reason = q.reason;
    reportSkip('qdrant memory contract', reason);
  }
});
afterAll(async () => {
  if (server) {
    const c = new QdrantClient({ url: server.url, checkCompatibility: false });
    const { collections } = await c.getCollections();
    for (const col of collections) if (prefixes.some((p) => col.name.startsWith(`${p}_memory`))) await c.deleteCollection(col.name);
  }
  await server?.stop();
});

memoryStoreContract({
  name: 'qdrant',
  async open(a) {
    if (!server) return { skip: reason };
    const location = a.location ?? uniqueName('kt');
    if (!a.location) prefixes.push(location);
    const store = await openMemory(server.url, { ...a, prefix: location });
    return { store, location };
  },
  async raw(location) {
    const c = new QdrantClient({ url: server!.url, checkCompatibility: false });
    const coll = `${location}_memory`;
    const count = async (has?: string) => (await c.count(coll, { exact: true, ...(has ? { filter: { must: [{ has_vector: has }] } } : {}) })).count;
    return { rows: await count(), vectors: await count('dense'), lexical: await count('lexical') };
  },
});
