/**
 * The launch feature's CLI (`keel product|products|launch|launches|content|calendar`), each run
 * as a real process against a real SQLite store. What the agents would write (a launch run,
 * tasks, asset versions, calendar items, costs) is seeded through the store with the launch
 * entity types, as the marketer and the writer write it. `keel launch start` itself needs a bus
 * and the agents: the scenario test covers it; here only its refusals, which come before the bus.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openStore, type Actor, type EventInput, type StateStore } from '../../shared-state/index.ts';
import { planStart } from '../../workflows/index.ts';
import { BUILTIN_FEATURES, entityTypesOf, productLaunch, PRODUCT, TASK, CONTENT_ASSET, CALENDAR_ITEM } from '../../agents/index.ts';
import { REPO_ROOT } from '../../config/index.ts';
import { tempDir } from '../../testkit/index.ts';

const TYPES = entityTypesOf(BUILTIN_FEATURES);
const OPERATOR = 'ada-op';

let dir: ReturnType<typeof tempDir>;
let state: string;

function keel(args: string[]) {
  const r = spawnSync(process.execPath, [join(REPO_ROOT, 'cli', 'keel.ts'), ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, KEEL_STATE: state, KEEL_DATA_DIR: dir.path, KEEL_LOG_LEVEL: 'silent', KEEL_OPERATOR: OPERATOR, KEEL_LAUNCH_FOLLOW_UP_MS: '7200000' },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- CLI JSON, asserted field by field
type J = Record<string, any>;
const json = (args: string[]): J => {
  const r = keel([...args, '--json']);
  if (r.code !== 0) throw new Error(`keel ${args.join(' ')} exited ${r.code}: ${r.stdout}${r.stderr}`);
  return JSON.parse(r.stdout) as J;
};
/** A refusal: exit 1 and the one JSON error shape. */
const fails = (args: string[]): J => {
  const r = keel([...args, '--json']);
  expect(r.code, `${args.join(' ')}: ${r.stdout}${r.stderr}`).toBe(1);
  return JSON.parse(r.stdout) as J;
};
const withStore = async <T>(fn: (s: StateStore) => Promise<T>): Promise<T> => {
  const s = await openStore(state, { types: TYPES });
  try {
    return await fn(s);
  } finally {
    await s.close();
  }
};
const agent = (id: string): { actor: Actor } => ({ actor: { kind: 'agent', id } });
const iso = (ms: number) => new Date(ms).toISOString();
/** The same instant written with a `+0H:00` zone (to the second). */
const withOffset = (ms: number, h: number) => `${new Date(Math.floor(ms / 1000) * 1000 + h * 3_600_000).toISOString().slice(0, 19)}+0${h}:00`;

beforeAll(async () => {
  dir = tempDir('keel-launch-cli-');
  state = `sqlite:${dir.path}/state.db`;
  await withStore(async () => undefined); // an engine's store exists
});
afterAll(() => dir.remove());

