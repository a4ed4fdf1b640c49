// Browser test of locks with a message in the GrantFlow dashboard, in real Chromium
// (playwright-core): an administrator locks a user with a message from the revoke-all dialog,
// the Blocked users view lists the lock with its end and message, the user's browser gets the
// refusal page with the message (as text, never markup), and Lift ends it.
//
// Run by tests/tests/dashboard.rs with GRANTFLOW_BROWSER_INPUT (JSON):
//   { dashboardUrl, envoyUrl, user, userToken: {sid, token}, freshToken: {sid, token},
//     message, artifacts, chromium }
// Prints progress on stderr and one JSON result line on stdout; every wait is bounded.
import { runInChromium, scriptTools } from './chromium.mjs';

const input = JSON.parse(process.env.GRANTFLOW_BROWSER_INPUT ?? '{}');
const WAIT = 10_000;
const { log, shot, check } = scriptTools('locks.mjs', input.artifacts);
const text = (s) => s.replace(/\s+/g, ' ').trim();

async function throughEnvoy(token, accept = 'application/json') {
  const res = await fetch(input.envoyUrl, { headers: { authorization: `Bearer ${token}`, accept } });
  return { status: res.status, body: await res.text() };
}

/// `date` as a datetime-local value, in the browser's (this machine's) time zone.
function local(date) {
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

const result = { screenshots: [] };
await runInChromium({ log, shot }, { executablePath: input.chromium, wait: WAIT }, async ({ context, page, consoleErrors }) => {

  // 1. Sign in, and the user's request through Envoy shows their session.
  await page.goto(input.dashboardUrl);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForSelector('#app:not([hidden])');
  await page.waitForSelector('#live[data-state="live"]');
  const first = await throughEnvoy(input.userToken.token);
  check(first.status === 200, `the user was allowed: ${first.status}`);
  const row = page.locator(`tr[data-session-id="${input.userToken.sid}"]`);
  await row.waitFor();

  // 2. End all their sessions with a lock of two hours and a message. The message field
  //    is off until the lock is chosen.
  await row.getByRole('button', { name: /^End all sessions of/ }).click();
  const dialog = page.locator('#revoke-all-dialog');
  await dialog.waitFor({ state: 'visible' });
  check(await page.isDisabled('#revoke-all-message'), 'no message without a lock');
  await page.fill('#revoke-all-reason', 'INC-2041 credential theft');
  await page.check('#revoke-all-lock');
  check(!(await page.isDisabled('#revoke-all-message')), 'the lock turns the message on');
  const until = new Date(Date.now() + 2 * 3600_000);
  until.setSeconds(0, 0);
  await page.fill('#revoke-all-until', local(until));
  await page.fill('#revoke-all-message', input.message);
  result.screenshots.push(await shot(page, '01-lock-dialog'));
  await page.locator('#revoke-all-submit').click();
  await dialog.waitFor({ state: 'hidden' });
  await row.waitFor({ state: 'detached' });
  result.lockUntil = until.toISOString();

  // 3. Blocked users: the lock with its end and message.
  await page.getByRole('link', { name: /Blocked users/ }).click();
  const blocked = page.locator(`#blocked-body tr[data-blocked-user="${input.user}"]`);
  await blocked.waitFor();
  const lockedCell = blocked.locator('td[data-label="Locked until"]');
  const datetime = await lockedCell.locator('time').getAttribute('datetime');
  check(new Date(datetime).getTime() === until.getTime(), `the lock's end: ${datetime} vs ${until.toISOString()}`);
  check(text(await lockedCell.locator('.lock-message').innerText()) === text(input.message), `the message: ${await lockedCell.innerText()}`);
  check(await blocked.locator('b').count() === 0, 'the message is text, not markup');
  result.blockedRow = text(await blocked.innerText());
  result.screenshots.push(await shot(page, '02-blocked-with-message'));

  // 4. The user's browser through Envoy: the refusal page with the message as text.
  const userPage = await context.newPage();
  await userPage.setExtraHTTPHeaders({ authorization: `Bearer ${input.freshToken.token}` });
  const nav = await userPage.goto(input.envoyUrl);
  check(nav.status() === 403, `the locked user gets 403: ${nav.status()}`);
  const said = text(await userPage.locator('main p').first().innerText());
  check(said.includes(text(input.message)) && said.startsWith('Your access is locked until'), `the page says: ${said}`);
  check(await userPage.locator('main b, main script').count() === 0, 'no markup from the message');
  result.userPage = said;
  result.screenshots.push(await shot(userPage, '03-locked-page'));
  await userPage.close();

  // 5. Lift: the dialog names the message; the row goes.
  await blocked.getByRole('button', { name: `Lift the block on ${input.user}` }).click();
  const lift = page.locator('#lift-dialog');
  await lift.waitFor({ state: 'visible' });
  const facts = text(await page.locator('#lift-facts').innerText());
  check(facts.includes('Message to the user') && facts.includes(text(input.message)), `the lift dialog: ${facts}`);
  await page.fill('#lift-reason', 'false positive');
  await lift.getByRole('button', { name: 'Lift block' }).click();
  await lift.waitFor({ state: 'hidden' });
  await blocked.waitFor({ state: 'detached' });

  // 6. A new sign-in of the user works.
  const after = await throughEnvoy(input.freshToken.token);
  check(after.status === 200, `after the lift a new sign-in works: ${after.status} ${after.body}`);
  result.afterLift = after.status;

  // 7. The audit trail: the lock and the lift.
  await page.getByRole('link', { name: 'Audit trail' }).click();
  const lockRow = page.locator('#audit-body tr', { hasText: 'INC-2041 credential theft' });
  await lockRow.waitFor();
  result.lockAuditRow = text(await lockRow.innerText());
  const liftRow = page.locator('#audit-body tr', { hasText: 'false positive' });
  await liftRow.waitFor();
  result.liftAuditRow = text(await liftRow.innerText());
  result.screenshots.push(await shot(page, '04-audit'));

  check(consoleErrors.length === 0, `no console errors: ${consoleErrors.join(' | ')}`);
  return result;
});
