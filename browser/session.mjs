// What both drivers need: an env reader and a Chromium page that keeps the browser's console
// messages (for a failure report) and refuses every request to a host other than the one under
// test (the pages must need no internet).

import { chromium } from 'playwright-core';

export function env(name, fallback) {
  const value = process.env[name] ?? fallback;
  if (value === undefined || value === '') throw new Error(`${name} is not set`);
  return value;
}

/// Launches Debian's Chromium (`CHROMIUM`) with a 1280x900 page bound to `url`'s host.
export async function openSession(url) {
  const browser = await chromium.launch({
    executablePath: env('CHROMIUM', '/usr/bin/chromium'),
    headless: true,
    args: ['--no-sandbox'],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const messages = [];
  const pageErrors = [];
  page.on('console', (msg) => messages.push(`[${msg.type()}] ${msg.text()}`));
  page.on('pageerror', (err) => { pageErrors.push(err.message); messages.push(`[pageerror] ${err.message}`); });
  const blocked = [];
  await page.route('**/*', (route) => {
    const target = new URL(route.request().url());
    if (target.host === url.host) return route.continue();
    blocked.push(target.href);
    return route.abort('blockedbyclient');
  });
  return { browser, page, messages, pageErrors, blocked };
}
