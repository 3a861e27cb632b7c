/**
 * Issue #17, the web console in a real browser (Debian's chromium through playwright-core)
 * against a real `keel start` with every agent and a scripted priced model:
 *
 * - log in with an operator token; an email's suggested reply appears in the inbox live and is
 *   approved with the `a` key: the .eml is in the outbox;
 * - a chat reply is edited and approved: the customer's socket receives the edited text;
 * - the cost of a named customer's ticket, and the ledger records behind it, in at most 4
 *   interactions from the home page (equal to what `keel cost` computes);
 * - j/k move through the inbox, a rejection needs its reason;
 * - a run waiting for its approval is cancelled, and a failed one retried from a step;
 * - a dead letter is re-driven from the agents view.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { reportSkip, waitFor } from '../helpers/index.ts';
import { browserMissing, startConsoleWorld, nobodyMessage, CALL_USD, SUGGESTED, type ConsoleWorld } from './harness.ts';

let w: ConsoleWorld | undefined;
const skip = browserMissing();

beforeAll(async () => {
  if (skip) return reportSkip('console browser tests', skip);
  w = await startConsoleWorld();
}, 240_000);

afterAll(async () => {
  await w?.close();
});

interface InboxItem { id: string; customer: string | null; reply: string | null; text: string | null; ticket: { id: string; messages: Array<{ direction: string; text: string }> } | null }

describe('the web console', () => {
  it('logs in with an operator token and approves an email reply from the live inbox: the .eml is in the outbox', async (ctx) => {
    if (!w) return ctx.skip(skip);
    const { page } = w;
    await page.goto(w.engine.httpUrl);
    // not logged in: the token form, and the API refuses the session-less browser
    await page.getByRole('heading', { name: 'Log in to Keel' }).waitFor();
    await page.getByLabel('Operator token').fill('keel_op_000000000000_wrong');
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByText(/Login failed: unknown or revoked operator token/).waitFor();
    // the console's data routes need an operator like every /v1 route; its files come with a strict CSP
    expect((await fetch(`${w.engine.httpUrl}/v1/inbox`)).status).toBe(401);
    expect((await fetch(`${w.engine.httpUrl}/v1/stream`)).status).toBe(401);
    expect((await fetch(`${w.engine.httpUrl}/`)).headers.get('content-security-policy')).toMatch(/default-src 'self'; script-src 'self'/);
    await w.login();
    await page.getByRole('heading', { name: 'Inbox' }).waitFor();
    // a session cookie without the CSRF header cannot decide anything
    const noCsrf = await page.evaluate(async (url) => (await fetch(`${url}/v1/approvals/x`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"decision":"approved"}' })).status, w.engine.httpUrl);
    expect(noCsrf).toBe(403);
    await page.getByText('● live').waitFor({ timeout: 15_000 });

    // the email arrives while the page is open: the inbox shows it without a reload
    await w.sendEmail({ from: 'dana@example.com', subject: 'Invoice INV-9 charged twice', text: 'Hello, my invoice INV-9 was charged twice, qwzx plorb. Please refund.' });
    const item = page.locator('.item', { hasText: 'dana@example.com' });
    await item.waitFor({ timeout: 90_000 });
    await item.click();
    await expect(page.locator('#detail-title').textContent()).resolves.toBe('Invoice INV-9 charged twice');
    // triage, summary and the suggested reply are on the page
    await expect(page.locator('.facts').textContent()).resolves.toMatch(/Triage.*tier \d.*Summary.*INV-9/s);
    await expect(page.locator('#reply').inputValue()).resolves.toBe(SUGGESTED);
    await page.keyboard.press('a');
    await page.getByText(/Approved: Invoice INV-9/).waitFor();
    await waitFor(() => w!.emlsTo('dana@example.com').length === 1, { timeoutMs: 60_000, intervalMs: 250, what: 'the reply .eml in the outbox' });
    const eml = w.emlsTo('dana@example.com')[0]!;
    expect(eml).toMatch(/^Subject: Re: Invoice INV-9 charged twice\r?$/m);
    expect(eml.replace(/=\r?\n/g, '')).toContain('We have looked into it and will sort it out today.');
    const approved = (await w.api<{ approvals: Array<{ payload: { customer?: string }; decidedBy: { kind: string; id: string } }> }>('/v1/approvals?state=approved')).body.approvals;
    expect(approved.find((a) => a.payload.customer === 'dana@example.com')?.decidedBy).toEqual({ kind: 'human', id: w.engine.operator });
  }, 180_000);

  it('edits a chat reply and approves it: the customer receives the edited text', async (ctx) => {
    if (!w) return ctx.skip(skip);
    const { page } = w;
    const sent = await w.api<{ conversationId: string }>('/v1/chat/messages', { method: 'POST', body: { customer: { handle: 'erin42', name: 'Erin' }, text: 'zorp my parcel klee never came, order 5521' } });
    expect(sent.status).toBe(202);
    // the customer's socket, joined to the conversation
    const ws = new WebSocket(`${w.engine.httpUrl.replace('http', 'ws')}/v1/chat/ws?conversationId=${encodeURIComponent(sent.body.conversationId)}`);
    const pushes: Array<{ payload?: { message?: { text?: string } } }> = [];
    ws.on('message', (d) => pushes.push(JSON.parse(String(d))));
    await new Promise((r, j) => ws.once('open', r).once('error', j));
    try {
      const item = page.locator('.item', { hasText: 'erin42' });
      await item.waitFor({ timeout: 90_000 });
      await item.click();
      await page.keyboard.press('e');
      const edited = `Hi Erin, order 5521 left our warehouse today: tracking ${Date.now().toString(36)}.`;
      const reply = page.locator('#reply');
      await expect(reply.evaluate((el) => el === (el.ownerDocument as { activeElement: unknown }).activeElement)).resolves.toBe(true);
      await reply.fill(edited);
      await page.keyboard.press('Control+Enter');
      await page.getByText(/Approved the edited reply/).waitFor();
      await waitFor(() => pushes.some((p) => p.payload?.message?.text === edited), { timeoutMs: 60_000, intervalMs: 250, what: 'the edited reply pushed to the customer' });
      expect(pushes.some((p) => p.payload?.message?.text === SUGGESTED)).toBe(false);
      const decided = (await w.api<{ items: InboxItem[] }>('/v1/inbox?state=approved')).body.items.find((i) => i.customer?.includes('erin42'))!;
      expect(decided.text).toBe(edited);
      expect(decided.reply).toBe(SUGGESTED);
      expect(decided.ticket!.messages.filter((m) => m.direction === 'out').map((m) => m.text)).toEqual([edited]);
    } finally {
      ws.close();
    }
  }, 180_000);

  it('answers "what did this customer\'s ticket cost" in at most 4 interactions from the home page, with the records behind it', async (ctx) => {
    if (!w) return ctx.skip(skip);
    const { page } = w;
    let interactions = 0;
    await page.goto(`${w.engine.httpUrl}/`); // home
    await page.getByRole('heading', { name: 'Inbox' }).waitFor();
    await page.getByRole('navigation', { name: 'Views' }).getByRole('link', { name: 'Cost' }).click();
    interactions++;
    await page.locator('#cost-groups').waitFor();
    await page.locator('#cost-groups a.drill', { hasText: 'dana@example.com' }).click();
    interactions++;
    const row = page.locator('#cost-groups a.drill', { hasText: 'Invoice INV-9 charged twice' });
    await row.waitFor();
    await row.click();
    interactions++;
    await page.locator('#cost-records').waitFor();
    expect(interactions).toBeLessThanOrEqual(4);

    // what the CLI computes from the ledger, independently of the console (`keel ticket show`: the records of the ticket's runs)
    const tickets = JSON.parse(w.keel(['tickets', '--customer', 'dana@example.com', '--json']).stdout) as { tickets: Array<{ id: string }> };
    expect(tickets.tickets).toHaveLength(1);
    const shown = w.keel(['ticket', 'show', tickets.tickets[0]!.id, '--json']);
    expect(shown.status, shown.stderr).toBe(0);
    const cost = (JSON.parse(shown.stdout) as { cost: { usd: number; records: number } }).cost;
    // every priced call is one scripted call: the ticket cost a whole number (>= 1) of them
    const calls = cost.usd / CALL_USD;
    expect(calls).toBeGreaterThanOrEqual(1);
    expect(Math.abs(calls - Math.round(calls))).toBeLessThan(1e-6);

    expect(Number(await page.locator('#cost-total strong').getAttribute('data-usd'))).toBeCloseTo(cost.usd, 9);
    await expect(page.locator('#cost-total').textContent()).resolves.toContain(`in ${cost.records} ledger record`);
    expect(await page.locator('#cost-records tbody tr').count()).toBe(cost.records);
    // on from a record to its run and its trace
    const runLink = page.locator('#cost-records tbody tr a[href^="#/runs/"]').first();
    await runLink.click();
    await page.getByRole('heading', { name: /^Run in-/ }).waitFor();
    expect(page.url()).toContain('#/runs/');
    await expect(page.locator('#trace a').getAttribute('href')).resolves.toMatch(/^http:\/\/127\.0\.0\.1:16686\/trace\/[0-9a-f]{32}$/);
  }, 120_000);

  it('rejects a reply with a reason (none refused), moving through the inbox with j/k', async (ctx) => {
    if (!w) return ctx.skip(skip);
    const { page } = w;
    for (const handle of ['finn7', 'gus8']) {
      const r = await w.api('/v1/chat/messages', { method: 'POST', body: { customer: { handle }, text: `blorp ${handle} qux where is my thing` } });
      expect(r.status).toBe(202);
    }
    await page.goto(`${w.engine.httpUrl}/#/inbox`);
    await page.locator('.item', { hasText: 'finn7' }).waitFor({ timeout: 90_000 });
    await page.locator('.item', { hasText: 'gus8' }).waitFor({ timeout: 90_000 });
    // the item's sender and subject (its age, "1s ago", changes while the test runs)
    const selected = async () => `${await page.locator('.item.selected strong').textContent()} ${await page.locator('.item.selected .item-subject').textContent()}`;
    const items = page.locator('.item');
    const indexOf = (re: RegExp | null) => items.evaluateAll((els, src) => els.findIndex((e) => (src ? new RegExp(src).test(e.textContent ?? '') : e.classList.contains('selected'))), re?.source ?? null);
    const n = await items.count();
    expect(n).toBeGreaterThanOrEqual(2);
    const first = await selected();
    // away and back: j then k, or k then j when the selection is the last item
    const [away, back] = (await indexOf(null)) < n - 1 ? ['j', 'k'] : ['k', 'j'];
    await page.keyboard.press(away);
    await expect.poll(selected).not.toBe(first);
    await page.keyboard.press(back);
    await expect.poll(selected).toBe(first);
    // then to finn7's item by keys alone
    const target = await indexOf(/finn7/);
    for (let at = await indexOf(null); at !== target; at += at < target ? 1 : -1) await page.keyboard.press(at < target ? 'j' : 'k');
    await expect.poll(selected).toMatch(/finn7/);
    await page.keyboard.press('r');
    await page.keyboard.press('Enter'); // no reason yet
    await page.getByText('A rejection needs a reason.').waitFor();
    await page.getByLabel('Reason').fill('Asked the same by phone; answered there.');
    await page.keyboard.press('Enter');
    await page.getByText(/^Rejected: /).waitFor();
    const rejected = (await w.api<{ items: InboxItem[] & Array<{ reason: string | null; decidedBy: string | null }> }>('/v1/inbox?state=rejected')).body.items.find((i) => i.customer?.includes('finn7'))!;
    expect(rejected).toMatchObject({ reason: 'Asked the same by phone; answered there.', decidedBy: `human:${w.engine.operator}` });
    expect((await w.api<{ items: InboxItem[] }>('/v1/inbox')).body.items.some((i) => i.customer?.includes('gus8'))).toBe(true);
  }, 180_000);

  it('cancels a run waiting for its approval from the runs view', async (ctx) => {
    if (!w) return ctx.skip(skip);
    const { page } = w;
    const pending = (await w.api<{ items: Array<InboxItem & { runId: string }> }>('/v1/inbox')).body.items.find((i) => i.customer?.includes('gus8'))!;
    await page.goto(`${w.engine.httpUrl}/#/runs/${pending.runId}`);
    // the page renders after its fetch: wait for the step, then count
    await page.locator('.step', { hasText: 'waiting_approval' }).first().waitFor();
    await expect(page.locator('.step', { hasText: 'waiting_approval' }).count()).resolves.toBe(1);
    page.once('dialog', (d) => void d.accept());
    await page.getByRole('button', { name: 'Cancel run' }).click();
    await page.getByText('Cancelled', { exact: true }).waitFor();
    await waitFor(async () => (await w!.api<{ status: string }>(`/v1/runs/${pending.runId}`)).body.status === 'cancelled', { timeoutMs: 15_000, what: 'the run cancelled' });
    await page.locator('h1', { hasText: pending.runId }).waitFor();
    await expect.poll(() => page.getByRole('button', { name: 'Cancel run' }).count()).toBe(0);
  }, 120_000);

  it('re-drives a dead letter from the agents view: recorded on the letter, and the task runs again', async (ctx) => {
    if (!w) return ctx.skip(skip);
    const { page } = w;
    const started = await w.api<{ runId: string }>('/v1/runs', { method: 'POST', body: { workflow: 'inbound-message', input: { message: nobodyMessage() } } });
    expect(started.status).toBe(201);
    const runId = started.body.runId;
    type Letters = { letters: Array<{ seq: number; reason: string; run: { id: string } | null; redriven: Array<{ by: string }> }> };
    const lettersOf = async () => (await w!.api<Letters>('/v1/dlq')).body.letters.filter((l) => l.run?.id === runId);
    await waitFor(async () => (await lettersOf()).length === 1, { timeoutMs: 60_000, intervalMs: 500, what: 'the dead letter' });
    const [letter] = await lettersOf();
    expect(letter!.reason).toBe('permanent_error');

    await page.goto(`${w.engine.httpUrl}/#/agents`);
    await page.locator('#agents').waitFor();
    const entry = page.locator(`details[data-seq="${letter!.seq}"]`);
    await entry.locator('summary').click();
    await waitFor(async () => /who am I\?/.test((await entry.locator('pre.body').textContent()) ?? ''), { timeoutMs: 15_000, what: 'the letter body' });
    await entry.getByRole('button', { name: 'Redrive' }).click();
    await page.getByText(new RegExp(`Re-drove #${letter!.seq} as .*; run ${runId} step intake waits for it`)).waitFor();
    const after = await lettersOf();
    expect(after.find((l) => l.seq === letter!.seq)!.redriven).toEqual([expect.objectContaining({ by: `human:${w.engine.operator}` })]);
    // the task ran again and, still naming nobody, dead-lettered again
    await waitFor(async () => (await lettersOf()).length === 2, { timeoutMs: 60_000, intervalMs: 500, what: 'the second dead letter' });
    const audit = (await w.api<{ records: Array<{ action: string; subject: string; details: { via?: string } }> }>('/v1/audit')).body.records;
    expect(audit.find((r) => r.action === 'dlq.redriven' && r.subject === `dlq/${letter!.seq}`)?.details.via).toBe('console');

    // and the failed run retried from its step in the runs view: the step runs again (a third letter)
    await waitFor(async () => (await w!.api<{ status: string }>(`/v1/runs/${runId}`)).body.status === 'failed', { timeoutMs: 30_000, what: 'the run to fail again' });
    page.once('dialog', (d) => void d.accept());
    await page.goto(`${w.engine.httpUrl}/#/runs/${runId}`);
    await page.locator('.step', { hasText: 'intake' }).getByRole('button', { name: 'Retry from here' }).click();
    await page.getByText('Re-driving from intake').waitFor();
    await waitFor(async () => (await lettersOf()).length === 3, { timeoutMs: 60_000, intervalMs: 500, what: 'the third dead letter' });
    const history = (await w.api<{ history: Array<{ type: string; step: string | null }> }>(`/v1/runs/${runId}/timeline`)).body.history;
    expect(history.filter((h) => h.type === 'step_reset')).toHaveLength(1);
  }, 120_000);
});
