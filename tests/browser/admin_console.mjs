// The admin console at /admin, used as an admin would: a wrong token is refused, the
// right one signs in; then — when told on stdin ("go": the call is up, the browser
// having started first, however long that took) — the console lists the user's two
// devices and the live call; Flip on the call pushes it to the user's other device;
// night mode goes on for an hour for a location and the console shows until when. Prints
// each step; the host's state is checked by the caller.
//
//   node tests/browser/admin_console.mjs HTTP_PORT TOKEN LOCATION

import { runTest, toldOnStdin } from './lib.mjs';

const [httpPort, token, location] = process.argv.slice(2);

async function rows(page, table) {
  return page.$$eval(`#${table} tbody tr`, (trs) => trs.map((tr) => tr.textContent));
}

runTest(async (browser) => {
  const page = await browser.newPage();
  await page.goto(`http://127.0.0.1:${httpPort}/admin`);

  await page.fill('#token', 'not-the-token');
  await page.click('#signin-button');
  await page.waitForFunction(() => document.getElementById('message').textContent === 'the token was refused');
  if (await page.isVisible('#console')) throw new Error('signed in with a wrong token');
  console.log('wrong token refused');

  await page.fill('#token', token);
  await page.click('#signin-button');
  await page.waitForSelector('#console', { state: 'visible' });
  console.log('signed in');
  await toldOnStdin('go');
  await page.waitForFunction(() => document.querySelectorAll('#registrations tbody tr').length === 2,
    null, { timeout: 10000 });
  console.log(`registrations: ${(await rows(page, 'registrations')).join(' | ')}`);
  await page.waitForFunction(() => document.querySelectorAll('#calls tbody tr').length === 1,
    null, { timeout: 10000 });
  console.log(`live call: ${(await rows(page, 'calls'))[0]}`);
  const scripts = await rows(page, 'scripts');
  console.log(`scripts: ${scripts.join(' | ')}`);

  await page.click('#calls tbody tr button.flip');
  await page.waitForFunction(() => document.getElementById('message').textContent.includes('flip of'),
    null, { timeout: 5000 });
  const said = await page.textContent('#message');
  if (!said.includes('requested')) throw new Error(`flip: ${said}`);
  console.log(`flip: ${said}`);

  const row = `#locations tbody tr[data-location="${location}"]`;
  await page.selectOption(`${row} select.night-for`, '3600');
  await page.click(`${row} button.night`);
  await page.waitForFunction((r) => document.querySelector(`${r} td.override`).textContent === 'closed'
    && document.querySelector(`${r} td.expiry`).textContent.startsWith('until '), row, { timeout: 5000 });
  console.log(`night mode: ${await page.textContent(row)}`);

  await page.click('#signout');
  await page.waitForSelector('#signin', { state: 'visible' });
  console.log('signed out');
});
