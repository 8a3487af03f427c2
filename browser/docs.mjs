// Drives the docs page (Swagger UI, /api/upload/docs) in headless Chromium as a user would:
// "Authorize" with client credentials, "Try it out" on POST /api/auth/token and "Execute" — a
// real token request from the page — then authorize with the token it answered and list the
// uploads the same way. Every request to another host is blocked (the page must need no
// internet). Prints one line of JSON with what the page showed; exit 1 on any failure.
//
// Env: DOCS_URL, CLIENT_ID, CLIENT_SECRET; optional CHROMIUM (default /usr/bin/chromium),
// SCREENSHOT (a PNG of the page after the token request).

import { env, openSession } from './session.mjs';


let messages = [];
let browser;

/// Expands an operation, presses "Try it out" and "Execute"; returns the status and body shown.
async function tryOut(page, operation) {
  const block = page.locator(`#${operation}`);
  await block.locator('.opblock-summary').first().click();
  await block.locator('button.try-out__btn').click();
  await block.locator('button.execute').click();
  const status = block.locator('.live-responses-table .response .response-col_status').first();
  await status.waitFor({ timeout: 15_000 });
  const body = await block.locator('.live-responses-table .response-col_description pre').first().textContent();
  return { status: Number((await status.textContent()).trim()), body };
}

/// Fills one scheme's form in the Authorize dialog and applies it.
async function authorize(page, fill) {
  await page.locator('.auth-wrapper button.authorize').click();
  const dialog = page.locator('.modal-ux');
  await dialog.waitFor();
  await fill(dialog);
  await dialog.locator('button.btn-done').first().click();
  await dialog.waitFor({ state: 'detached' });
}

async function main() {
  const url = new URL(env('DOCS_URL'));
  const session = await openSession(url);
  browser = session.browser;
  messages = session.messages;
  const { page, blocked } = session;

  await page.goto(url.href);
  await page.locator('#operations-auth-issueToken').waitFor({ timeout: 15_000 });

  // Client credentials for the token request (HTTP Basic).
  await authorize(page, async (dialog) => {
    const basic = dialog.locator('.auth-container', { hasText: 'basic' });
    await basic.locator('#auth-basic-username').fill(env('CLIENT_ID'));
    await basic.locator('#auth-basic-password').fill(env('CLIENT_SECRET'));
    await basic.locator('button.authorize').click();
  });
  const token = await tryOut(page, 'operations-auth-issueToken');
  const issued = JSON.parse(token.body);
  if (token.status !== 200 || !issued.token) throw new Error(`token request answered ${token.status}: ${token.body}`);
  if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT, fullPage: false });

  // The token it answered, for the upload API.
  await authorize(page, async (dialog) => {
    const bearer = dialog.locator('.auth-container', { hasText: 'bearer' });
    await bearer.locator('#auth-bearer-value').fill(issued.token);
    await bearer.locator('button.authorize').click();
  });
  const list = await tryOut(page, 'operations-upload-listUploads');
  const uploads = JSON.parse(list.body);

  console.log(JSON.stringify({
    token_status: token.status,
    token_type: issued.token_type,
    token_scope: issued.scope,
    list_status: list.status,
    uploads_listed: Array.isArray(uploads.uploads) ? uploads.uploads.length : null,
    blocked,
  }));
}

main()
  .then(() => browser?.close())
  .catch(async (err) => {
    console.error(err?.stack ?? String(err));
    console.error(messages.join('\n'));
    await browser?.close().catch(() => {});
    process.exit(1);
  });
