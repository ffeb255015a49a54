// A browser vanishes mid-call: Chromium runs JsSIP in a page of the host's origin,
// registers over /ws and calls NUMBER; once the call is up the page is closed without a
// BYE (its WebSocket drops). The host must end the call itself: no call left, the record
// says why.
//
//   node tests/browser/webrtc_vanish.mjs HTTP_PORT SIP_DOMAIN EXTENSION PASSWORD NUMBER

import { runTest } from './lib.mjs';

const [httpPort, domain, extension, password, number] = process.argv.slice(2);
const base = `http://127.0.0.1:${httpPort}`;

async function api(path) {
  return (await fetch(`${base}${path}`)).json();
}

runTest(async (browser, bundle) => {
  const page = await browser.newPage();
  const up = new Promise((resolve) => page.exposeFunction('confirmed', resolve));
  await page.goto(`${base}/api/health`);
  await page.addScriptTag({ content: bundle });
  await page.evaluate(({ wsUrl, uri, secret, target }) => {
    const ua = new JsSIP.UA({
      sockets: [new JsSIP.WebSocketInterface(wsUrl)], uri, password: secret, register: true,
    });
    ua.on('registered', () => {
      const session = ua.call(target, {
        mediaConstraints: { audio: true, video: false }, pcConfig: { iceServers: [] },
      });
      session.on('confirmed', () => window.confirmed());
    });
    ua.start();
  }, {
    wsUrl: `ws://127.0.0.1:${httpPort}/ws`, uri: `sip:${extension}@${domain}`, secret: password,
    target: `sip:${number}@${domain}`,
  });
  await Promise.race([up, new Promise((_, reject) => setTimeout(() => reject(new Error('no call')), 20000))]);
  if ((await api('/api/calls')).length !== 1) throw new Error('the call is not up');
  console.log('the call is up; the page closes without hanging up');
  await page.close();
  const deadline = Date.now() + 5000;
  while ((await api('/api/calls')).length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  const left = await api('/api/calls');
  if (left.length) throw new Error(`calls left: ${JSON.stringify(left)}`);
  const [cdr] = await api('/api/cdrs?limit=1');
  console.log(`the host ended the call: ${cdr.end_reason}`);
  if (cdr.end_reason !== "the device's connection closed") throw new Error(JSON.stringify(cdr));
});
