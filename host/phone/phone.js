// The browser phone: JsSIP over the host's /ws (WSS when the page is HTTPS), one call
// at a time. Flip sends the push code (*8) as SIP INFO; Take over dials the pull code.
// The list of the user's live calls, on any of their devices, comes from
// POST /phone/calls with the same extension and password, every few seconds.
(function () {
  const $ = (id) => document.getElementById(id);
  const status = (text) => { $('status').textContent = text; };
  let ua = null;
  let session = null;
  let domain = location.hostname;
  let listing = null;

  async function refreshCalls(credentials) {
    let calls;
    try {
      const response = await fetch('/phone/calls', {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(credentials),
      });
      if (!response.ok) return;
      calls = await response.json();
    } catch (_) { return; } // the host is away: keep what is shown
    const list = $('calls');
    list.replaceChildren(...calls.map((call) => {
      const item = document.createElement('li');
      const since = call.answered_at ? new Date(call.answered_at).toLocaleTimeString() : '';
      item.textContent = `${call.with} (${call.direction}) on ${call.device}${since ? `, since ${since}` : ''}`;
      return item;
    }));
    $('no-calls').hidden = calls.length > 0;
  }

  function listCalls(credentials) {
    clearInterval(listing);
    refreshCalls(credentials);
    listing = setInterval(() => refreshCalls(credentials), 2000);
  }

  function inCall(active) {
    for (const id of ['hangup', 'mute', 'flip']) $(id).disabled = !active;
    $('call').disabled = active;
    $('takeover').disabled = active;
  }

  function track(s) {
    session = s;
    s.on('peerconnection', ({ peerconnection }) => {
      peerconnection.addEventListener('track', (e) => { $('remote').srcObject = e.streams[0]; });
    });
    s.on('accepted', () => { status('in call'); inCall(true); });
    s.on('confirmed', () => { status('in call'); inCall(true); });
    const over = (text) => () => {
      session = null;
      status(text);
      inCall(false);
      $('answer').hidden = true;
      $('decline').hidden = true;
    };
    s.on('ended', over('registered'));
    s.on('failed', (e) => over(`registered (last call: ${e.cause})`)());
  }

  const media = { mediaConstraints: { audio: true, video: false }, pcConfig: { iceServers: [] } };

  function dial(target) {
    if (!ua || session) return;
    status(`calling ${target}`);
    track(ua.call(`sip:${target}@${domain}`, media));
  }

  $('signin').addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      domain = (await (await fetch('/phone/config')).json()).domain || domain;
    } catch (_) { /* the page's host is the domain */ }
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    if (ua) ua.stop();
    ua = new JsSIP.UA({
      sockets: [new JsSIP.WebSocketInterface(`${scheme}://${location.host}/ws`)],
      uri: `sip:${$('extension').value}@${domain}`,
      password: $('password').value,
      register: true,
    });
    const credentials = { extension: $('extension').value, password: $('password').value };
    ua.on('registered', () => { status('registered'); $('phone').hidden = false; listCalls(credentials); });
    ua.on('unregistered', () => { status('signed out'); clearInterval(listing); });
    ua.on('registrationFailed', (e) => status(`sign-in failed: ${e.cause}`));
    ua.on('newRTCSession', ({ session: s, originator }) => {
      if (originator !== 'remote') return;
      if (session) { s.terminate({ status_code: 486 }); return; }
      track(s);
      status(`ringing: ${s.remote_identity.uri.user}`);
      $('answer').hidden = false;
      $('decline').hidden = false;
    });
    status('signing in');
    ua.start();
  });

  $('call').addEventListener('click', () => dial($('number').value));
  $('takeover').addEventListener('click', () => dial('*77'));
  $('answer').addEventListener('click', () => {
    if (!session) return;
    $('answer').hidden = true;
    $('decline').hidden = true;
    session.answer(media);
  });
  $('decline').addEventListener('click', () => session && session.terminate({ status_code: 603 }));
  $('hangup').addEventListener('click', () => session && session.terminate());
  $('mute').addEventListener('click', () => {
    if (!session) return;
    if (session.isMuted().audio) { session.unmute(); $('mute').textContent = 'Mute'; }
    else { session.mute(); $('mute').textContent = 'Unmute'; }
  });
  $('flip').addEventListener('click', () => {
    if (!session) return;
    status('flipping: your other devices ring');
    session.sendDTMF('*8', { transportType: 'INFO' });
  });
  for (const key of '123456789*0#') {
    const button = document.createElement('button');
    button.textContent = key;
    button.addEventListener('click', () => {
      if (session) session.sendDTMF(key, { transportType: 'INFO' });
      else $('number').value += key;
    });
    $('pad').appendChild(button);
  }
}());