describe('keel product create', () => {
  it('slugs the name, takes -2 on a clash, reads --doc, --notes @file and --subscribers @file', () => {
    const notes = join(dir.path, 'notes.txt');
    writeFileSync(notes, 'Users hate context switches.\nPrice anchor: 39 USD.');
    const doc = join(dir.path, 'interviews.md');
    writeFileSync(doc, '# Interviews\n\n12 of 15 want a weekly report.');
    const subs = join(dir.path, 'subs.txt');
    writeFileSync(subs, 'Bob@Example.com\n\nalice@example.com\nbob@example.com\n');

    const a = json(['product', 'create', '--name', 'Focus Timer: Pro édition!', '--pitch', 'Blocks distractions', '--audience', 'remote devs', '--price', '19.5', '--currency', 'eur', '--notes', `@${notes}`, '--doc', doc, '--subscribers', `@${subs}`]);
    expect(a.id).toBe('focus-timer-pro-edition');
    expect(a.product).toMatchObject({ name: 'Focus Timer: Pro édition!', lifecycle: 'idea', price: { amount: 19.5, currency: 'EUR' }, notes: 'Users hate context switches.\nPrice anchor: 39 USD.', subscribers: ['bob@example.com', 'alice@example.com'] });
    expect(a.product.documents).toEqual([{ name: 'interviews.md', text: '# Interviews\n\n12 of 15 want a weekly report.' }]);

    const b = json(['product', 'create', '--name', 'Focus Timer: Pro édition!', '--pitch', 'again', '--audience', 'x', '--subscribers', 'c@example.com, D@example.com']);
    expect(b.id).toBe('focus-timer-pro-edition-2');
    expect(b.product.subscribers).toEqual(['c@example.com', 'd@example.com']);
    expect(b.product.price).toBeUndefined();

    // a long name: the slug stops at 48 characters, a clash keeps the suffix within them
    const long = 'An extremely long product name that goes on and on forever';
    const l1 = json(['product', 'create', '--name', long, '--pitch', 'p', '--audience', 'a']);
    const l2 = json(['product', 'create', '--name', long, '--pitch', 'p', '--audience', 'a']);
    expect(l1.id).toMatch(/^[a-z0-9-]{1,48}$/);
    expect(l1.id).toBe('an-extremely-long-product-name-that-goes-on-and');
    expect(l2.id.length).toBeLessThanOrEqual(48);
    expect(l2.id).toMatch(/^an-extremely-long-product-name-that-goes-on-.*-2$/);

    // the creation is the operator's
    const show = json(['product', 'show', a.id]);
    expect(show.history).toEqual([expect.objectContaining({ version: 1, type: 'created', actor: `human:${OPERATOR}` })]);
  });

  it('refuses bad emails, prices, currencies, taken ids, oversized docs and fields the schema refuses, naming the option', () => {
    const e1 = fails(['product', 'create', '--name', 'N', '--pitch', 'p', '--audience', 'a', '--subscribers', 'ok@example.com,not-an-email']);
    expect(e1).toMatchObject({ error: 'CLI_BAD_ARGUMENT', option: '--subscribers', invalid: ['not-an-email'] });
    expect(e1.message).toContain('--subscribers');
    expect(keel(['product', 'create', '--name', 'N', '--pitch', 'p', '--audience', 'a', '--subscribers', 'x@']).stderr).toMatch(/^error \[CLI_BAD_ARGUMENT\]: --subscribers: not an email address: 'x@'/);
    expect(fails(['product', 'create', '--name', 'N', '--pitch', 'p', '--audience', 'a', '--price', '-3'])).toMatchObject({ error: 'CLI_BAD_ARGUMENT', option: '--price' });
    expect(fails(['product', 'create', '--name', 'N', '--pitch', 'p', '--audience', 'a', '--price', 'ten'])).toMatchObject({ error: 'CLI_BAD_ARGUMENT', option: '--price', value: 'ten' });
    expect(fails(['product', 'create', '--name', 'N', '--pitch', 'p', '--audience', 'a', '--price', '5', '--currency', 'EURO'])).toMatchObject({ error: 'CLI_BAD_ARGUMENT', option: '--currency' });
    const big = join(dir.path, 'big.txt');
    writeFileSync(big, 'x'.repeat(200_001));
    const e2 = fails(['product', 'create', '--name', 'N', '--pitch', 'p', '--audience', 'a', '--doc', big]);
    expect(e2).toMatchObject({ error: 'CLI_BAD_ARGUMENT', option: '--doc', bytes: 200_001, maxBytes: 200_000 });
    expect(fails(['product', 'create', '--name', 'N', '--pitch', 'p', '--audience', 'a', '--doc', join(dir.path, 'missing.md')]).message).toMatch(/--doc: cannot read .*missing\.md.*no such file/);
    // the entity schema refuses a 201-character name: mapped to the option
    const e3 = fails(['product', 'create', '--name', 'n'.repeat(201), '--pitch', 'p', '--audience', 'a']);
    expect(e3).toMatchObject({ error: 'CLI_BAD_ARGUMENT', options: ['--name'] });
    expect(e3.message).toMatch(/^the product was refused: --name: /);
    json(['product', 'create', '--name', 'Mine', '--pitch', 'p', '--audience', 'a', '--id', 'my-product']);
    expect(fails(['product', 'create', '--name', 'Mine', '--pitch', 'p', '--audience', 'a', '--id', 'my-product'])).toMatchObject({ error: 'PRODUCT_EXISTS', productId: 'my-product' });
    expect(fails(['product', 'create', '--name', 'Mine', '--pitch', 'p', '--audience', 'a', '--id', 'bad id!'])).toMatchObject({ error: 'CLI_BAD_ARGUMENT', option: '--id' });
    // a required option missing: the usage error contract
    expect(fails(['product', 'create', '--name', 'N', '--pitch', 'p'])).toMatchObject({ error: 'CLI_MISSING_OPTION' });
  });
});

