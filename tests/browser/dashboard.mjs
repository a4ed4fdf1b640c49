// Browser test of the GrantFlow dashboard in real Chromium (playwright-core).
//
// Run by tests/tests/dashboard.rs, which starts the stack (OIDC issuer, Envoy, extauthz
// replica A behind Envoy, replica B serving the dashboard, both on one store) and passes
// everything in the GRANTFLOW_BROWSER_INPUT environment variable (JSON):
//   { dashboardUrl, envoyUrl, userTokens: [{sid, token}], otherUser, otherUserToken: {sid, token},
//     otherUserFreshToken: {sid, token} (the same user, another session, no auth_time),
//     thirdUser, thirdUserToken: {sid, token}, replicaAUrl (replica A's admin API),
//     artifacts, chromium }
// It prints progress on stderr and exactly one JSON result line on stdout. Every wait is
// bounded; any failure exits non-zero with the reason and a screenshot of the moment.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runInChromium, scriptTools } from './chromium.mjs';

// playwright-core is pinned and installed in tests/issuer (scripts/install-test-tools.sh).

const input = JSON.parse(process.env.GRANTFLOW_BROWSER_INPUT ?? '{}');
const WAIT = 10_000;
const FIREFOX_ON_WINDOWS = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0';

const { log, shot, check } = scriptTools('dashboard.mjs', input.artifacts);

/// A user's request through the real Envoy.
async function throughEnvoy(token, accept = 'application/json') {
  const res = await fetch(input.envoyUrl, {
    headers: { authorization: `Bearer ${token}`, accept, 'user-agent': FIREFOX_ON_WINDOWS },
  });
  return { status: res.status, body: await res.text() };
}

