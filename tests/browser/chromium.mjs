// What the browser test scripts share: the one Chromium launch (playwright-core driving the
// machine's Chromium, Debian's /usr/bin/chromium, headless with the repo's flags, in a
// throwaway profile, with the page's console errors and uncaught exceptions collected), and
// their log, screenshot and check helpers.
import { createRequire } from 'node:module';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const require = createRequire(new URL('../issuer/package.json', import.meta.url));
const { chromium } = require('playwright-core');

/// No sandbox (root in CI), no GPU, and nothing that reaches outside the machine.
export const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
];

/// Starts Chromium; `close()` stops it and removes the profile. Every wait of the context
/// defaults to `wait` ms.
export async function openChromium({ executablePath, wait, viewport = { width: 1360, height: 820 }, extraArgs = [] }) {
  const profile = mkdtempSync(join(tmpdir(), 'grantflow-chromium-'));
  const close = async (context) => {
    await context?.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  };
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: executablePath ?? '/usr/bin/chromium',
      headless: true,
      args: [...FLAGS, ...extraArgs],
      viewport,
      colorScheme: 'light',
      timeout: 30_000,
    });
    context.setDefaultTimeout(wait);
    const page = context.pages()[0] ?? (await context.newPage());
    const consoleErrors = [];
    page.on('console', (msg) => {
      if (msg.type() === 'error') consoleErrors.push(msg.text());
    });
    page.on('pageerror', (err) => consoleErrors.push(String(err)));
    return { context, page, consoleErrors, close: () => close(context) };
  } catch (err) {
    await close(context);
    throw err;
  }
}

/// A script's helpers: `log` (stderr, tagged with the script's name), `shot` (a screenshot
/// into `artifacts`, which is created) and `check` (throws `message` unless `condition`).
export function scriptTools(name, artifacts) {
  const log = (...args) => console.error(`[${name}]`, ...args);
  mkdirSync(artifacts, { recursive: true });
  const shot = async (page, shotName) => {
    const path = join(artifacts, `${shotName}.png`);
    await page.screenshot({ path, fullPage: false });
    log('screenshot', path);
    return path;
  };
  const check = (condition, message) => {
    if (!condition) throw new Error(message);
  };
  return { log, shot, check };
}

/// Runs a browser script's `body` in a fresh Chromium (`options` as for `openChromium`): what
/// `body` returns goes to stdout as one JSON line; an error is logged with a `failure`
/// screenshot and fails the script (exit code 1); Chromium is closed in every case.
export async function runInChromium({ log, shot }, options, body) {
  let browser;
  try {
    browser = await openChromium(options);
    const result = await body(browser);
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } catch (err) {
    log('FAILED:', err?.stack ?? err);
    if (browser?.page) await shot(browser.page, 'failure').catch(() => {});
    process.exitCode = 1;
  } finally {
    await browser?.close();
  }
}