describe('keel product subscribe', () => {
  it('adds lowercased addresses once', () => {
    json(['product', 'create', '--name', 'Sub Test', '--pitch', 'p', '--audience', 'a', '--subscribers', 'a@example.com']);
    const r = json(['product', 'subscribe', 'sub-test', 'B@Example.com', 'a@example.com', 'b@example.com', 'c@example.com']);
    expect(r).toEqual({ id: 'sub-test', subscribers: ['a@example.com', 'b@example.com', 'c@example.com'], added: 2 });
    expect(json(['product', 'subscribe', 'sub-test', 'C@example.com'])).toEqual({ id: 'sub-test', subscribers: ['a@example.com', 'b@example.com', 'c@example.com'], added: 0 });
    expect(fails(['product', 'subscribe', 'sub-test', 'nope'])).toMatchObject({ error: 'CLI_BAD_ARGUMENT' });
    expect(fails(['product', 'subscribe', 'no-such-product', 'x@example.com'])).toMatchObject({ error: 'PRODUCT_NOT_FOUND' });
  });
});

/** A product in the middle of its launch, written as the workflow engine and the agents write it. */
async function seedLaunch(productId: string, now: number) {
  const runId = `run-${productId}`;
  const input = { productId, at: iso(now + 3_600_000), followUpMs: 86_400_000 };
  const bodies = { v1: 'Focus Timer\nBlocks distractions.\nBuy now.\nThanks', v2: 'Focus Timer\nBlocks every distraction.\nBuy now.\nThanks\nP.S. 20% off today' };
  await withStore(async (s) => {
    const plan = planStart(runId, productLaunch, input, {});
    await s.append('workflow_run', runId, 0, [{ type: 'created', data: plan.created }, ...plan.events], { actor: { kind: 'human', id: OPERATOR } });
    const p = await s.get(PRODUCT, productId);
    const events: EventInput[] = [
      { type: 'launch_started', data: { runId, at: input.at, budgetUsd: 3, startedAt: iso(now - 60_000) } },
      { type: 'lifecycle_changed', data: { to: 'researching', reason: `launch ${runId} started` } },
      { type: 'researched', data: { summary: 'Remote devs lose 2h a day.', points: ['weekly report wanted'], sources: [{ title: 'interviews' }], tier: 1, at: iso(now - 50_000) } },
      { type: 'lifecycle_changed', data: { to: 'drafting', reason: 'research done' } },
      { type: 'blocked', data: { kind: 'overdue', reason: 'Review the landing page is overdue (due 1h ago)', at: iso(now - 10_000), taskId: `${runId}-review-page` } },
      { type: 'follow_up_received', data: { ticketId: 'tkt-1', from: 'bob@example.com', subject: 'Re: launch', at: iso(now - 5_000) } },
    ];
    await s.append(PRODUCT, productId, p!.version, events, agent('marketer'));
    const task = (step: string, owner: string, dueAt: number, status = 'todo') =>
      s.append(TASK, `${runId}-${step}`, 0, [{ type: 'created', data: { title: `${step} task`, owner, dueAt: iso(dueAt), productId, runId, step, status } }], agent('marketer'));
    await task('research', 'researcher', now - 7_200_000, 'done'); // past due but done: not overdue
    await task('review-page', 'operator', now - 3_600_000); // overdue
    await task('publish-page', 'marketer', now + 7_200_000); // due later
    await task('write-posts', 'writer', now - 1_000, 'cancelled'); // cancelled: not overdue, not open
    const page = `${productId}-page`;
    await s.append(CONTENT_ASSET, page, 0, [
      { type: 'created', data: { productId, kind: 'landing_page', slot: 'page', title: 'Focus Timer' } },
      { type: 'version_added', data: { version: 1, title: 'Focus Timer', body: bodies.v1, by: 'agent:writer', at: iso(now - 40_000), tier: 1, note: 'first draft', review: ['shortened the headline'] } },
      { type: 'status_changed', data: { to: 'review', by: 'agent:writer', version: 1 } },
      { type: 'version_added', data: { version: 2, title: 'Focus Timer, edited', body: bodies.v2, by: `human:${OPERATOR}`, at: iso(now - 30_000) } },
      { type: 'status_changed', data: { to: 'approved', by: `human:${OPERATOR}`, version: 2 } },
    ], agent('writer'));
    await s.append(CONTENT_ASSET, `${productId}-email-1`, 0, [
      { type: 'created', data: { productId, kind: 'email', slot: 'email-1', title: 'Announcement' } },
      { type: 'version_added', data: { version: 1, title: 'Announcement', body: 'Hello', by: 'agent:writer', at: iso(now - 40_000), tier: 0 } },
      { type: 'status_changed', data: { to: 'review', by: 'agent:writer', version: 1 } },
    ], agent('writer'));
    // calendar items written out of order, one with a zone offset (sorted by time, not text)
    const cal = (slot: string, startsAt: string, channel: string, status = 'planned') =>
      s.append(CALENDAR_ITEM, `${productId}-cal-${slot}`, 0, [{ type: 'created', data: { title: `${slot} goes out`, startsAt, productId, assetId: `${productId}-${slot}`, channel, status } }], agent('marketer'));
    await cal('follow-up', iso(now + 90_000_000), 'email');
    await cal('page', iso(now + 3_600_000), 'site');
    await cal('posts', withOffset(now + 3_000_000, 2), 'social');
    await cal('teaser', iso(now - 3_600_000), 'social', 'published');
    await s.recordCost({ agent: 'writer', runId, model: 'openai:gpt-4o', costUsd: 0.0125, tokensIn: 1200, tokensOut: 400 });
    await s.recordCost({ agent: 'researcher', runId, costUsd: 0.003, tokensIn: 800, tokensOut: 100 });
    await s.recordCost({ agent: 'writer', runId, costUsd: 0.0005, tokensIn: 50, tokensOut: 20 });
    await s.recordCost({ agent: 'writer', runId: 'another-run', costUsd: 9, tokensIn: 1, tokensOut: 1 });
  });
  return { runId, input, bodies };
}

