#!/usr/bin/env node
/**
 * `npm run screenshots`: regenerates docs/console/*.png, one per main view of the web console,
 * from a real `keel start` (every agent, a scripted priced model) seeded with an email, a chat
 * message, a budget and a dead letter, shot in Debian's chromium. About a minute.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../../config/index.ts';
import { waitFor } from '../helpers/index.ts';
import { browserMissing, nobodyMessage, startConsoleWorld } from './harness.ts';

const missing = browserMissing();
if (missing) {
  console.error(`screenshots: ${missing}`);
  process.exit(1);
}
const out = join(REPO_ROOT, 'docs', 'console');
mkdirSync(out, { recursive: true });
const w = await startConsoleWorld({ viewport: { width: 1280, height: 800 } });
try {
  const { page } = w;
  const shot = async (name: string) => {
    await page.locator('#toast').evaluate((el) => ((el as unknown as { className: string }).className = 'toast'));
    await page.waitForTimeout(400); // the toast fades, the live marker settles
    await page.screenshot({ path: join(out, `${name}.png`), fullPage: false });
    console.log(`docs/console/${name}.png`);
  };
  await page.goto(w.engine.httpUrl);
  await page.getByLabel('Operator token').waitFor();
  await shot('login');
  await w.login();

  await w.sendEmail({ from: 'dana@example.com', subject: 'Invoice INV-9 charged twice', text: 'Hello, my invoice INV-9 was charged twice, qwzx plorb. Please refund the second charge.' });
  await w.sendEmail({ from: 'omar@example.com', subject: 'Cannot log in since this morning', text: 'Hi, the login page says my password is wrong but I reset it twice. zyx wobble.' });
  await w.api('/v1/chat/messages', { method: 'POST', body: { customer: { handle: 'erin42', name: 'Erin' }, text: 'zorp my parcel klee never came, order 5521' } });
  await page.locator('.item').nth(2).waitFor({ timeout: 120_000 });
  await page.locator('.item', { hasText: 'dana@example.com' }).click();
  await shot('inbox');

  // decide two, so runs complete and a reply goes out
  await page.keyboard.press('a');
  await page.getByText(/Approved/).waitFor();
  await page.locator('.item', { hasText: 'omar@example.com' }).click();
  await page.keyboard.press('r');
  await page.getByLabel('Reason').fill('He wrote again by phone; answered there.');
  await page.keyboard.press('Enter');
  await page.getByText(/Rejected/).waitFor();
  w.keel(['budget', 'set', '--customer', 'dana@example.com', '--usd', '0.05', '--period', 'month']);
  w.keel(['budget', 'set', '--engine', '--usd', '5', '--period', 'day']);
  const run = await w.api<{ runId: string }>('/v1/runs', { method: 'POST', body: { workflow: 'inbound-message', input: { message: nobodyMessage() } } });
  await waitFor(async () => ((await w.api<{ letters: Array<{ run: { id: string } | null }> }>('/v1/dlq')).body.letters ?? []).some((l) => l.run?.id === run.body.runId), { timeoutMs: 60_000, intervalMs: 500, what: 'a dead letter' });

  await page.getByRole('navigation', { name: 'Views' }).getByRole('link', { name: 'Cost' }).click();
  await page.locator('#cost-groups').waitFor();
  await shot('cost');
  await page.locator('#cost-groups a.drill', { hasText: 'dana@example.com' }).click();
  await page.locator('#cost-groups a.drill', { hasText: 'Invoice INV-9' }).click();
  await page.locator('#cost-records').waitFor();
  await shot('cost-records');

  await page.getByRole('navigation', { name: 'Views' }).getByRole('link', { name: 'Runs' }).click();
  await page.locator('#runs').waitFor();
  await shot('runs');
  await page.locator('#runs a', { hasText: /^in-/ }).last().click();
  await page.locator('.timeline').waitFor();
  await shot('run');

  await page.getByRole('navigation', { name: 'Views' }).getByRole('link', { name: 'Agents' }).click();
  await page.locator('#agents').waitFor();
  await page.locator('#dlq details summary').first().click();
  await page.locator('#dlq pre.body', { hasText: 'who am I' }).first().waitFor();
  await page.locator('#dlq').scrollIntoViewIfNeeded();
  await shot('agents');

  await page.getByRole('navigation', { name: 'Views' }).getByRole('link', { name: 'Audit' }).click();
  await page.getByRole('button', { name: 'Verify the hash chain' }).click();
  await page.getByText(/intact/).waitFor();
  await shot('audit');

  await page.goto(`${w.engine.httpUrl}/#/memory?q=${encodeURIComponent('charged twice, refund')}`);
  await page.getByRole('heading', { name: 'Memory' }).waitFor();
  await page.locator('main table, main .empty, main .error').first().waitFor({ timeout: 60_000 });
  await shot('memory');

  // a phone
  const phone = await w.context.newPage();
  await phone.setViewportSize({ width: 390, height: 844 });
  await phone.goto(`${w.engine.httpUrl}/#/inbox`);
  await phone.locator('.item').first().waitFor();
  await phone.waitForTimeout(300);
  await phone.screenshot({ path: join(out, 'inbox-phone.png') });
  console.log('docs/console/inbox-phone.png');
  await phone.goto(`${w.engine.httpUrl}/#/cost`);
  await phone.locator('#cost-groups').waitFor();
  await phone.waitForTimeout(300);
  await phone.screenshot({ path: join(out, 'cost-phone.png') });
  console.log('docs/console/cost-phone.png');
} finally {
  await w.close();
}