const result = { latenciesMs: [], screenshots: [] };
await runInChromium({ log, shot }, { executablePath: input.chromium, wait: WAIT }, async ({ context, page, consoleErrors }) => {

  // 1. Sign in: dashboard → issuer /authorize (auto-approved) → back with a code → token.
  await page.goto(input.dashboardUrl);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForSelector('#app:not([hidden])');
  await page.waitForSelector('#live[data-state="live"]');
  const me = (await page.textContent('#me-name')).trim();
  const tenant = (await page.textContent('#tenant-id')).trim();
  check(!page.url().includes('code='), `the code is left in the URL: ${page.url()}`);
  const stored = await page.evaluate(() => ({ cookies: document.cookie, local: localStorage.length }));
  check(stored.cookies === '' && stored.local === 0, `nothing is kept in cookies or localStorage: ${JSON.stringify(stored)}`);
  log('signed in as', me, 'tenant', tenant);
  result.signedInAs = me;
  result.tenant = tenant;

  // Record when rows appear and disappear (the browser's clock = this machine's clock).
  await page.evaluate(() => {
    window.__rowsAdded = {};
    window.__rowsRemoved = {};
    new MutationObserver((mutations) => {
      const now = Date.now();
      for (const m of mutations) {
        for (const n of m.addedNodes) if (n.dataset?.sessionId && !(n.dataset.sessionId in window.__rowsAdded)) window.__rowsAdded[n.dataset.sessionId] = now;
        for (const n of m.removedNodes) if (n.dataset?.sessionId) window.__rowsRemoved[n.dataset.sessionId] = now;
      }
    }).observe(document.getElementById('sessions-body'), { childList: true });
  });

  // 2. A user's request through Envoy (replica A) makes a row appear live on the dashboard
  //    (replica B) without a reload. Measured per session: request sent → row in the DOM.
  for (const { sid, token } of input.userTokens) {
    const sent = Date.now();
    const response = await throughEnvoy(token);
    const answered = Date.now();
    check(response.status === 200, `the user's request through Envoy was allowed: ${response.status}`);
    await page.waitForFunction((id) => window.__rowsAdded[id] !== undefined, sid, { timeout: WAIT });
    const shown = await page.evaluate((id) => window.__rowsAdded[id], sid);
    result.latenciesMs.push({ sid, fromRequestMs: shown - sent, fromResponseMs: shown - answered, envoyMs: answered - sent });
    await page.waitForTimeout(150);
  }
  const other = await throughEnvoy(input.otherUserToken.token);
  check(other.status === 200, 'the second user was allowed');
  await page.waitForSelector(`tr[data-session-id="${input.otherUserToken.sid}"]`);
  const row = page.locator(`tr[data-session-id="${input.userTokens[0].sid}"]`);
  const rowText = await row.innerText();
  check(rowText.includes('Firefox') && rowText.includes('Windows'), `browser/OS label shown: ${rowText}`);
  check(rowText.includes('127.0.0.1'), `IP shown: ${rowText}`);
  const navigations = await page.evaluate(() => performance.getEntriesByType('navigation').length);
  check(navigations === 1, 'no reload happened');
  result.screenshots.push(await shot(page, '01-live-sessions'));

  // 3. Revoke one session with a reason. The dialog refuses an empty reason.
  const victim = input.userTokens[0];
  await row.getByRole('button', { name: /^End session of/ }).click();
  const dialog = page.locator('#revoke-dialog');
  await dialog.waitFor({ state: 'visible' });
  check(await page.evaluate(() => document.activeElement?.id) === 'revoke-reason', 'focus moves to the reason field');
  await dialog.getByRole('button', { name: 'End session' }).click();
  check(await dialog.isVisible(), 'the dialog stays open without a reason');
  check(await page.evaluate(() => document.getElementById('revoke-reason').validity.valueMissing), 'the reason is required');
  const reason = 'INC-4711 suspicious sign-in from an unmanaged device';
  await page.fill('#revoke-reason', reason);
  result.screenshots.push(await shot(page, '02-revoke-dialog'));
  const revokedAt = Date.now();
  await dialog.getByRole('button', { name: 'End session' }).click();
  await dialog.waitFor({ state: 'hidden' });
  await page.waitForFunction((id) => !document.querySelector(`tr[data-session-id="${id}"]`), victim.sid);
  result.revokeToRowGoneMs = (await page.evaluate((id) => window.__rowsRemoved[id], victim.sid)) - revokedAt;

  // 4. That user's next request through Envoy: refused with the "session ended" page.
  const after = await throughEnvoy(victim.token, 'text/html,application/xhtml+xml;q=0.9,*/*;q=0.8');
  check(after.status === 401, `the revoked session is refused: ${after.status}`);
  check(after.body.includes('Your session was ended'), 'the refusal page says the session was ended');
  result.afterRevoke = { status: after.status, page: 'Your session was ended' };
  writeFileSync(join(input.artifacts, 'session-ended.html'), after.body);
  const userPage = await context.newPage();
  await userPage.setExtraHTTPHeaders({ authorization: `Bearer ${victim.token}` });
  const nav = await userPage.goto(input.envoyUrl);
  check(nav.status() === 401, 'the browser gets 401 too');
  result.screenshots.push(await shot(userPage, '05-session-ended-page'));
  await userPage.close();

  // 5. The audit trail shows actor, target and reason.
  await page.getByRole('link', { name: 'Audit trail' }).click();
  const auditRow = page.locator('#audit-body tr', { hasText: reason });
  await auditRow.waitFor({ state: 'visible' });
  const auditText = await auditRow.innerText();
  check(auditText.includes(me), `actor shown: ${auditText}`);
  check(auditText.includes(victim.sid), `target session shown: ${auditText}`);
  check(auditText.includes('Session ended') && auditText.includes('dashboard'), `action and source shown: ${auditText}`);
  result.auditRow = auditText.replace(/\s+/g, ' ').trim();

  // 6. Revoke every session of the other user, from the sessions view, by keyboard.
  await page.getByRole('link', { name: /Active sessions/ }).click();
  const otherRow = page.locator(`tr[data-session-id="${input.otherUserToken.sid}"]`);
  await otherRow.getByRole('button', { name: /^End all sessions of/ }).focus();
  await page.keyboard.press('Enter');
  await page.locator('#revoke-all-dialog').waitFor({ state: 'visible' });
  await page.keyboard.type('Offboarding: contract ended');
  const revokeAllRequest = page.waitForRequest((r) => r.method() === 'POST' && r.url().includes('/api/v1/users/'));
  await page.locator('#revoke-all-submit').focus();
  await page.keyboard.press('Enter');
  // A resubmission after an error must not revoke twice: the dialog sends an Idempotency-Key.
  const idempotencyKey = (await revokeAllRequest).headers()['idempotency-key'] ?? '';
  check(/^[A-Za-z0-9_-]{16,}$/.test(idempotencyKey), `revoke-all sends an Idempotency-Key: "${idempotencyKey}"`);
  await page.locator('#revoke-all-dialog').waitFor({ state: 'hidden' });
  await otherRow.waitFor({ state: 'detached' });
  const otherAfter = await throughEnvoy(input.otherUserToken.token);
  check(otherAfter.status === 401, `the other user's session is refused: ${otherAfter.status}`);

  await page.getByRole('link', { name: 'Audit trail' }).click();
  await page.locator('#audit-body tr', { hasText: 'Offboarding' }).waitFor();
  result.screenshots.push(await shot(page, '03-audit-trail'));

  // 6b. The user is listed under Blocked users. A token of theirs without auth_time (another
  //     session) is refused: only an interactive sign-in gets them back in.
  await page.getByRole('link', { name: /Blocked users/ }).click();
  const blockedRow = (user) => page.locator(`#blocked-body tr[data-blocked-user="${user}"]`);
  await blockedRow(input.otherUser).waitFor();
  const blockedText = await blockedRow(input.otherUser).innerText();
  check(blockedText.includes('Offboarding: contract ended') && blockedText.includes(me), `blocked row: ${blockedText}`);
  check((await page.textContent('#blocked-count')).trim() === '1', 'the tab counts the blocked users');
  result.blockedRow = blockedText.replace(/\s+/g, ' ').trim();
  const unproven = await throughEnvoy(input.otherUserFreshToken.token);
  check(unproven.status === 401 && unproven.body.includes('sign-in-again'), `a token without auth_time must sign in again: ${unproven.status} ${unproven.body}`);

  // 6c. A revoke-all made through replica A's API (another administrator's, say) shows up
  //     here live: its ended session's event makes the list reload.
  const third = await throughEnvoy(input.thirdUserToken.token);
  check(third.status === 200, `the third user was allowed: ${third.status}`);
  await page.waitForFunction((id) => window.__rowsAdded[id] !== undefined, input.thirdUserToken.sid);
  const adminToken = await page.evaluate(() => JSON.parse(sessionStorage.getItem('grantflow.admin.token')).token);
  const viaA = await fetch(`${input.replicaAUrl}/api/v1/users/${encodeURIComponent(input.thirdUser)}/revoke`, {
    method: 'POST',
    headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ reason: 'INC-5150 through replica A' }),
  });
  const viaABody = await viaA.json();
  check(viaA.status === 200, `revoke-all through replica A: ${viaA.status} ${JSON.stringify(viaABody)}`);
  check(viaABody.nextStep.includes('sign in again interactively'), `the answer says what the user must do: ${viaABody.nextStep}`);
  result.revokeAllNextStep = viaABody.nextStep;
  const revokedViaA = Date.now();
  await blockedRow(input.thirdUser).waitFor();
  result.blockedLiveMs = Date.now() - revokedViaA;
  check(navigations === (await page.evaluate(() => performance.getEntriesByType('navigation').length)), 'no reload happened');

  // 6d. Lift the first user's block: a dialog asks for a reason and confirmation.
  await blockedRow(input.otherUser).getByRole('button', { name: `Lift the block on ${input.otherUser}` }).click();
  const liftDialog = page.locator('#lift-dialog');
  await liftDialog.waitFor({ state: 'visible' });
  check(await page.evaluate(() => document.activeElement?.id) === 'lift-reason', 'focus moves to the reason field');
  await liftDialog.getByRole('button', { name: 'Lift block' }).click();
  check(await liftDialog.isVisible(), 'the dialog stays open without a reason');
  check(await page.evaluate(() => document.getElementById('lift-reason').validity.valueMissing), 'the reason is required');
  await page.fill('#lift-reason', 'Offboarding reverted: contract extended');
  result.screenshots.push(await shot(page, '08-lift-dialog'));
  await liftDialog.getByRole('button', { name: 'Lift block' }).click();
  await liftDialog.waitFor({ state: 'hidden' });
  await blockedRow(input.otherUser).waitFor({ state: 'detached' });
  check(await blockedRow(input.thirdUser).isVisible(), 'the other blocked user stays listed');
  check((await page.textContent('#blocked-count')).trim() === '1', 'the count follows');
  result.screenshots.push(await shot(page, '09-blocked-users'));
  // Lifted: the token without auth_time opens a session; the ended session stays ended.
  const lifted = await throughEnvoy(input.otherUserFreshToken.token);
  check(lifted.status === 200, `after the lift a token without auth_time works: ${lifted.status} ${lifted.body}`);
  const ended = await throughEnvoy(input.otherUserToken.token);
  check(ended.status === 401, `the ended session stays ended: ${ended.status}`);
  // The audit trail shows the lift.
  await page.getByRole('link', { name: 'Audit trail' }).click();
  const liftRow = page.locator('#audit-body tr', { hasText: 'contract extended' });
  await liftRow.waitFor();
  const liftText = await liftRow.innerText();
  check(liftText.includes('Block lifted') && liftText.includes(input.otherUser) && liftText.includes(me) && liftText.includes('dashboard'), `the lift in the audit trail: ${liftText}`);
  result.liftAuditRow = liftText.replace(/\s+/g, ' ').trim();

  // 7. Settings: the maximum session age is edited with a reason…
  await page.getByRole('link', { name: 'Settings' }).click();
  await page.waitForSelector('#max-age');
  result.maxAgeMinutes = Number(await page.inputValue('#max-age'));
  await page.fill('#max-age', '20');
  // The idle timeout may not exceed the max age: the form says so before asking the API.
  await page.fill('#idle-timeout', '25');
  await page.fill('#policy-reason', 'CAB-1234: tighten privileged sessions');
  await page.getByRole('button', { name: 'Save' }).click();
  const idleError = await page.locator('#policy-error').textContent();
  check(idleError.includes('idle timeout'), `an idle timeout over the max age is refused: ${idleError}`);
  await page.fill('#idle-timeout', '10');
  await page.fill('#policy-reason', '');
  await page.getByRole('button', { name: 'Save' }).click();
  check(await page.evaluate(() => document.getElementById('policy-reason').validity.valueMissing), 'saving needs a reason');
  await page.fill('#policy-reason', 'CAB-1234: tighten privileged sessions');
  await page.getByRole('button', { name: 'Save' }).click();
  await page.locator('#toasts', { hasText: 'Maximum session age set to 20 min, idle timeout 10 min' }).waitFor();
  // …and when Kubernetes takes the tenant over (the test applies a SessionPolicy now), the
  // view says so live and turns editing off.
  await page.waitForSelector('#policy-managed:not([hidden])', { timeout: 30_000 });
  const managed = await page.textContent('#policy-managed');
  check(managed.includes('Managed by Kubernetes'), `managed notice: ${managed}`);
  check(await page.isDisabled('#max-age') && await page.isDisabled('#policy-save'), 'editing is off');
  check(await page.inputValue('#idle-timeout') === '', 'the SessionPolicy has no idle timeout');
  result.managedNotice = managed.trim();
  result.maxAgeMinutesAfter = Number(await page.inputValue('#max-age'));
  result.screenshots.push(await shot(page, '04-settings-managed-by-kubernetes'));

  // A narrow screen (phone) still works: the table becomes cards.
  await page.setViewportSize({ width: 400, height: 820 });
  await page.getByRole('link', { name: /Active sessions/ }).click();
  result.screenshots.push(await shot(page, '06-narrow'));

  // 8. The administrator ends their own session: the dashboard signs out at once.
  await page.setViewportSize({ width: 1360, height: 820 });
  const own = page.locator('#sessions-body tr', { has: page.locator('.you') });
  await own.getByRole('button', { name: /^End session of/ }).click();
  await page.fill('#revoke-reason', 'Leaving the console');
  await page.locator('#revoke-submit').click();
  await page.waitForSelector('#signin:not([hidden])');
  result.signedOutMessage = (await page.textContent('#signin-error')).trim();
  check(await page.evaluate(() => sessionStorage.length === 0), 'the token is forgotten');
  result.screenshots.push(await shot(page, '07-signed-out'));

  check(consoleErrors.length === 0, `no console errors (a CSP violation would be one): ${consoleErrors.join(' | ')}`);
  return result;
});
