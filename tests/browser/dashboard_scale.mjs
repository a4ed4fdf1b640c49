// The dashboard at scale in real Chromium (playwright-core): a tenant with many live sessions.
//
// Run by tests/tests/dashboard_scale.rs, which seeds the store and passes (JSON in
// GRANTFLOW_BROWSER_INPUT): { dashboardUrl, artifacts, chromium, size, live (live sessions
// once the administrator signed in), newestId / oldestId (first row newest / oldest first),
// target: { user, name, sessions } }.
// Proves: first page rows, search by user, a sort header (server-side), the next page, a
// revoke from the page, the overview's numbers. Measures (prints, never asserts): time to
// first rows, each round trip, the tab's JS heap (CDP Performance.getMetrics JSHeapUsedSize
// after a garbage collection, and performance.memory). Every wait is bounded; one JSON
// result line on stdout; a screenshot of any failure.
import { runInChromium, scriptTools } from './chromium.mjs';

const input = JSON.parse(process.env.GRANTFLOW_BROWSER_INPUT ?? '{}');
const WAIT = 30_000;
const { log, shot, check } = scriptTools('dashboard_scale.mjs', input.artifacts);
const rowIds = (page) => page.$$eval('#sessions-body tr', (rows) => rows.map((r) => r.dataset.sessionId));
const firstId = (page) => page.$eval('#sessions-body tr', (r) => r.dataset.sessionId).catch(() => null);

/// Runs `act`, then waits until `done` holds in the page; the milliseconds it took.
async function timed(page, act, done, arg) {
  const began = Date.now();
  await act();
  await page.waitForFunction(done, arg, { timeout: WAIT });
  return Date.now() - began;
}

