// A browser rung by the host answers with WebRTC: Chromium (fake microphone) runs JsSIP
// in a page of the host's origin, registers over /ws, prints "registered", answers the
// first call it is offered (the host's WebRTC offer, made by a media bridge), checks the
// peer connection sends and receives audio, and keeps the call until the far end hangs up.
//
//   node tests/browser/webrtc_answer.mjs HTTP_PORT SIP_DOMAIN EXTENSION PASSWORD

import { runTest } from './lib.mjs';

const [httpPort, domain, extension, password] = process.argv.slice(2);
const base = `http://127.0.0.1:${httpPort}`;

/** In the page: register; then answer, measure and wait for the far end's hang-up. */
function answer({ wsUrl, uri, secret }) {
  return new Promise((resolve) => {
    const ua = new JsSIP.UA({
      sockets: [new JsSIP.WebSocketInterface(wsUrl)], uri, password: secret, register: true,
    });
    setTimeout(() => resolve({ error: 'timeout' }), 40000);
    ua.on('registrationFailed', (e) => resolve({ error: `registration: ${e.cause}` }));
    ua.on('registered', () => window.registered());
    ua.on('newRTCSession', ({ session, originator }) => {
      if (originator !== 'remote') return;
      session.on('failed', (e) => resolve({ error: `call failed: ${e.cause}` }));
      session.on('confirmed', () => {
        setTimeout(async () => {
          const pc = session.connection;
          const stats = { connectionState: pc.connectionState, codecs: [] };
          (await pc.getStats()).forEach((report) => {
            if (report.type === 'inbound-rtp' && report.kind === 'audio') stats.received = report.packetsReceived;
            if (report.type === 'outbound-rtp' && report.kind === 'audio') stats.sent = report.packetsSent;
            if (report.type === 'codec') stats.codecs.push(report.mimeType);
          });
          session.on('ended', (e) => { stats.endedBy = e.originator; ua.stop(); resolve(stats); });
        }, 3000);
      });
      session.answer({ mediaConstraints: { audio: true, video: false }, pcConfig: { iceServers: [] } });
    });
    ua.start();
  });
}

runTest(async (browser, bundle) => {
  const page = await browser.newPage();
  await page.exposeFunction('registered', () => console.log('registered'));
  await page.goto(`${base}/api/health`);
  await page.addScriptTag({ content: bundle });
  const stats = await page.evaluate(answer, {
    wsUrl: `ws://127.0.0.1:${httpPort}/ws`, uri: `sip:${extension}@${domain}`, secret: password,
  });
  console.log(`the browser's call: ${JSON.stringify(stats)}`);
  if (stats.error) throw new Error(stats.error);
  if (stats.connectionState !== 'connected') throw new Error(`peer connection ${stats.connectionState}`);
  if (!(stats.sent > 50 && stats.received > 50)) throw new Error('too few audio packets');
  if (stats.endedBy !== 'remote') throw new Error('the call should end from the far end');
});
