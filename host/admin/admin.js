// The admin console: the admin API's live state, refreshed every two seconds, with the
// actions an admin takes (flip a live call, night mode for a location). The token stays
// in this tab's sessionStorage and goes only in the Authorization header.
'use strict';

const REFRESH_MS = 2000;
const $ = (id) => document.getElementById(id);
let timer = null;

function token() {
  return sessionStorage.getItem('wasmpbx-token') || '';
}

function say(text, bad) {
  const message = $('message');
  message.textContent = text;
  message.className = bad ? 'bad' : '';
}

/** An API call; the JSON answer, or an Error with the API's `{"error"}` text. */
async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${token()}` },
    body,
  });
  const text = await response.text();
  const json = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const error = new Error((json && json.error) || `${response.status}`);
    error.status = response.status;
    throw error;
  }
  return json;
}

/** A table cell; `text` is set as text, never as markup. */
function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text == null ? '' : String(text);
  if (className) td.className = className;
  return td;
}

function fill(tableId, items, render) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren();
  for (const item of items) render(body.insertRow(), item);
}

function shortId(session) {
  return session.slice(-12);
}

function clock(iso) {
  return iso ? iso.replace('T', ' ').replace(/\.\d+/, '') : '';
}

function duration(ms) {
  const s = Math.floor(ms / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

async function flip(session) {
  try {
    await api('POST', `/api/calls/${session}/flip`, '');
    say(`flip of ${shortId(session)} requested: ringing the user's other devices`);
  } catch (e) {
    say(`flip of ${shortId(session)} refused: ${e.message}`, true);
  }
}

async function nightMode(location, on, ttl) {
  const path = `/api/kv/${encodeURIComponent(location)}/override`;
  try {
    if (on) await api('PUT', path, JSON.stringify(ttl ? { value: 'closed', ttl_s: ttl } : { value: 'closed' }));
    else await api('DELETE', path);
    say(`${location}: night mode ${on ? `on (closed${ttl ? ` for ${ttl / 3600} h` : ''})` : 'off (the hours decide)'}`);
    await refresh();
  } catch (e) {
    say(`${location}: ${e.message}`, true);
  }
}

async function play(session, td) {
  try {
    const response = await fetch(`/api/recordings/${session}`, {
      headers: { Authorization: `Bearer ${token()}` },
    });
    if (!response.ok) throw new Error((await response.json()).error);
    const audio = document.createElement('audio');
    audio.controls = true;
    audio.src = URL.createObjectURL(await response.blob());
    td.replaceChildren(audio);
    await audio.play().catch(() => {});
  } catch (e) {
    say(`recording of ${shortId(session)}: ${e.message}`, true);
  }
}