const result = { size: input.size, screenshots: [] };
await runInChromium({ log, shot }, { executablePath: input.chromium, wait: WAIT, viewport: { width: 1360, height: 900 }, extraArgs: ['--enable-precise-memory-info'] }, async ({ context, page, consoleErrors }) => {

  // 1. Sign in; the first page of sessions shows. Time to first rows: from the start of the
  //    page load after the sign-in redirect to the first render of the rows (the dashboard
  //    marks it), and from the click on Sign in, as the administrator waits.
  await page.goto(input.dashboardUrl);
  const clicked = Date.now();
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForSelector('#sessions-body tr', { timeout: WAIT });
  result.signInToRowsMs = Date.now() - clicked;
  result.timeToFirstRowsMs = Math.round(await page.evaluate(
    () => performance.getEntriesByName('grantflow:sessions-rendered')[0]?.startTime ?? -1,
  ));
  await page.waitForSelector('#live[data-state="live"]');
  const first = await rowIds(page);
  check(first.length === 100, `a page of 100 rows: ${first.length}`);
  check(first[0] === input.newestId, `newest first: ${first[0]} (expected ${input.newestId})`);
  const range = await page.textContent('#sessions-range');
  check(range.includes(input.live.toLocaleString('en')), `the range names every session: ${range}`);

  // The overview: live sessions from the store, the last hour's counts of this replica.
  await page.waitForFunction((live) => document.getElementById('overview').dataset.live === String(live), input.live);
  const legend = await page.$$eval('#overview-legend li', (items) => Object.fromEntries(items.map((i) => [i.dataset.reason, Number(i.dataset.total)])));
  const started = Number(await page.getAttribute('#overview', 'data-started'));
  check(started >= 1, `the session started through Envoy is counted: ${started}`);
  check(legend.invalidToken >= 1, `the invalid token is counted: ${JSON.stringify(legend)}`);
  check(await page.$$eval('#overview-started rect', (r) => r.length) >= 1, 'bars are drawn');
  result.overview = { live: input.live, started, refused: legend };

  // The tab's memory with the page shown.
  const cdp = await context.newCDPSession(page);
  await cdp.send('HeapProfiler.collectGarbage');
  await cdp.send('Performance.enable');
  const { metrics } = await cdp.send('Performance.getMetrics');
  const metric = (name) => metrics.find((m) => m.name === name)?.value;
  result.jsHeapUsedBytes = metric('JSHeapUsedSize');
  result.jsHeapTotalBytes = metric('JSHeapTotalSize');
  result.domNodes = metric('Nodes');
  result.performanceMemoryUsedBytes = await page.evaluate(() => performance.memory?.usedJSHeapSize ?? null);
  result.screenshots.push(await shot(page, '01-first-page'));

  // 2. Sort: the Started header turns to oldest first — the server's order.
  result.sortMs = await timed(
    page,
    () => page.locator('th[data-sort="started"] button').click(),
    (id) => document.querySelector('#sessions-body tr')?.dataset.sessionId === id
      && !document.getElementById('sessions-table').hasAttribute('aria-busy'),
    input.oldestId,
  );
  check(await page.getAttribute('th[data-sort="started"]', 'aria-sort') === 'ascending', 'the header says ascending');
  const sorted = await rowIds(page);
  check(sorted.every((id) => !first.includes(id)) || input.size < 200, 'oldest first shows other rows');

  // 3. Next page: other rows, none of the first page's.
  const before = await rowIds(page);
  result.nextPageMs = await timed(
    page,
    () => page.locator('#sessions-next').click(),
    (id) => document.querySelector('#sessions-body tr')?.dataset.sessionId !== id
      && !document.getElementById('sessions-table').hasAttribute('aria-busy'),
    before[0],
  );
  const second = await rowIds(page);
  check(second.length > 0 && second.every((id) => !before.includes(id)), 'the next page shows other rows');
  check((await page.textContent('#sessions-range')).startsWith('101–'), 'rows 101– are shown');
  check(!(await page.isDisabled('#sessions-prev')), 'a previous page exists');
  result.screenshots.push(await shot(page, '02-sorted-next-page'));

  // 4. Search by the user's name: only that user's sessions.
  result.searchMs = await timed(
    page,
    () => page.fill('#session-filter', input.target.name.slice(0, 8)),
    (user) => {
      const rows = [...document.querySelectorAll('#sessions-body tr')];
      return rows.length > 0 && rows.every((r) => r.dataset.user === user)
        && !document.getElementById('sessions-table').hasAttribute('aria-busy');
    },
    input.target.user,
  );
  const found = await rowIds(page);
  check(found.length === input.target.sessions, `the user's ${input.target.sessions} sessions: ${found}`);
  result.screenshots.push(await shot(page, '03-search'));

  // 5. Revoke one of them from the page: its row goes (live), the store ends it.
  const victim = found[0];
  await page.locator(`tr[data-session-id="${victim}"]`).getByRole('button', { name: /^End session of/ }).click();
  await page.fill('#revoke-reason', 'INC-7: scale test');
  result.revokeMs = await timed(
    page,
    () => page.locator('#revoke-submit').click(),
    (id) => !document.querySelector(`tr[data-session-id="${id}"]`),
    victim,
  );
  result.revoked = victim;
  check((await rowIds(page)).length === input.target.sessions - 1, 'one row fewer');

  // 6. Grouped by user: one row per user with a count.
  await page.fill('#session-filter', '');
  result.groupMs = await timed(
    page,
    () => page.locator('#session-group').check(),
    () => document.getElementById('sessions-table').dataset.mode === 'users'
      && !document.getElementById('sessions-table').hasAttribute('aria-busy')
      && document.querySelectorAll('#sessions-body tr').length > 0,
  );
  result.screenshots.push(await shot(page, '04-grouped'));
  const counts = await page.$$eval('#sessions-body tr', (rows) => rows.map((r) => r.querySelector('.count-pill')?.textContent));
  check(counts.every((c) => /^\d+ sessions?$/.test(c ?? '')), `a count per user: ${counts.slice(0, 3)}`);
  // Expanding one user: that user's sessions, through the per-user lookup.
  const expanded = await page.$eval('#sessions-body tr', (r) => r.dataset.user);
  result.expandMs = await timed(
    page,
    // That user's row by its user, not "the first row": a live event may re-render the
    // grouped rows between reading the first one and the click (a flaky failure in CI).
    () => page.locator(`#sessions-body tr[data-user="${expanded}"]`)
      .getByRole('button', { name: /^Show the sessions of/ }).click(),
    (user) => {
      const rows = [...document.querySelectorAll('#sessions-body tr')];
      return document.getElementById('sessions-table').dataset.mode === 'sessions'
        && rows.length > 0 && rows.every((r) => r.dataset.user === user && r.dataset.sessionId)
        && !document.getElementById('sessions-table').hasAttribute('aria-busy');
    },
    expanded,
  );
  check(await page.isVisible('#session-user'), 'the user chip shows');

  check(consoleErrors.length === 0, `no console errors (a CSP violation would be one): ${consoleErrors.join(' | ')}`);
  return result;
});
