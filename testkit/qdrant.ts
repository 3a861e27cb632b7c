import { dockerAvailable, type Availability, type ServerHandle } from './common.ts';

/**
 * Qdrant: `QDRANT_URL` first, then a container when a Docker engine answers. There is no local
 * binary to fall back on here (no Qdrant build is reachable), so tests that need it skip and say so.
 */
export async function startQdrant(): Promise<Availability<ServerHandle>> {
  if (process.env.QDRANT_URL) return { ok: true, server: { url: process.env.QDRANT_URL, source: 'env', stop: async () => undefined } };
  if (await dockerAvailable()) {
    const { GenericContainer, Wait } = await import('testcontainers');
    const c = await new GenericContainer('qdrant/qdrant:v1.15.5').withExposedPorts(6333).withWaitStrategy(Wait.forHttp('/readyz', 6333)).start();
    return { ok: true, server: { url: `http://${c.getHost()}:${c.getMappedPort(6333)}`, source: 'container', stop: async () => void (await c.stop()) } };
  }
  return { ok: false, reason: 'no Qdrant: QDRANT_URL is unset and no Docker engine answers (no local Qdrant binary can be built here)' };
}
