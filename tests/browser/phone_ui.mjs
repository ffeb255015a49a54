// The browser phone at /phone, used as a person would: sign in, see the user's live call
// (on the desk phone) in the call list, press Take over to pull it, see the list say it
// is on this browser now, then — when told on stdin ("flip") — press Flip to push it
// back. Prints each step; the host's records are checked by the caller.
//
//   node tests/browser/phone_ui.mjs HTTP_PORT EXTENSION PASSWORD CALLER

import { runTest, toldOnStdin } from './lib.mjs';

const [httpPort, extension, password, caller] = process.argv.slice(2);

async function statusBecomes(page, text) {
  await page.waitForFunction((t) => document.getElementById('status').textContent === t, text, { timeout: 20000 });
}

/** Wait until the call list has one call, starting with `prefix`; its text. */
async function callListShows(page, prefix) {
  const found = await page.waitForFunction((p) => {
    const items = [...document.querySelectorAll('#calls li')].map((li) => li.textContent);
    return items.length === 1 && items[0].startsWith(p) && items[0];
  }, prefix, { timeout: 10000 });
  return found.jsonValue();
}

runTest(async (browser) => {
  const page = await browser.newPage();
  await page.goto(`http://127.0.0.1:${httpPort}/phone`);
  await page.fill('#extension', extension);
  await page.fill('#password', password);
  await page.click('#signin-button');
  await statusBecomes(page, 'registered');
  console.log('signed in');
  const listed = await callListShows(page, `${caller} (incoming) on `);
  console.log(`call list: ${listed}`);
  await page.click('#takeover');
  await statusBecomes(page, 'in call');
  const moved = await page.waitForFunction((before) => {
    const items = [...document.querySelectorAll('#calls li')].map((li) => li.textContent);
    return items.length === 1 && items[0] !== before && items[0];
  }, listed, { timeout: 10000 });
  console.log(`call list: ${await moved.jsonValue()}`);
  console.log('took over');
  await toldOnStdin('flip');
  await page.waitForTimeout(1000);
  await page.click('#flip');
  await statusBecomes(page, 'registered'); // released once the desk answered
  console.log('flipped back');
});
