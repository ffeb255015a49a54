// A browser calls through the host with WebRTC: Chromium (fake microphone) runs JsSIP in
// a page of the host's origin, registers over /ws and calls NUMBER. The browser's peer
// connection must reach `connected`, send and receive audio (getStats), in PCMU or PCMA.
// With NUMBER `*77` it takes over the user's live call from another device (a pull),
// and keeps it until the far end hangs up. With KEYS it presses them during the call as
// RFC 4733 telephone-events (the browser's RTCDTMFSender), as a browser phone would.
//
//   node tests/browser/webrtc_call.mjs HTTP_PORT SIP_DOMAIN EXTENSION PASSWORD NUMBER [KEYS]

import { runTest } from './lib.mjs';

const [httpPort, domain, extension, password, number, keys] = process.argv.slice(2);
const base = `http://127.0.0.1:${httpPort}`;

/** In the page: register, call, let it run, read the peer connection's statistics. */
function call({ wsUrl, uri, secret, target, untilEnded, keys }) {
  return new Promise((resolve) => {
    const ua = new JsSIP.UA({
      sockets: [new JsSIP.WebSocketInterface(wsUrl)], uri, password: secret, register: true,
    });
    setTimeout(() => resolve({ error: 'timeout' }), 40000);
    ua.on('registrationFailed', (e) => resolve({ error: `registration: ${e.cause}` }));
    ua.on('registered', () => {
      const session = ua.call(target, {
        mediaConstraints: { audio: true, video: false },
        pcConfig: { iceServers: [] },
      });
      session.on('failed', (e) => resolve({ error: `call failed: ${e.cause}` }));
      session.on('confirmed', () => {
        if (keys) setTimeout(() => session.sendDTMF(keys, { transportType: 'RFC2833' }), 500);
        setTimeout(async () => {
          const pc = session.connection;
          const stats = { connectionState: pc.connectionState, codecs: [] };
          (await pc.getStats()).forEach((report) => {
            if (report.type === 'inbound-rtp' && report.kind === 'audio') stats.received = report.packetsReceived;
            if (report.type === 'outbound-rtp' && report.kind === 'audio') stats.sent = report.packetsSent;
            if (report.type === 'codec') stats.codecs.push(report.mimeType);
          });
          const finish = () => setTimeout(() => { ua.stop(); resolve(stats); }, 500);
          if (untilEnded) {
            session.on('ended', (e) => { stats.endedBy = e.originator; finish(); });
          } else {
            session.terminate();
            finish();
          }
        }, 3000);
      });
    });
    ua.start();
  });
}

runTest(async (browser, bundle) => {
  const page = await browser.newPage();
  await page.goto(`${base}/api/health`);
  await page.addScriptTag({ content: bundle });
  const stats = await page.evaluate(call, {
    wsUrl: `ws://127.0.0.1:${httpPort}/ws`, uri: `sip:${extension}@${domain}`, secret: password,
    target: `sip:${number}@${domain}`, untilEnded: number === '*77', keys,
  });
  console.log(`the browser's call: ${JSON.stringify(stats)}`);
  if (stats.error) throw new Error(stats.error);
  if (stats.connectionState !== 'connected') throw new Error(`peer connection ${stats.connectionState}`);
  if (!(stats.sent > 50 && stats.received > 50)) throw new Error('too few audio packets');
  if (!stats.codecs.some((c) => c === 'audio/PCMU' || c === 'audio/PCMA')) throw new Error('not G.711');
});
