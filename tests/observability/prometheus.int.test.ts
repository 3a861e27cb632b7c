import { describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../../config/index.ts';
import { freePort, startEngineProcess, tempDir, waitFor } from '../helpers/index.ts';

const prometheus = spawnSync('prometheus', ['--version']).status === 0;

describe('Prometheus and the Grafana dashboard', () => {
  it('scrapes /metrics and answers every PromQL expression the dashboard uses', async (ctx) => {
    if (!prometheus) return ctx.skip('prometheus (Debian package) is not installed');
    const e = await startEngineProcess();
    const dir = tempDir('keel-prom-');
    const port = await freePort();
    writeFileSync(join(dir.path, 'prometheus.yml'), `global: { scrape_interval: 1s }\nscrape_configs:\n  - job_name: keel\n    static_configs: [{ targets: ['${new URL(e.httpUrl).host}'] }]\n`);
    const p = spawn('prometheus', [`--config.file=${join(dir.path, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir.path, 'data')}`, `--web.listen-address=127.0.0.1:${port}`], { stdio: 'ignore' });
    try {
      const q = async (expr: string) => (await (await fetch(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(expr)}`)).json()) as { status: string; error?: string; data?: { result: Array<{ value: [number, string]; metric: Record<string, string> }> } };
      await waitFor(async () => ((await q('keel_smtp_messages_total').catch(() => undefined))?.data?.result.length ?? 0) > 0, { timeoutMs: 30_000, intervalMs: 500, what: 'a scrape of /metrics' });
      const r = await q('keel_smtp_messages_total{outcome="accepted"}');
      expect(r.data!.result[0]!.value[1]).toBe('0');
      const dash = JSON.parse(readFileSync(join(REPO_ROOT, 'deploy', 'grafana', 'dashboards', 'keel-overview.json'), 'utf8')) as { panels: Array<{ title: string; datasource: { type: string }; targets: Array<{ expr?: string }> }> };
      const exprs = dash.panels.filter((x) => x.datasource.type === 'prometheus').flatMap((x) => x.targets.map((t) => t.expr!));
      expect(exprs.length).toBeGreaterThan(0);
      for (const expr of exprs) expect(await q(expr), expr).toMatchObject({ status: 'success' });
    } finally {
      p.kill('SIGKILL');
      await e.stop('SIGINT');
      e.cleanup();
      dir.remove();
    }
  });
});
