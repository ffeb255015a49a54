// A browser registers over SIP-over-WebSocket: Debian's Chromium, headless, driven by
// playwright-core, runs JsSIP (bundled here with esbuild) in a page of the host's own
// origin. The right password registers (the host lists a `ws` device), a wrong one is
// refused, and closing the page — its socket dropping without an un-REGISTER — ends the
// registration.
//
//   node tests/browser/ws_register.mjs HTTP_PORT SIP_DOMAIN EXTENSION PASSWORD [tls]
//
// With `tls` the page is served over HTTPS and the socket is WSS.

import { runTest } from './lib.mjs';

const [httpPort, domain, extension, password, tls] = process.argv.slice(2);
const secure = tls === 'tls' ? 's' : '';
const base = `http${secure}://127.0.0.1:${httpPort}`;

async function registrations() {
  const response = await fetch(`${base}/api/registrations`);
  return response.json();
}

/** In the page: register with `secret`; 'registered' or why not. */
function register({ wsUrl, uri, secret }) {
  return new Promise((resolve) => {
    const ua = new JsSIP.UA({
      sockets: [new JsSIP.WebSocketInterface(wsUrl)], uri, password: secret,
      register: true, connection_recovery_min_interval: 60, connection_recovery_max_interval: 60,
    });
    window.ua = ua;
    ua.on('registered', () => resolve('registered'));
    ua.on('registrationFailed', (e) => resolve(`failed: ${e.cause}`));
    setTimeout(() => resolve('timeout'), 10000);
    ua.start();
  });
}

runTest(async (browser, bundle) => {
  const args = { wsUrl: `ws${secure}://127.0.0.1:${httpPort}/ws`, uri: `sip:${extension}@${domain}` };
  const page = await browser.newPage();
  await page.goto(`${base}/api/health`);
  await page.addScriptTag({ content: bundle });
  const outcome = await page.evaluate(register, { ...args, secret: password });
  if (outcome !== 'registered') throw new Error(`registration: ${outcome}`);
  const listed = (await registrations()).filter((r) => r.transport === 'ws');
  if (listed.length !== 1) throw new Error(`registrations: ${JSON.stringify(listed)}`);
  console.log(`the browser registered over /ws as device ${JSON.stringify(listed[0].device)}`);

  const intruder = await browser.newPage();
  await intruder.goto(`${base}/api/health`);
  await intruder.addScriptTag({ content: bundle });
  const refused = await intruder.evaluate(register, { ...args, secret: 'wrong' });
  if (!refused.startsWith('failed')) throw new Error(`a wrong password: ${refused}`);
  console.log(`a wrong password was refused (${refused})`);
  await intruder.close();

  await page.close(); // the socket drops; no un-REGISTER is sent
  const deadline = Date.now() + 5000;
  let left = await registrations();
  while (left.some((r) => r.transport === 'ws') && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    left = await registrations();
  }
  if (left.some((r) => r.transport === 'ws')) throw new Error(`still registered: ${JSON.stringify(left)}`);
  console.log('closing the page ended its registration');
});
