// The web console in a real browser: Debian's chromium driven by playwright-core.
//
// Run by tests/browser.rs, which starts the server (with a fake Gemini that echoes the
// caller) and passes everything through the environment:
//   BASE_URL, API_TOKEN, CHROMIUM (the browser binary), FAKE_AUDIO (a WAV the browser's
//   fake microphone plays), SCREENSHOTS (folder for one screenshot per view), and
//   RECORDING_WAV (a stereo WAV served as a recording), DOCS_SCREENSHOT (optional: where
//   to also save the call page's screenshot).
//
// Prints one line per check and `N passed, N failed` at the end; exits 1 on any failure.

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (this script is run by tests/browser.rs)`);
  return value;
};
const BASE_URL = env('BASE_URL');
const API_TOKEN = env('API_TOKEN');
const SCREENSHOTS = env('SCREENSHOTS');
const WAIT_MS = 20_000;
mkdirSync(SCREENSHOTS, { recursive: true });

let passed = 0;
let failed = 0;
async function check(name, body) {
  try {
    await body();
    passed++;
    console.log(`ok   ${name}`);
  } catch (error) {
    failed++;
    console.log(`FAIL ${name}: ${error.stack ?? error}`);
  }
}
function assert(condition, message) {
  if (!condition) throw new Error(message);
}

const browser = await chromium.launch({
  executablePath: env('CHROMIUM'),
  headless: true,
  args: [
    '--no-sandbox', // CI runs as root
    '--use-fake-ui-for-media-stream',
    '--use-fake-device-for-media-stream',
    `--use-file-for-fake-audio-capture=${env('FAKE_AUDIO')}`,
    '--autoplay-policy=no-user-gesture-required',
  ],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
const origin = new URL(BASE_URL).origin;
const foreignRequests = [];
const policyViolations = [];
const pageErrors = [];
page.on('request', (request) => {
  const url = new URL(request.url());
  if (!['data:', 'blob:'].includes(url.protocol) && url.origin !== origin && url.origin.replace(/^ws/, 'http') !== origin) {
    foreignRequests.push(request.url());
  }
});
page.on('console', (message) => {
  if (/Content.Security.Policy/i.test(message.text())) policyViolations.push(message.text());
});
page.on('pageerror', (error) => pageErrors.push(String(error)));
const shot = (name) => page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });

await check('nothing works without the token', async () => {
  await page.goto(`${BASE_URL}/`);
  await page.locator('#sign-in').waitFor();
  assert(await page.locator('#nav').isHidden(), 'navigation is shown before signing in');
  const status = await page.evaluate(async () => (await fetch('/calls')).status);
  assert(status === 401, `GET /calls without the token answered ${status}`);
  const web = await page.evaluate(async () => (await fetch('/web/calls', { method: 'POST' })).status);
  assert(web === 401, `POST /web/calls without the token answered ${web}`);
  await shot('sign-in');
});

await check('a wrong token is refused', async () => {
  await page.locator('#token').fill('not-the-token');
  await page.keyboard.press('Enter');
  await page.locator('#sign-in-error').getByText('not this server').waitFor({ timeout: WAIT_MS });
  assert(await page.locator('#nav').isHidden(), 'signed in with a wrong token');
  assert(await page.evaluate(() => sessionStorage.length) === 0, 'a wrong token was kept');
});

await check('signing in with the keyboard opens the console', async () => {
  await page.locator('#token').fill('');
  await page.locator('#token').focus();
  await page.keyboard.type(API_TOKEN);
  await page.keyboard.press('Tab'); // past the hint to the button
  await page.keyboard.press('Enter');
  await page.locator('#talk-button').waitFor({ timeout: WAIT_MS });
  assert(await page.locator('#nav').isVisible(), 'navigation hidden after signing in');
  await shot('talk');
});

let callId = null;
await check('talking to the agent: the agent\'s audio reaches the page and plays', async () => {
  await page.locator('#talk-button').click();
  await page.locator('#talk-button').getByText('Hang up').waitFor({ timeout: WAIT_MS });
  // Echoed speech comes back: frames received, played through the jitter buffer, and
  // louder than silence at the speaker.
  await page.waitForFunction(() => {
    const stats = document.querySelector('#talk-stats')?.dataset ?? {};
    return Number(stats.received) >= 100 && Number(stats.played) >= 50 && Number(stats.peak) > 0.02;
  }, null, { timeout: WAIT_MS, polling: 100 });
  const stats = await page.locator('#talk-stats').evaluate((element) => ({ ...element.dataset }));
  console.log(`     frames received ${stats.received}, played ${stats.played}, peak level ${stats.peak}`);
  callId = await page.locator('#talk-record a').textContent();
  await shot('talk-in-call');
  await page.locator('#talk-button').click();
  await page.locator('#talk-status').getByText('Call ended').waitFor({ timeout: WAIT_MS });
});

await check('the call appears in the list', async () => {
  assert(callId, 'no call id was shown');
  await page.locator('nav a[data-view="calls"]').click();
  const row = page.locator(`tr[data-id="${callId}"]`);
  await row.waitFor({ timeout: WAIT_MS });
  await page.locator(`tr[data-id="${callId}"][data-status="completed"]`).waitFor({ timeout: WAIT_MS });
  assert((await row.textContent()).includes('web'), 'the row does not say web');
  await shot('calls');
  await page.setViewportSize({ width: 390, height: 844 });
  await shot('calls-phone-width');
  await page.setViewportSize({ width: 1280, height: 900 });
});

await check('the list filters by direction', async () => {
  await page.locator('#filter-direction').selectOption('outbound');
  await page.getByText('No calls match.').waitFor({ timeout: WAIT_MS });
  await page.locator('#filter-direction').selectOption('inbound');
  await page.locator(`tr[data-id="${callId}"]`).waitFor({ timeout: WAIT_MS });
});

await check('the call page shows the transcript', async () => {
  await page.locator(`tr[data-id="${callId}"] a`).click();
  await page.locator('.transcript').getByText('hello from the browser').waitFor({ timeout: WAIT_MS });
  await page.locator('.transcript').getByText('this is your agent').waitFor({ timeout: WAIT_MS });
  await page.locator('#section-status-history').waitFor();
  await shot('call');
});

await check('timeline, tool calls, latency chart and recording are drawn when the record has them', async () => {
  // The record as a server with the timeline, latency and recordings gives it (fields fixed
  // for this round); the recording is a stereo WAV made by the test.
  const later = (at, ms) => new Date(new Date(at).getTime() + ms).toISOString();
  await page.route(`**/calls/${callId}`, async (route) => {
    const response = await route.fetch();
    const record = await response.json();
    const t0 = record.created_at;
    const agentLine = record.transcript.find((line) => line.who === 'agent');
    // The server's mark on a line the caller talked over (cut to what they heard).
    agentLine.interrupted = true;
    record.events = [
      { at: later(t0, 5), kind: 'stream_start' },
      { at: later(t0, 180), kind: 'gemini_connected' },
      { at: later(t0, 340), kind: 'gemini_setup_complete' },
      { at: later(t0, 950), kind: 'first_agent_audio' },
      { at: later(t0, 2100), kind: 'caller_turn_end' },
      { at: later(t0, 2712), kind: 'agent_turn_start', detail: { latency_ms: 612 } },
      { at: later(t0, 3050), kind: 'tool_call', detail: { name: 'lookup_order', duration_ms: 140, outcome: 'ok' } },
      { at: later(agentLine.at, 400), kind: 'interrupted' },
      { at: later(t0, 4400), kind: 'caller_turn_end' },
      { at: later(t0, 4940), kind: 'agent_turn_start', detail: { latency_ms: 540 } },
    ];
    record.events.sort((a, b) => new Date(a.at) - new Date(b.at));
    record.events.push({ at: later(record.events.at(-1).at, 300), kind: 'end' });
    record.events_dropped = 0;
    record.latency = {
      greeting_ms: 930, greeting_from_start_ms: 610,
      response_ms: { turns: [612, 540, 701, 488], p50: 576, p95: 701, max: 701 },
      barge_ins: 1, resumptions: 0,
    };
    record.tool_events = [
      { name: 'lookup_order', detail: { id: 'fc-1', args: { order_number: 'AB729' } }, at: later(t0, 3050) },
      { name: 'lookup_order', detail: { id: 'fc-1', response: { status: 'shipped', eta: 'Thursday' } }, at: later(t0, 3190) },
    ];
    record.recording_url = `/calls/${record.id}/recording`;
    await route.fulfill({ response, json: record });
  });
  await page.route(`**/calls/${callId}/recording`, (route) =>
    route.fulfill({ path: env('RECORDING_WAV'), contentType: 'audio/wav' }));
  await page.reload();
  await page.locator('.timeline tbody tr').nth(10).waitFor({ timeout: WAIT_MS });
  assert(await page.locator('.chart rect.bar').count() === 4, 'one bar per turn');
  await page.locator('.transcript .badge').getByText('interrupted').waitFor();
  await page.locator('.tools').getByText('shipped').waitFor();
  await page.locator('.player').getByText('caller left, agent right').waitFor({ timeout: WAIT_MS });
  const source = await page.locator('.player audio').getAttribute('src');
  assert(source?.startsWith('blob:'), `the player plays ${source}`);
  await shot('call-full');
  if (process.env.DOCS_SCREENSHOT) await page.screenshot({ path: process.env.DOCS_SCREENSHOT, fullPage: true });
  await page.unroute(`**/calls/${callId}`);
  await page.unroute(`**/calls/${callId}/recording`);
});

await check('starting a call shows the server\'s refusal inline', async () => {
  await page.locator('nav a[data-view="start"]').click();
  await page.locator('#call-to').fill('+15551234567');
  await page.locator('#start-form button[type=submit]').click();
  await page.locator('#start-result .error').waitFor({ timeout: WAIT_MS });
  const message = await page.locator('#start-result').textContent();
  assert(/provider/i.test(message), `unexpected message: ${message}`);
  await shot('start');
});

await check('signing out forgets the token', async () => {
  await page.locator('#sign-out').click();
  await page.locator('#sign-in').waitFor();
  assert(await page.evaluate(() => sessionStorage.length) === 0, 'the token is still stored');
});

await check('no third-party request, no policy violation, no script error', async () => {
  assert(foreignRequests.length === 0, `requests elsewhere: ${foreignRequests.join(', ')}`);
  assert(policyViolations.length === 0, `CSP: ${policyViolations.join(' | ')}`);
  assert(pageErrors.length === 0, `errors: ${pageErrors.join(' | ')}`);
});

await browser.close();
console.log(`browser: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