describe('a product in its launch', () => {
  const now = Date.now();
  let seeded: Awaited<ReturnType<typeof seedLaunch>>;
  beforeAll(async () => {
    json(['product', 'create', '--name', 'Launchy', '--pitch', 'p', '--audience', 'a', '--subscribers', 'a@example.com,b@example.com']);
    seeded = await seedLaunch('launchy', now);
  });

  it('keel product show: history, launch run, tasks with overdue, assets, calendar in time order, follow-ups, cost', () => {
    const d = json(['product', 'show', 'launchy']);
    expect(Object.keys(d).sort()).toEqual(['assets', 'audience', 'blocked', 'calendar', 'cost', 'exceptions', 'followUps', 'history', 'id', 'launch', 'lifecycle', 'name', 'pitch', 'publications', 'research', 'tasks']);
    expect(d).toMatchObject({ id: 'launchy', name: 'Launchy', lifecycle: 'blocked', blocked: { kind: 'overdue', reason: 'Review the landing page is overdue (due 1h ago)' } });
    expect(d.exceptions).toHaveLength(1);
    expect(d.history.map((h: J) => [h.version, h.type, h.to ?? null])).toEqual([
      [1, 'created', null], [2, 'launch_started', null], [3, 'lifecycle_changed', 'researching'], [5, 'lifecycle_changed', 'drafting'], [6, 'blocked', null], [7, 'follow_up_received', null],
    ]);
    expect(d.history[2]).toMatchObject({ reason: `launch ${seeded.runId} started`, actor: 'agent:marketer' });
    expect(d.history[4]).toMatchObject({ reason: 'Review the landing page is overdue (due 1h ago)' });
    expect(d.launch).toEqual({ runId: seeded.runId, at: seeded.input.at, budgetUsd: 3, startedAt: iso(now - 60_000), runStatus: 'running' });
    expect(d.research).toEqual({ summary: 'Remote devs lose 2h a day.', points: ['weekly report wanted'], sources: [{ title: 'interviews' }], tier: 1 });
    const tasks = Object.fromEntries(d.tasks.map((t: J) => [t.step, t]));
    expect(tasks.research).toMatchObject({ status: 'done', overdue: false, owner: 'researcher' });
    expect(tasks['review-page']).toMatchObject({ status: 'todo', overdue: true, owner: 'operator', id: `${seeded.runId}-review-page` });
    expect(tasks['publish-page']).toMatchObject({ overdue: false });
    expect(tasks['write-posts']).toMatchObject({ status: 'cancelled', overdue: false });
    const page = d.assets.find((a: J) => a.slot === 'page');
    expect(page).toEqual({ id: 'launchy-page', slot: 'page', kind: 'landing_page', title: 'Focus Timer, edited', status: 'approved', current: 2, approvedVersion: 2, versions: [
      { version: 1, by: 'agent:writer', at: iso(now - 40_000), tier: 1, note: 'first draft' },
      { version: 2, by: `human:${OPERATOR}`, at: iso(now - 30_000) },
    ] });
    expect(d.calendar.map((c: J) => c.id)).toEqual(['launchy-cal-teaser', 'launchy-cal-posts', 'launchy-cal-page', 'launchy-cal-follow-up']);
    expect(d.followUps).toEqual({ count: 1, tickets: [{ ticketId: 'tkt-1', from: 'bob@example.com', subject: 'Re: launch', at: iso(now - 5_000) }] });
    // the launch run's ledger only (another run's record is not counted)
    expect(d.cost).toEqual({ usd: 0.016, records: 3, modelCalls: 1, tokensIn: 2050, tokensOut: 520, byAgent: { writer: 0.013, researcher: 0.003 } });

    const human = keel(['product', 'show', 'launchy']);
    expect(human.code).toBe(0);
    expect(human.stdout).toContain('lifecycle: blocked (overdue since');
    expect(human.stdout).toContain('subscribers: 2  documents: none');
    expect(human.stdout).toContain('Review the landing page is overdue (due 1h ago)');
    expect(human.stdout).toMatch(/review-page\s+operator\s+todo\s+\S+\s+OVERDUE/);
    expect(human.stdout).not.toMatch(/publish-page.*OVERDUE/);
    expect(human.stdout).toMatch(/cost: \$0\.016000 over 3 record\(s\)/);
  });

  it('keel products and keel launches: blocked with the reason, counts computed from the entities', () => {
    const { products } = json(['products']);
    const p = products.find((x: J) => x.id === 'launchy');
    expect(p).toEqual({ id: 'launchy', name: 'Launchy', lifecycle: 'blocked', blocked: { kind: 'overdue', reason: 'Review the landing page is overdue (due 1h ago)', at: iso(now - 10_000) }, subscribers: 2, followUps: 1, launchRunId: seeded.runId });
    expect(products.find((x: J) => x.id === 'sub-test')).toEqual({ id: 'sub-test', name: 'Sub Test', lifecycle: 'idea', subscribers: 3, followUps: 0 });

    const { launches } = json(['launches']);
    expect(launches.map((l: J) => l.productId)).toEqual(['launchy']); // only launched products
    expect(launches[0]).toEqual({
      productId: 'launchy', name: 'Launchy', lifecycle: 'blocked', blocked: { kind: 'overdue', reason: 'Review the landing page is overdue (due 1h ago)', at: iso(now - 10_000) },
      runId: seeded.runId, runStatus: 'running', at: seeded.input.at,
      next: { title: 'posts goes out', startsAt: expect.stringMatching(/\+02:00$/), channel: 'social' },
      tasks: { open: 2, overdue: 1 }, assets: { review: 1, approved: 1, published: 0 }, followUps: 1, costUsd: 0.016,
    });
    const table = keel(['launches']).stdout;
    expect(table).toMatch(/launchy\s+blocked\s+run-launchy\s+running/);
    expect(table).toContain('overdue: Review the landing page is overdue');
  });

  it('keel content show (current, --version) and a clear error naming the versions that exist', () => {
    const cur = json(['content', 'show', 'launchy-page']);
    expect(cur).toMatchObject({ id: 'launchy-page', productId: 'launchy', slot: 'page', kind: 'landing_page', status: 'approved', current: 2, approvedVersion: 2 });
    expect(cur.version).toEqual({ version: 2, title: 'Focus Timer, edited', body: seeded.bodies.v2, by: `human:${OPERATOR}`, at: iso(now - 30_000) });
    expect(cur.versions).toEqual([{ version: 1, by: 'agent:writer', at: iso(now - 40_000) }, { version: 2, by: `human:${OPERATOR}`, at: iso(now - 30_000) }]);
    const v1 = json(['content', 'show', 'launchy-page', '--version', '1']);
    expect(v1.version).toMatchObject({ version: 1, body: seeded.bodies.v1, tier: 1, note: 'first draft', review: ['shortened the headline'] });
    expect(fails(['content', 'show', 'launchy-page', '--version', '7'])).toMatchObject({ error: 'CONTENT_VERSION_NOT_FOUND', versions: [1, 2], message: 'launchy-page has no version 7; its versions: 1, 2' });
    expect(fails(['content', 'show', 'nothing-here'])).toMatchObject({ error: 'CONTENT_NOT_FOUND' });
    expect(fails(['content', 'show', 'launchy-page', '--version', 'two'])).toMatchObject({ error: 'CLI_BAD_ARGUMENT' });
    const human = keel(['content', 'show', 'launchy-page']).stdout;
    expect(human).toContain('version 2 of 2 (current) (approved)');
    expect(human).toContain(seeded.bodies.v2);
  });

  it('keel content diff: the +/- lines of the two versions\' bodies', () => {
    const d = json(['content', 'diff', 'launchy-page', '1', '2']);
    const a = seeded.bodies.v1.split('\n');
    const b = seeded.bodies.v2.split('\n');
    const onlyA = a.filter((l) => !b.includes(l));
    const onlyB = b.filter((l) => !a.includes(l));
    const minus = d.patch.split('\n').filter((l: string) => l.startsWith('-') && !l.startsWith('---')).map((l: string) => l.slice(1));
    const plus = d.patch.split('\n').filter((l: string) => l.startsWith('+') && !l.startsWith('+++')).map((l: string) => l.slice(1));
    expect(minus).toEqual(onlyA);
    expect(plus).toEqual(onlyB);
    expect(d).toMatchObject({ id: 'launchy-page', from: 1, to: 2, removed: onlyA.length, added: onlyB.length });
    expect(d.patch).toContain('--- launchy-page@v1');
    expect(d.patch).toContain('+++ launchy-page@v2');
    // the reverse diff swaps them
    const r = json(['content', 'diff', 'launchy-page', '2', '1']);
    expect([r.added, r.removed]).toEqual([d.removed, d.added]);
    expect(json(['content', 'diff', 'launchy-page', '2', '2'])).toMatchObject({ added: 0, removed: 0 });
    expect(fails(['content', 'diff', 'launchy-page', '1', '3'])).toMatchObject({ error: 'CONTENT_VERSION_NOT_FOUND', versions: [1, 2] });
    expect(keel(['content', 'diff', 'launchy-page', '1', '2']).stdout).toMatch(/-Blocks distractions\.\n\+Blocks every distraction\./);
  });

  it('keel calendar: sorted by time across zones, filtered by product', async () => {
    await withStore(async (s) => {
      await s.append(CALENDAR_ITEM, 'other-cal-1', 0, [{ type: 'created', data: { title: 'webinar', startsAt: iso(now + 3_500_000), channel: 'other' } }], agent('marketer'));
    });
    const { items } = json(['calendar']);
    expect(items.map((i: J) => i.id)).toEqual(['launchy-cal-teaser', 'launchy-cal-posts', 'other-cal-1', 'launchy-cal-page', 'launchy-cal-follow-up']);
    const times = items.map((i: J) => Date.parse(i.startsAt));
    expect([...times].sort((x, y) => x - y)).toEqual(times);
    expect(items[3]).toEqual({ id: 'launchy-cal-page', title: 'page goes out', startsAt: iso(now + 3_600_000), channel: 'site', status: 'planned', productId: 'launchy', assetId: 'launchy-page' });
    expect(items[2]).toEqual({ id: 'other-cal-1', title: 'webinar', startsAt: iso(now + 3_500_000), channel: 'other', status: 'planned' });
    const only = json(['calendar', '--product', 'launchy']);
    expect(only.items.map((i: J) => i.id)).toEqual(['launchy-cal-teaser', 'launchy-cal-posts', 'launchy-cal-page', 'launchy-cal-follow-up']);
    expect(fails(['calendar', '--product', 'nope'])).toMatchObject({ error: 'PRODUCT_NOT_FOUND' });
  });

  it('keel launch start: refusals before the bus (unknown product, launch in progress, bad times)', async () => {
    expect(fails(['launch', 'start', 'nope'])).toMatchObject({ error: 'PRODUCT_NOT_FOUND', productId: 'nope' });
    expect(fails(['launch', 'start', 'launchy'])).toMatchObject({ error: 'LAUNCH_IN_PROGRESS', productId: 'launchy', runId: seeded.runId });
    // a run started a moment ago, its kick-off not done yet: the product has no launch, the run is found
    json(['product', 'create', '--name', 'Fresh', '--pitch', 'p', '--audience', 'a']);
    await withStore(async (s) => {
      const plan = planStart('run-fresh', productLaunch, { productId: 'fresh', at: iso(now), followUpMs: 0 }, {});
      await s.append('workflow_run', 'run-fresh', 0, [{ type: 'created', data: plan.created }, ...plan.events], { actor: { kind: 'human', id: OPERATOR } });
    });
    expect(fails(['launch', 'start', 'fresh'])).toMatchObject({ error: 'LAUNCH_IN_PROGRESS', runId: 'run-fresh' });
    expect(fails(['launch', 'start', 'launchy', '--at', 'tomorrow'])).toMatchObject({ error: 'CLI_BAD_ARGUMENT', option: '--at' });
    expect(fails(['launch', 'start', 'launchy', '--at', '2026-12-01T09:00:00'])).toMatchObject({ error: 'CLI_BAD_ARGUMENT', option: '--at' }); // no zone
    expect(fails(['launch', 'start', 'launchy', '--follow-up-after', '3 days'])).toMatchObject({ error: 'CLI_BAD_ARGUMENT', option: '--follow-up-after' });
    expect(fails(['launch', 'start', 'launchy', '--budget', '0'])).toMatchObject({ error: 'CLI_BAD_ARGUMENT', option: '--budget' });
  });
});

describe('--help', () => {
  it.each([
    ['product', 'create', /--subscribers <list\|@file>/],
    ['product', 'subscribe', /<email\.\.\.>/],
    ['product', 'show', /history, launch run, tasks/],
    ['products', '', /lifecycle/],
    ['launch', 'start', /--follow-up-after <duration>/],
    ['launches', '', /next calendar item/],
    ['content', 'show', /--version <n>/],
    ['content', 'diff', /unified diff/],
    ['calendar', '', /--product <id>/],
  ] as const)('keel %s %s --help', (cmd, sub, what) => {
    const r = keel([cmd, ...(sub ? [sub] : []), '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(what);
    expect(r.stdout).toMatch(/--json/);
    expect(r.stdout).toMatch(new RegExp(`Examples?:\\n {2}\\$ keel ${cmd}${sub ? ` ${sub}` : ''}`));
  });
});
