/**
 * Scenario: launching a niche product, with the engine as processes (`keel start`: every default
 * agent in its own process, the researcher, writer and marketer among them), scripted models
 * behind a real OpenAI-compatible HTTP server, a local web-search connector, the CLI for the
 * operator, and a real SMTP client (swaks) for a subscriber's reply.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { readdirSync, readFileSync, statSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { REPO_ROOT } from '../../../config/index.ts';
import { startEngineProcess, waitFor, type EngineProcess } from '../../helpers/index.ts';
import { startOpenAiServer, type OpenAiServer } from '../../../testkit/openai.ts';

const hasSwaks = spawnSync('swaks', ['--version']).status === 0;

/** The launch agents' prompts, by their system message (the inbound agents' calls are not launch work). */
const LAUNCH_PROMPTS = /You research a product launch|You write launch content|You review launch content|You revise launch content|You plan the launch/;
const systemOf = (body: Record<string, unknown>) => String(((body.messages as Array<{ role: string; content: string }> | undefined) ?? []).find((m) => m.role === 'system')?.content ?? '');

function scriptedReply(body: Record<string, unknown>): string {
  const sys = systemOf(body);
  const user = String(((body.messages as Array<{ role: string; content: string }>) ?? []).find((m) => m.role === 'user')?.content ?? '');
  const name = /Product: (.+)/.exec(user)?.[1] ?? 'the product';
  if (sys.includes('You research a product launch')) return `Commuting crafters want a loom that fits in a bag; they pay 20 to 40 euros for small tools. Stress that ${name} fits in a pocket.`;
  if (sys.includes('You review launch content')) return 'OK';
  if (sys.includes('You plan the launch')) return 'Email the subscribers first, then post; the page carries the story.';
  if (sys.includes('You write launch content') || sys.includes('You revise launch content')) {
    if (sys.includes('landing page')) return `# ${name}\n\n## Weave anywhere\n\nA loom that fits in your pocket.\n\n### Why commuters love it\n\n- Fits in a coat pocket\n- Sets up in seconds\n- Quiet on the train\n\nPrice: €29.\n\n**Get ${name} today.**\n`;
    if (sys.includes('two launch emails')) return `Subject: ${name} is here\n\nHi,\n\n${name} is out today: weave on your commute.\n\nReply to this email with any question.\n\n=====\n\nSubject: Still thinking about ${name}?\n\nHi,\n\nA few days in: crafters weave on the train with it.\n\nReply and tell us what you need.`;
    if (sys.includes('social posts')) return `${name} is out: a loom for your pocket.\n---\nWeave on the train with ${name}.\n---\nQuestions about ${name}? Ask us.`;
  }
  return 'ok';
}

