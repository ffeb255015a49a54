// The browser phone at /phone, used as a person would: sign in, press Take over to pull
// the user's live call from the desk phone, then — when told on stdin ("flip") — press
// Flip to push it back. Prints each step; the host's records are checked by the caller.
//
//   node tests/browser/phone_ui.mjs HTTP_PORT EXTENSION PASSWORD

import { createInterface } from 'node:readline';
import { runTest } from './lib.mjs';

const [httpPort, extension, password] = process.argv.slice(2);
const input = createInterface({ input: process.stdin });
const lines = input[Symbol.asyncIterator]();

async function statusBecomes(page, text) {
  await page.waitForFunction((t) => document.getElementById('status').textContent === t, text, { timeout: 20000 });
}

runTest(async (browser) => {
  const page = await browser.newPage();
  await page.goto(`http://127.0.0.1:${httpPort}/phone`);
  await page.fill('#extension', extension);
  await page.fill('#password', password);
  await page.click('#signin-button');
  await statusBecomes(page, 'registered');
  console.log('signed in');
  await page.click('#takeover');
  await statusBecomes(page, 'in call');
  console.log('took over');
  for (;;) {
    const { value, done } = await lines.next();
    if (done) throw new Error('stdin closed before "flip"');
    if (value.trim() === 'flip') break;
  }
  input.close();
  await page.waitForTimeout(1000);
  await page.click('#flip');
  await statusBecomes(page, 'registered'); // released once the desk answered
  console.log('flipped back');
});