function render(state) {
  const [health, calls, registrations, locations, scripts, trunks, cdrs] = state;
  $('health').textContent = `${health.status} · ${health.live_calls} live · v${health.version}`;
  $('health').className = health.status === 'ok' ? 'good' : 'bad';

  fill('calls', calls, (row, call) => {
    row.dataset.session = call.session;
    cell(row, clock(call.answered_at || call.started_at));
    cell(row, shortId(call.session));
    cell(row, call.caller);
    cell(row, call.dialed);
    cell(row, call.location);
    cell(row, call.state + (call.forwarded_to ? ` → ${call.forwarded_to}` : ''));
    const button = document.createElement('button');
    button.className = 'flip';
    button.textContent = 'Flip';
    button.title = "Ring the user's other devices; the first to answer takes the call";
    button.onclick = () => flip(call.session);
    cell(row, '').append(button);
  });

  fill('registrations', registrations, (row, r) => {
    cell(row, r.user_id);
    cell(row, r.device);
    cell(row, r.transport);
    cell(row, r.contact);
    cell(row, new Date(r.expires_at * 1000).toISOString().slice(11, 19));
  });

  fill('locations', locations, (row, l) => {
    row.dataset.location = l.name;
    cell(row, l.name);
    cell(row, l.flip_number);
    cell(row, l.script);
    const closed = l.override === 'closed';
    cell(row, l.override || '—', closed ? 'bad' : '').className += ' override';
    cell(row, l.override_expires_at ? `until ${clock(l.override_expires_at)}` : '').className = 'expiry';
    const actions = cell(row, '');
    const button = document.createElement('button');
    button.className = 'night';
    button.textContent = closed ? 'Night mode off' : 'Night mode on';
    const lasting = document.createElement('select');
    lasting.className = 'night-for';
    for (const [label, seconds] of [['until turned off', 0], ['for 1 hour', 3600], ['for 12 hours', 43200]]) {
      lasting.append(new Option(label, String(seconds)));
    }
    button.onclick = () => nightMode(l.name, !closed, Number(lasting.value));
    actions.append(button);
    if (!closed) actions.append(' ', lasting);
  });

  fill('scripts', scripts, (row, s) => {
    cell(row, s.name);
    cell(row, s.hash ? s.hash.slice(0, 12) : '(none serving)').title = s.hash || '';
    cell(row, (s.exports || []).join(', '));
    cell(row, clock(s.loaded_at));
    cell(row, s.decisions);
    cell(row, s.fallbacks, s.fallbacks ? 'bad' : '');
    cell(row, s.last_error ? s.last_error.message : '', 'bad');
  });

  fill('trunks', trunks, (row, t) => {
    cell(row, t.name);
    const targets = t.targets.map((x) => `${x.address} ${x.state}`).join(', ');
    cell(row, targets || t.resolve_error || '', t.targets.some((x) => x.state === 'down') ? 'bad' : '');
    cell(row, t.registration ? t.registration.state : '—');
  });

  fill('cdrs', cdrs, (row, r) => {
    cell(row, clock(r.started_at));
    cell(row, r.caller);
    cell(row, r.dialed);
    cell(row, r.location);
    cell(row, duration(r.duration_ms));
    const outcome = cell(row, r.disposition + (r.state !== 'ended' ? ` (${r.state})` : ''));
    if (r.flips.length) {
      const list = document.createElement('ul');
      list.className = 'flips';
      for (const f of r.flips) {
        const item = document.createElement('li');
        item.textContent = `${clock(f.requested_at)} ${f.kind} (${f.trigger}) ${f.from_device} → `
          + `${f.targets.join(', ')}: ${f.result}${f.reason ? ` (${f.reason})` : ''}`;
        list.append(item);
      }
      outcome.append(list);
    }
    const td = cell(row, '');
    if (r.recording) {
      const button = document.createElement('button');
      button.textContent = 'Play';
      button.onclick = () => play(r.session, td);
      td.append(button);
    }
  });
}

async function refresh() {
  try {
    const state = await Promise.all([
      '/api/health', '/api/calls', '/api/registrations', '/api/locations', '/api/scripts',
      '/api/trunks', '/api/cdrs?limit=20',
    ].map((path) => api('GET', path)));
    render(state);
  } catch (e) {
    if (e.status === 401) {
      signOut();
      say('the token was refused', true);
    } else {
      say(`refreshing: ${e.message}`, true);
    }
  }
}

function signedIn() {
  $('signin').hidden = true;
  $('console').hidden = false;
  $('signout').hidden = false;
  refresh();
  timer = setInterval(refresh, REFRESH_MS);
}

function signOut() {
  sessionStorage.removeItem('wasmpbx-token');
  clearInterval(timer);
  $('signin').hidden = false;
  $('console').hidden = true;
  $('signout').hidden = true;
  $('health').textContent = '';
}

$('signin').onsubmit = async (event) => {
  event.preventDefault();
  sessionStorage.setItem('wasmpbx-token', $('token').value);
  $('token').value = '';
  try {
    await api('GET', '/api/health');
    say('');
    signedIn();
  } catch (e) {
    signOut();
    say(e.status === 401 ? 'the token was refused' : e.message, true);
  }
};
$('signout').onclick = () => {
  signOut();
  say('signed out');
};
if (token()) signedIn();