describe('launching a niche product end to end (engine as processes, scripted models)', () => {
  let engine: EngineProcess | undefined;
  let ai: OpenAiServer | undefined;
  let search: Server | undefined;
  const searches: string[] = [];
  let failWriterPage = false;
  let skip = '';

  function keel(args: string[]): { status: number | null; stdout: string; stderr: string; json: <T = unknown>() => T } {
    const r = spawnSync(process.execPath, [join(REPO_ROOT, 'cli', 'keel.ts'), ...args], {
      env: { ...process.env, KEEL_DATA_DIR: engine!.dataDir, KEEL_NATS_PORT: String(engine!.natsPort), KEEL_LOG_LEVEL: 'silent', KEEL_OPERATOR: 'olivia' },
      encoding: 'utf8',
    });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr, json: <T,>() => JSON.parse(r.stdout) as T };
  }
  const launchRequests = () => ai!.requests.filter((r) => r.path.endsWith('/chat/completions') && LAUNCH_PROMPTS.test(systemOf(r.body)));
  type Approval = { id: string; action: string; payload: { productId: string; slot: string; assetId: string; text: string } };
  const approvalsOf = (productId: string) => keel(['approvals', '--json']).json<{ approvals: Approval[] }>().approvals.filter((a) => a.payload?.productId === productId);
  const outboxFiles = () => (existsSync(join(engine!.dataDir, 'outbox')) ? readdirSync(join(engine!.dataDir, 'outbox')).filter((f) => f.endsWith('.eml')) : []);
  const eml = (f: string) => readFileSync(join(engine!.dataDir, 'outbox', f), 'utf8');
  interface ProductShow {
    lifecycle: string;
    blocked?: { kind: string; reason: string };
    history: Array<{ type: string; to?: string; reason?: string; actor: string }>;
    launch?: { runId: string; at: string; runStatus: string };
    research?: { summary: string; sources: unknown[]; tier: number; note?: string };
    tasks: Array<{ id: string; title: string; owner: string; status: string; dueAt?: string; step?: string }>;
    assets: Array<{ id: string; slot: string; status: string; current: number; approvedVersion?: number; versions: Array<{ version: number; by: string; tier?: number }> }>;
    calendar: Array<{ id: string; channel: string; startsAt: string; status: string }>;
    followUps: { count: number; tickets: Array<{ ticketId: string; from: string }> };
    exceptions: Array<{ kind: string; reason: string }>;
    cost: { usd: number; records: number; modelCalls: number; tokensIn: number; tokensOut: number; byAgent: Record<string, number> };
  }
  const show = (id: string) => keel(['product', 'show', id, '--json']).json<ProductShow>();
  interface RunShow { run: { status: string; steps: Record<string, { status: string; scheduledAt?: string; waitUntil?: string }> }; history: Array<{ type: string; data: { step?: string; until?: string } }> }
  const runShow = (id: string) => keel(['run', 'show', id, '--json']).json<RunShow>();

  beforeAll(async () => {
    if (!hasSwaks) {
      skip = 'swaks (Debian package) is not installed';
      return;
    }
    ai = await startOpenAiServer({ reply: scriptedReply, usage: { prompt_tokens: 400, completion_tokens: 150 }, status: (body) => (failWriterPage && systemOf(body).includes('landing page') ? 429 : 200) });
    search = createServer((req, res) => {
      const q = new URL(req.url ?? '/', 'http://x').searchParams.get('q') ?? '';
      searches.push(q);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ results: [{ title: 'Weaving on the go: a survey', url: 'https://example.org/survey', snippet: 'Most crafters who commute say they would weave on the train if the loom fit in a bag.' }] }));
    });
    await new Promise<void>((r) => search!.listen(0, '127.0.0.1', r));
    const searchUrl = `http://127.0.0.1:${(search.address() as AddressInfo).port}/search?q={query}`;
    engine = await startEngineProcess({
      KEEL_AGENTS: '',
      KEEL_LOG_LEVEL: 'warn',
      KEEL_WORKFLOW_SWEEP_MS: '300',
      KEEL_MODEL_SMALL: 'openai:gpt-4o-mini',
      KEEL_MODEL_LARGE: 'openai:gpt-4o',
      KEEL_OPENAI_BASE_URL: ai.url,
      OPENAI_API_KEY: 'sk-test',
      KEEL_MODEL_MAX_RETRIES: '0',
      KEEL_LAUNCH_SEARCH_URL: searchUrl,
    });
    await waitFor(() => keel(['agents', '--json']).json<{ agents: Array<{ agent: string }> }>().agents.filter((a) => ['researcher', 'writer', 'marketer', 'intake'].includes(a.agent)).length >= 4, { timeoutMs: 90_000, intervalMs: 500, what: 'the launch agents and intake' });
  }, 180_000);

  afterAll(async () => {
    if (engine) {
      await engine.stop('SIGINT');
      engine.cleanup();
    }
    await ai?.stop();
    await new Promise((r) => (search ? search.close(r) : r(undefined)));
  });

  let runId = '';
  let at = '';
  const P = 'pocket-loom';

  it('create a product and start its launch: research (with web search) and drafts are produced, and one approval per asset waits', async (ctx) => {
    if (!engine) return ctx.skip(skip);
    const created = keel(['product', 'create', '--name', 'Pocket Loom', '--pitch', 'A palm-sized loom for weaving on the go.', '--audience', 'busy crafters who commute', '--price', '29', '--currency', 'EUR', '--notes', 'Crafters told us they want to weave during their commute. A big loom does not fit in a bag.', '--subscribers', 'ann@example.com,bo@example.com', '--json']);
    expect(created.status, created.stderr).toBe(0);
    expect(created.json<{ id: string }>().id).toBe(P);
    const started = keel(['launch', 'start', P, '--at', '+25s', '--follow-up-after', '4s', '--budget', '2', '--json']);
    expect(started.status, started.stderr).toBe(0);
    ({ runId, at } = started.json<{ runId: string; at: string }>());
    await waitFor(() => approvalsOf(P).length === 4, { timeoutMs: 90_000, intervalMs: 500, what: 'four content approvals' });
    expect(approvalsOf(P).map((a) => a.payload.slot).sort()).toEqual(['email-1', 'email-2', 'page', 'posts']);
    const p = show(P);
    expect(p.lifecycle).toBe('review');
    // research: the notes, the web search (the connector was asked), a model summary
    expect(searches.length).toBe(1);
    expect(searches[0]).toContain('busy crafters who commute');
    expect(p.research).toMatchObject({ tier: 1 });
    expect(p.research!.sources).toHaveLength(1);
    expect(p.research!.summary).toMatch(/fits in a pocket/);
    // every task has an owner and a due time
    expect(p.tasks).toHaveLength(13);
    expect(new Set(p.tasks.map((t) => t.owner))).toEqual(new Set(['researcher', 'writer', 'marketer', 'operator']));
    for (const t of p.tasks) expect(Date.parse(t.dueAt!)).toBeGreaterThan(0);
    expect(p.tasks.filter((t) => t.owner === 'writer').every((t) => t.status === 'done')).toBe(true);
    expect(p.tasks.filter((t) => t.owner === 'operator').every((t) => t.status === 'todo')).toBe(true);
    // the drafts are the model's (tier 2: the large model), reviewed by it
    const page = p.assets.find((a) => a.slot === 'page')!;
    expect(page.versions[0]).toMatchObject({ version: 1, by: 'agent:writer', tier: 2 });
    expect(p.calendar.map((c) => c.channel).sort()).toEqual(['email', 'email', 'site', 'social']);
  }, 150_000);

  it('the operator approves the page as is and edits the announcement (a new version); the page and the emails go out at their calendar time', async (ctx) => {
    if (!engine || !runId) return ctx.skip(skip || 'needs the launch');
    const byslot = Object.fromEntries(approvalsOf(P).map((a) => [a.payload.slot, a]));
    const edited = 'Hi,\n\nPocket Loom is out today: a loom for your coat pocket. Launch price €29.\n\nReply to this email with any question.\n\n— Olivia';
    expect(keel(['approve', byslot.page!.id, '--json']).status).toBe(0);
    const r = keel(['approve', byslot['email-1']!.id, '--text', edited, '--json']);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(keel(['approve', byslot['email-2']!.id]).status).toBe(0);
    expect(keel(['approve', byslot.posts!.id]).status).toBe(0);
    // nothing is published before the launch time
    await waitFor(() => runShow(runId).run.steps['publish-page']!.status !== 'pending', { timeoutMs: 30_000, intervalMs: 300, what: 'the publish step to be planned' });
    const sitePage = join(engine.dataDir, 'site', P, 'index.html');
    if (Date.now() < Date.parse(at) - 1_000) {
      expect(runShow(runId).run.steps['publish-page']).toMatchObject({ status: 'waiting', waitUntil: at });
      expect(existsSync(sitePage)).toBe(false);
    }
    await waitFor(() => existsSync(sitePage), { timeoutMs: 60_000, intervalMs: 300, what: 'the landing page' });
    const html = readFileSync(sitePage, 'utf8');
    expect(html).toContain('<h1>Pocket Loom</h1>');
    expect(html).toContain('€29');
    await waitFor(() => runShow(runId).run.status === 'completed', { timeoutMs: 60_000, intervalMs: 500, what: 'the launch run to complete' });
    const run = runShow(runId);
    for (const s of ['publish-page', 'send-announcement', 'publish-posts']) expect(Date.parse(run.run.steps[s]!.scheduledAt!)).toBeGreaterThanOrEqual(Date.parse(at));
    expect(run.history.some((h) => h.type === 'step_waiting' && h.data.step === 'send-announcement' && h.data.until === at)).toBe(true);
    const followUpAt = Date.parse(at) + 4_000;
    expect(Date.parse(run.run.steps['send-follow-up']!.scheduledAt!)).toBeGreaterThanOrEqual(followUpAt);
    // two emails per subscriber: the edited announcement, then the follow-up
    const launchMails = outboxFiles().map(eml).filter((m) => /^X-Keel-Product: pocket-loom$/m.test(m));
    expect(launchMails).toHaveLength(4);
    const announce = launchMails.filter((m) => /^Message-ID: <launch\.pocket-loom\.email-1\./m.test(m));
    expect(announce.map((m) => /^To: (.+)$/m.exec(m)![1]).sort()).toEqual(['ann@example.com', 'bo@example.com']);
    for (const m of announce) expect(m.replace(/=\r?\n/g, '')).toContain('a loom for your coat pocket');
    expect(existsSync(join(engine.dataDir, 'site', P, 'posts', 'posts.json'))).toBe(true);
    expect(JSON.parse(readFileSync(join(engine.dataDir, 'site', P, 'posts', 'posts.json'), 'utf8')).posts).toHaveLength(3);
    // the edit is version 2 of the announcement, by the operator; the diff shows it
    const p = show(P);
    const a1 = p.assets.find((a) => a.slot === 'email-1')!;
    expect(a1.versions.map((v) => v.by)).toEqual(['agent:writer', 'human:olivia']);
    expect(a1).toMatchObject({ current: 2, approvedVersion: 2, status: 'published' });
    const diff = keel(['content', 'diff', a1.id, '1', '2', '--json']).json<{ patch: string; added: number; removed: number }>();
    expect(diff.patch).toContain('+Pocket Loom is out today: a loom for your coat pocket. Launch price €29.');
    expect(diff.added).toBeGreaterThan(0);
    expect(p.assets.find((a) => a.slot === 'page')!).toMatchObject({ current: 1, approvedVersion: 1, status: 'published' });
  }, 150_000);

  it("a subscriber's reply to the launch email becomes a ticket linked to the product, and `keel product show` shows it all with costs", async (ctx) => {
    if (!engine || !runId) return ctx.skip(skip || 'needs the launch');
    const announce = outboxFiles().map(eml).find((m) => /^Message-ID: <launch\.pocket-loom\.email-1\./m.test(m) && /^To: ann@example\.com$/m.test(m))!;
    const messageId = /^Message-ID: (<[^>]+>)$/m.exec(announce)![1]!;
    const out = spawnSync('swaks', ['--server', `127.0.0.1:${engine.smtpPort}`, '--to', 'support@keel.local', '--from', 'ann@example.com', '--header', 'Subject: Re: Pocket Loom is here', '--header', `In-Reply-To: ${messageId}`, '--header', `References: ${messageId}`, '--body', 'Does it fit a size 3 needle? I would buy two.'], { encoding: 'utf8' });
    expect(out.stdout + out.stderr).toMatch(/250 OK/);
    await waitFor(() => show(P).followUps.count === 1, { timeoutMs: 60_000, intervalMs: 500, what: 'the reply linked to the product' });
    const p = show(P);
    const ticketId = p.followUps.tickets[0]!.ticketId;
    expect(p.followUps.tickets[0]!.from).toBe('ann@example.com');
    const ticket = keel(['ticket', 'show', ticketId, '--json']).json<{ messages: Array<{ text: string }> }>();
    expect(ticket.messages[0]!.text).toContain('size 3 needle');
    // the lifecycle, from the log
    expect(p.lifecycle).toBe('done');
    expect(p.history.filter((h) => h.type === 'lifecycle_changed').map((h) => h.to)).toEqual(['researching', 'drafting', 'review', 'scheduled', 'launched', 'follow-up', 'done']);
    expect(p.tasks.every((t) => t.status === 'done')).toBe(true);
    expect(p.assets.every((a) => a.status === 'published')).toBe(true);
    expect(p.calendar.every((c) => c.status === 'published')).toBe(true);
    // costs: one ledger record per model call the provider actually received for this launch
    const calls = launchRequests().length;
    expect(calls).toBeGreaterThanOrEqual(8); // research, 3 drafts + 3 reviews, the plan
    expect(p.cost.modelCalls).toBe(calls);
    expect(p.cost.records).toBeGreaterThan(calls); // and each task's compute
    expect(p.cost.usd).toBeGreaterThan(0);
    expect(Object.keys(p.cost.byAgent).sort()).toEqual(['marketer', 'researcher', 'writer']);
    expect(keel(['launches', '--json']).json<{ launches: Array<{ productId: string; lifecycle: string; followUps: number }> }>().launches.find((l) => l.productId === P)).toMatchObject({ lifecycle: 'done', followUps: 1 });
  }, 120_000);

  it('`keel replay` of the whole launch: zero provider calls, zero sends, no divergence', async (ctx) => {
    if (!engine || !runId) return ctx.skip(skip || 'needs the launch');
    const requests = ai!.requests.length;
    const mails = outboxFiles().length;
    const page = statSync(join(engine.dataDir, 'site', P, 'index.html')).mtimeMs;
    const r = keel(['replay', runId, '--json']);
    const rep = r.json<{ divergences: number; modelCalls: number; sideEffects: number; steps: Array<{ step: string; result: string; reason?: string }> }>();
    expect(rep.divergences, JSON.stringify(rep.steps.filter((s) => s.result !== 'same'))).toBe(0);
    expect(r.status).toBe(0);
    expect(rep.modelCalls).toBe(0);
    expect(rep.sideEffects).toBe(0);
    // every capability step was replayed (the approvals are the operator's recorded decisions)
    const replayed = rep.steps.filter((s) => s.result === 'same').map((s) => s.step);
    for (const s of ['kickoff', 'research', 'write-page', 'write-emails', 'write-posts', 'plan', 'apply-email-1', 'schedule', 'publish-page', 'send-announcement', 'send-follow-up', 'finish']) expect(replayed).toContain(s);
    expect(ai!.requests.length).toBe(requests);
    expect(outboxFiles().length).toBe(mails);
    expect(statSync(join(engine.dataDir, 'site', P, 'index.html')).mtimeMs).toBe(page);
  }, 120_000);

  it("the writer's model failing (429 past its retries) blocks the product with that reason; `keel run retry` resumes and the launch completes", async (ctx) => {
    if (!engine) return ctx.skip(skip);
    const D = 'desk-drum';
    expect(keel(['product', 'create', '--name', 'Desk Drum', '--pitch', 'A silent practice pad for drummers at work.', '--audience', 'drummers with office jobs', '--subscribers', 'cy@example.com', '--json']).status).toBe(0);
    failWriterPage = true;
    const before = outboxFiles().length;
    const started = keel(['launch', 'start', D, '--follow-up-after', '1s', '--json']).json<{ runId: string }>();
    await waitFor(() => show(D).lifecycle === 'blocked', { timeoutMs: 120_000, intervalMs: 1_000, what: 'the product blocked' });
    const p = show(D);
    expect(p.blocked).toMatchObject({ kind: 'step_failed' });
    expect(p.blocked!.reason).toMatch(/write-page/);
    expect(p.blocked!.reason).toMatch(/429/);
    const launches = keel(['launches', '--json']).json<{ launches: Array<{ productId: string; lifecycle: string; blocked?: { reason: string } }> }>().launches;
    expect(launches.find((l) => l.productId === D)).toMatchObject({ lifecycle: 'blocked', blocked: { reason: p.blocked!.reason } });
    expect(keel(['launches']).stdout).toMatch(/blocked.*write-page/s);
    // the operator was told, once
    const notices = outboxFiles().slice(0).map(eml).filter((m) => /^To: operator@keel\.local$/m.test(m) && /Desk Drum blocked/.test(m));
    expect(notices).toHaveLength(1);
    expect(outboxFiles().length).toBe(before + 1);
    // the provider recovers; the operator resumes the run from the failed step
    failWriterPage = false;
    const retry = keel(['run', 'retry', started.runId, '--from', 'write-page', '--json']);
    expect(retry.status, retry.stdout + retry.stderr).toBe(0);
    await waitFor(() => approvalsOf(D).length === 4, { timeoutMs: 90_000, intervalMs: 500, what: 'four approvals for the resumed launch' });
    expect(show(D).lifecycle).not.toBe('blocked');
    for (const a of approvalsOf(D)) expect(keel(['approve', a.id]).status).toBe(0);
    await waitFor(() => runShow(started.runId).run.status === 'completed', { timeoutMs: 90_000, intervalMs: 500, what: 'the resumed launch to complete' });
    const done = show(D);
    expect(done.lifecycle).toBe('done');
    expect(done.exceptions.map((e) => e.kind)).toEqual(['step_failed']);
    expect(existsSync(join(engine.dataDir, 'site', D, 'index.html'))).toBe(true);
  }, 300_000);

  it("a budget that refuses the launch's model call blocks the product (budget) before the provider is asked", async (ctx) => {
    if (!engine) return ctx.skip(skip);
    const B = 'bead-box';
    expect(keel(['product', 'create', '--name', 'Bead Box', '--pitch', 'A sorting box for seed beads.', '--audience', 'bead weavers', '--json']).status).toBe(0);
    const before = launchRequests().length;
    const { runId } = keel(['launch', 'start', B, '--budget', '0.000001', '--json']).json<{ runId: string }>();
    await waitFor(() => show(B).blocked?.kind === 'budget', { timeoutMs: 60_000, intervalMs: 500, what: 'the product blocked by its budget' });
    const p = show(B);
    expect(p.blocked!.reason).toMatch(/step 'research' failed: .*budget refused at scope run:/);
    expect(launchRequests().length).toBe(before);
    expect(runShow(runId).run.status).toBe('failed');
  }, 120_000);
});
