// The browser phone: JsSIP over the host's /ws (WSS when the page is HTTPS), one call
// at a time. Flip sends the push code (*8) as SIP INFO; Take over dials the pull code.
// An incoming call rings (a ringtone, and a desktop notification when allowed); a call
// shows how long it has lasted. The list of the user's live calls, on any of their
// devices, comes from GET /phone/calls every few seconds, with the session token that
// signing in (POST /phone/session) gave: the password is sent once.
(function () {
  const $ = (id) => document.getElementById(id);
  const status = (text) => { $('status').textContent = text; };
  let ua = null;
  let session = null;
  let domain = location.hostname;
  let listing = null;
  let token = null;

  // The ringtone: 440 + 480 Hz, two seconds on and four off, made here (no file).
  let audio = null;
  let ringing = null;
  let notice = null;
  function ring(from) {
    document.body.dataset.ringing = 'true';
    if (audio) {
      const burst = () => {
        const gain = audio.createGain();
        gain.gain.value = 0.1;
        gain.connect(audio.destination);
        for (const hz of [440, 480]) {
          const tone = audio.createOscillator();
          tone.frequency.value = hz;
          tone.connect(gain);
          tone.start();
          tone.stop(audio.currentTime + 2);
        }
      };
      burst();
      ringing = setInterval(burst, 6000);
    }
    if (window.Notification && Notification.permission === 'granted') {
      notice = new Notification('Incoming call', { body: `from ${from}`, tag: 'wasmpbx-call' });
      notice.onclick = () => window.focus();
    }
  }
  function stopRinging() {
    delete document.body.dataset.ringing;
    clearInterval(ringing);
    ringing = null;
    if (notice) { notice.close(); notice = null; }
  }

  // How long the call has lasted, m:ss.
  let timing = null;
  function startTimer() {
    if (timing) return;
    const since = Date.now();
    const show = () => {
      const s = Math.floor((Date.now() - since) / 1000);
      $('timer').textContent = `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
    };
    show();
    timing = setInterval(show, 1000);
  }
  function stopTimer() {
    clearInterval(timing);
    timing = null;
    $('timer').textContent = '';
  }

  async function refreshCalls() {
    let calls;
    try {
      const response = await fetch('/phone/calls', { headers: { Authorization: `Bearer ${token}` } });
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

  async function listCalls(credentials) {
    clearInterval(listing);
    try {
      const response = await fetch('/phone/session', {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(credentials),
      });
      if (!response.ok) return;
      token = (await response.json()).token;
    } catch (_) { return; }
    refreshCalls();
    listing = setInterval(refreshCalls, 2000);
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
    s.on('accepted', () => { stopRinging(); status('in call'); inCall(true); startTimer(); });
    s.on('confirmed', () => { stopRinging(); status('in call'); inCall(true); startTimer(); });
    const over = (text) => () => {
      session = null;
      stopRinging();
      stopTimer();
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
    // Sound and notifications need the person's say-so: this click is it.
    const Audio = window.AudioContext || window.webkitAudioContext;
    if (!audio && Audio) audio = new Audio();
    if (window.Notification && Notification.permission === 'default') Notification.requestPermission();
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
    ua.on('registered', () => {
      status('registered');
      $('phone').hidden = false;
      $('signin').hidden = true;
      $('signout').hidden = false;
      if (!token) listCalls(credentials);
    });
    ua.on('unregistered', () => { status('signed out'); clearInterval(listing); });
    ua.on('registrationFailed', (e) => status(`sign-in failed: ${e.cause}`));
    ua.on('newRTCSession', ({ session: s, originator }) => {
      if (originator !== 'remote') return;
      if (session) { s.terminate({ status_code: 486 }); return; }
      track(s);
      const from = s.remote_identity.display_name || s.remote_identity.uri.user;
      status(`ringing: ${s.remote_identity.uri.user}`);
      ring(from);
      $('answer').hidden = false;
      $('decline').hidden = false;
    });
    status('signing in');
    ua.start();
  });

  $('signout').addEventListener('click', async () => {
    if (session) session.terminate();
    clearInterval(listing);
    if (token) {
      const ending = token;
      token = null;
      await fetch('/phone/session', { method: 'DELETE', headers: { Authorization: `Bearer ${ending}` } })
        .catch(() => {});
    }
    if (ua) { ua.stop(); ua = null; }
    $('calls').replaceChildren();
    $('phone').hidden = true;
    $('signout').hidden = true;
    $('signin').hidden = false;
    $('password').value = '';
    status('signed out');
  });
  $('call').addEventListener('click', () => dial($('number').value));
  $('takeover').addEventListener('click', () => dial('*77'));
  $('answer').addEventListener('click', () => {
    if (!session) return;
    $('answer').hidden = true;
    $('decline').hidden = true;
    stopRinging();
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
