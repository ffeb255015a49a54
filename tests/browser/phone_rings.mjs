// The browser phone at /phone ringing: signed in, it rings for an incoming call (a
// ringtone and a desktop notification), answers with Answer, shows the call's length as
// it goes, and signs out (its call-list session with it).
//
//   node tests/browser/phone_rings.mjs HTTP_PORT EXTENSION PASSWORD

import { runTest } from './lib.mjs';

const [httpPort, extension, password] = process.argv.slice(2);

runTest(async (browser) => {
  const origin = `http://127.0.0.1:${httpPort}`;
  const context = await browser.newContext();
  await context.grantPermissions(['notifications'], { origin });
  const page = await context.newPage();
  // Count the notifications the page shows.
  await page.addInitScript(() => {
    window.notified = [];
    const Real = window.Notification;
    window.Notification = class extends Real {
      constructor(title, options) { super(title, options); window.notified.push(`${title}: ${options.body}`); }
    };
    window.Notification.requestPermission = Real.requestPermission.bind(Real);
    Object.defineProperty(window.Notification, 'permission', { get: () => Real.permission });
  });
  await page.goto(`${origin}/phone`);
  await page.fill('#extension', extension);
  await page.fill('#password', password);
  await page.click('#signin-button');
  await page.waitForFunction(() => document.getElementById('status').textContent === 'registered');
  console.log('registered');

  await page.waitForFunction(() => document.body.dataset.ringing === 'true', null, { timeout: 20000 });
  console.log(`ringing: ${await page.textContent('#status')}`);
  console.log(`notified: ${await page.evaluate(() => window.notified.join(' | '))}`);
  await page.click('#answer');
  await page.waitForFunction(() => document.getElementById('status').textContent === 'in call');
  if (await page.evaluate(() => document.body.dataset.ringing)) throw new Error('still ringing after the answer');
  await page.waitForFunction(() => document.getElementById('timer').textContent === '0:02', null, { timeout: 5000 });
  console.log('timer: 0:02');
  await page.waitForFunction(() => document.getElementById('status').textContent.startsWith('registered'),
    null, { timeout: 20000 });
  if (await page.textContent('#timer')) throw new Error('the timer goes on after the call');
  console.log('call over');

  await page.click('#signout');
  await page.waitForFunction(() => document.getElementById('status').textContent === 'signed out');
  if (!(await page.isVisible('#signin'))) throw new Error('the sign-in form is not back');
  console.log('signed out');
});
