// Drives the gateway's upload console (/console) in headless Chromium, as a user would:
// signs in, uploads GOOD_CSV through the file input and BAD_CSV by drag and drop, waits for the
// engine to load both, checks the rejected rows and the uploads list, takes a screenshot and
// prints one line of JSON with what the page showed. Every request to another host is blocked,
// which proves the page needs no internet. Exit 0 on success, 1 (with the browser's console
// messages on stderr) on any failure.
//
// Env: CONSOLE_URL, CLIENT_ID, CLIENT_SECRET, GOOD_CSV, BAD_CSV, SCREENSHOT; optional GOOD_XLSX
// (a workbook, uploaded third through the file input), CHROMIUM (default /usr/bin/chromium),
// CHUNK_BYTES (default 1 MiB, passed to the page as ?chunk_bytes= so that a few-MB file goes as
// several chunks), TIMEOUT_SECS (default 120, the wait for each upload).

import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { env, openSession } from './session.mjs';


const TERMINAL = ['done', 'failed', 'aborted', 'undone', 'refused', 'error'];

let messages = []; // the browser's console, for the failure report
let browser;

async function main() {
  const url = new URL(env('CONSOLE_URL'));
  if (!url.searchParams.has('chunk_bytes')) url.searchParams.set('chunk_bytes', env('CHUNK_BYTES', '1048576'));
  const clientId = env('CLIENT_ID');
  const clientSecret = env('CLIENT_SECRET');
  const goodCsv = env('GOOD_CSV');
  const badCsv = env('BAD_CSV');
  const screenshot = env('SCREENSHOT');
  const timeout = Number(env('TIMEOUT_SECS', '120')) * 1000;

  const session = await openSession(url);
  browser = session.browser;
  messages = session.messages;
  const { page, pageErrors, blocked } = session;

  await page.goto(url.href);
  await page.fill('#client-id', clientId);
  await page.fill('#client-secret', clientSecret);
  await page.click('#sign-in');
  await page.locator('#signed-in:not([hidden]), #sign-in-error:not([hidden])').first().waitFor({ timeout: 10_000 });
  if (await page.isVisible('#sign-in-error')) throw new Error(await page.textContent('#sign-in-error'));
  await page.locator('#signed-in').filter({ hasText: clientId }).waitFor({ state: 'visible', timeout: 10_000 });

  // The dataset picker is filled from GET /api/datasets.
  await page.locator('#dataset option', { hasText: 'date,content,amount,type' }).waitFor({ state: 'attached', timeout: 10_000 });
  const datasetsOffered = await page.locator('#dataset option').allTextContents();

  const cards = page.locator('.file-card');

  // 1. The good file, through the file input.
  await page.setInputFiles('#files', goodCsv);
  const good = cards.nth(0);
  const goodState = await waitForEnd(page, 0, timeout);
  if (goodState !== 'done') throw new Error(`good upload ended ${goodState}: ${await good.locator('.message').textContent()}`);
  const goodFolder = await good.getAttribute('data-folder');

  // 2. The bad file, by a synthetic drag and drop of a File built from its bytes.
  const bytes = (await readFile(badCsv)).toString('base64');
  const dataTransfer = await page.evaluateHandle(({ name, base64 }) => {
    const raw = atob(base64);
    const data = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i += 1) data[i] = raw.charCodeAt(i);
    const transfer = new DataTransfer();
    transfer.items.add(new File([data], name, { type: 'text/csv' }));
    return transfer;
  }, { name: basename(badCsv), base64: bytes });
  const zone = page.locator('#drop-zone');
  for (const type of ['dragenter', 'dragover', 'drop']) await zone.dispatchEvent(type, { dataTransfer });
  await cards.nth(1).waitFor({ timeout: 5_000 });
  const bad = cards.nth(1);
  const badState = await waitForEnd(page, 1, timeout);
  if (badState !== 'done' && badState !== 'failed') {
    throw new Error(`bad upload ended ${badState}: ${await bad.locator('.message').textContent()}`);
  }
  await bad.locator('.rejected-table tbody tr').first().waitFor({ timeout: 30_000 });
  const badFolder = await bad.getAttribute('data-folder');

  // 3. An XLSX workbook, if given, through the file input: sent whole, converted by the server.
  let workbook = null;
  if (process.env.GOOD_XLSX) {
    await page.setInputFiles('#files', process.env.GOOD_XLSX);
    const card = cards.nth(2);
    const state = await waitForEnd(page, 2, timeout);
    if (state !== 'done') throw new Error(`workbook upload ended ${state}: ${await card.locator('.message').textContent()}`);
    workbook = { folder: await card.getAttribute('data-folder'), state, rows: await numberIn(card, '.rows-loaded') };
  }

  // 4. The uploads list shows them all.
  await page.click('#refresh-uploads');
  for (const folder of [goodFolder, badFolder, workbook?.folder].filter(Boolean)) {
    await page.locator(`#uploads tr[data-folder="${folder}"]`).waitFor({ timeout: 10_000 });
  }

  if (pageErrors.length) throw new Error(`errors in the page: ${pageErrors.join('; ')}`);
  const csp = messages.filter((m) => m.includes('Content Security Policy'));
  if (csp.length) throw new Error(`Content-Security-Policy violations: ${csp.join('; ')}`);
  if (blocked.length) process.stderr.write(`blocked requests to other hosts: ${blocked.join(', ')}\n`);

  await page.screenshot({ path: screenshot, fullPage: true });
  const result = {
    good_folder: goodFolder,
    good_state: goodState,
    good_rows_loaded: await numberIn(good, '.rows-loaded'),
    bad_folder: badFolder,
    bad_state: badState,
    bad_rejected_shown: await bad.locator('.rejected-table tbody tr').count(),
    bad_rows_rejected: await numberIn(bad, '.rows-rejected'),
    uploads_listed: await page.locator('#uploads tr[data-folder]').count(),
    datasets_offered: datasetsOffered,
    xlsx_folder: workbook?.folder ?? null,
    xlsx_state: workbook?.state ?? null,
    xlsx_rows_loaded: workbook?.rows ?? null,
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

// Waits until the index-th card's data-state is a final one, and returns it.
async function waitForEnd(page, index, timeout) {
  const handle = await page.waitForFunction(({ index, terminal }) => {
    const card = document.querySelectorAll('.file-card')[index];
    return card && terminal.includes(card.dataset.state) && card.dataset.state;
  }, { index, terminal: TERMINAL }, { timeout, polling: 250 });
  return handle.jsonValue();
}

async function numberIn(card, selector) {
  const text = await card.locator(selector).textContent();
  return Number(text.replace(/[^0-9]/g, ''));
}

try {
  await main();
  await browser.close();
  process.exit(0);
} catch (err) {
  process.stderr.write(`console.mjs failed: ${err.stack ?? err}\n`);
  process.stderr.write(`browser console:\n${messages.map((m) => `  ${m}`).join('\n')}\n`);
  await browser?.close().catch(() => {});
  process.exit(1);
}
