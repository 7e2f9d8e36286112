// The chat page at / in headless Chromium (Debian's chromium, driven by playwright-core): enter the API key, attach
// an image, ask, watch the answer stream in, ask a follow-up. The page's answer must equal the API's for the same
// conversation (greedy decoding is deterministic). A screenshot lands in $IRIS_SERVE_ARTIFACTS when set.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { makeModel, startServer, timeLimit, dataUrl, post, SOURCE_DIR } from './lib/harness.mjs';

timeLimit(100);
const KEY = 'page-key-42';
const CHROMIUM = process.env.CHROMIUM || ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find(existsSync);
let server, browser;

before(async () => {
  assert.ok(CHROMIUM, 'Chromium not found: install Debian\'s chromium (scripts/install-deps.sh) or set CHROMIUM');
  server = await startServer(makeModel(), ['--api-key', KEY]);
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true,
    // The machine has no network beyond loopback: keep Chromium from trying to reach Google's services.
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'] });
});
after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
});

test('the page is served with its script and style, no secrets, strict CSP', async () => {
  const res = await fetch(server.url + '/');
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/html/);
  assert.match(res.headers.get('content-security-policy'), /script-src 'self'/);
  const html = await res.text();
  assert.ok(html.includes('/app.js') && html.includes('/style.css'));
  assert.ok(!html.includes(KEY));
  for (const [path, type] of [['/app.js', /javascript/], ['/style.css', /text\/css/]]) {
    const r = await fetch(server.url + path);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), type);
  }
});

test('upload an image, ask, see the streamed answer; then a follow-up', async () => {
  const page = await browser.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push('page error: ' + e.message));
  page.on('console', (m) => { if (m.type() === 'error') problems.push('console: ' + m.text()); });
  await page.goto(server.url + '/');

  // Without the key the model list fails and the page says so; with it, the model's name shows.
  await page.waitForFunction(() => document.getElementById('status').textContent.includes('API key'));
  await page.click('#settings summary');
  await page.fill('#api-key', KEY);
  await page.dispatchEvent('#api-key', 'change');
  await page.fill('#max-tokens', '12');
  await page.dispatchEvent('#max-tokens', 'change');
  await page.waitForFunction(() => document.getElementById('model').textContent === 'tiny');
  await page.click('#settings summary');
  problems.length = 0;  // the 401 before the key was expected

  const imagePath = join(SOURCE_DIR, 'examples', 'scene1.png');
  await page.setInputFiles('#image-input', imagePath);
  await page.waitForSelector('#attachments .thumb img');
  await page.fill('#prompt', 'What is in this picture?');
  await page.click('#send');
  await page.waitForSelector('.msg.assistant[data-state="done"]', { timeout: 30000 });
  const first = await page.$eval('.msg.assistant', (el) => el.firstChild.data);
  assert.ok(first.length > 0, 'empty answer');
  assert.equal(await page.$$eval('.msg.user img', (els) => els.length), 1);
  assert.equal(await page.$eval('.msg.assistant', (el) => el.dataset.finish), 'length');
  assert.match(await page.$eval('.msg.assistant .meta', (el) => el.textContent), /12 completion tokens/);

  // The same conversation through the API gives the same (greedy) answer.
  const { readFileSync } = await import('node:fs');
  const url = dataUrl(readFileSync(imagePath));
  const userMsg = { role: 'user', content: [{ type: 'image_url', image_url: { url } },
    { type: 'text', text: 'What is in this picture?' }] };
  const api = await post(server, { model: 'tiny', messages: [userMsg], max_tokens: 12, temperature: 0 },
    { headers: { Authorization: `Bearer ${KEY}` } });
  assert.equal(api.status, 200);
  assert.equal(first, api.json.choices[0].message.content);

  // A follow-up keeps the conversation (image included) and streams a second answer.
  await page.fill('#prompt', 'Tell me more.');
  await page.press('#prompt', 'Enter');
  await page.waitForFunction(() => document.querySelectorAll('.msg.assistant[data-state="done"]').length === 2,
    null, { timeout: 30000 });
  const second = await page.$$eval('.msg.assistant', (els) => els[1].firstChild.data);
  const api2 = await post(server, { model: 'tiny', max_tokens: 12, temperature: 0, messages: [userMsg,
    { role: 'assistant', content: first }, { role: 'user', content: [{ type: 'text', text: 'Tell me more.' }] }] },
  { headers: { Authorization: `Bearer ${KEY}` } });
  assert.equal(second, api2.json.choices[0].message.content);

  if (process.env.IRIS_SERVE_ARTIFACTS) {
    await page.screenshot({ path: join(process.env.IRIS_SERVE_ARTIFACTS, 'chat_page.png'), fullPage: true });
  }
  assert.deepEqual(problems, []);
  await page.close();
});

test('a bad image gets a visible error, not a broken page', async () => {
  const page = await browser.newPage();
  await page.goto(server.url + '/');
  await page.evaluate((key) => localStorage.setItem('iris.apiKey', key), KEY);
  await page.reload();
  await page.waitForFunction(() => document.getElementById('model').textContent === 'tiny');
  // A truncated PNG, pasted in as a file: the server refuses it and the page shows the reason.
  const png = (await import('node:fs')).readFileSync(join(SOURCE_DIR, 'examples', 'scene1.png'));
  await page.setInputFiles('#image-input', { name: 'broken.png', mimeType: 'image/png',
    buffer: png.subarray(0, 100) });
  await page.fill('#prompt', 'What is this?');
  await page.click('#send');
  await page.waitForSelector('.msg.error');
  assert.match(await page.textContent('.msg.error'), /invalid PNG|truncated|Invalid image/i);
  assert.equal(await page.isEnabled('#send'), true);
  await page.close();
});
