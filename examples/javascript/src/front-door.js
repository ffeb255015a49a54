// front-door — active mode in JavaScript: time conditions, a welcome, a menu and
// departments; the same behaviour as the Rust scripts/front-door.
//
// Location vars: timezone (IANA), hours, holidays, sales, billing, operator, optional
// after_hours_number, menu_timeout_ms (default 5000) and record ("true" records every
// call). Key-value entries: override (open/closed), and hours / holidays, which win over
// the vars of the same name.
//
// Open: welcome, then the menu (1 sales, 2 billing, 0 operator); an invalid or missing
// choice repeats the menu once, then goes to the operator. Closed: the closed prompt,
// then after_hours_number or goodbye. A failed forward goes to the fallback number.

import { write } from 'wasmpbx:script/log@0.2.0';
import { now, toLocal } from 'wasmpbx:script/clock@0.2.0';
import { locationVar } from 'wasmpbx:script/config@0.2.0';
import { get } from 'wasmpbx:script/kv@0.2.0';
import { openState, parseSchedule } from './schedule.js';

const RING_TIMEOUT_MS = 30000;
const MENU_TIMEOUT_MS = 5000;
/** Menu key → department (a location var, and the `department` tag's value). */
const MENU = new Map([['1', 'sales'], ['2', 'billing'], ['0', 'operator']]);

const tag = (name, value) => ({ tag: 'set-tag', val: [name, value] });
const play = (prompt) => ({ tag: 'play', val: { prompt } });
const hangup = { tag: 'hangup' };
const forward = (target) => ({
  tag: 'forward',
  val: { target, trunk: undefined, ringTimeoutMs: RING_TIMEOUT_MS, callerId: undefined },
});
const toNumber = (number) => forward({ tag: 'number', val: number });
const toFallback = () => forward({ tag: 'fallback' });

/** A location var, with an empty value treated as unset. */
function nonEmptyVar(name) {
  const value = locationVar(name);
  return value !== undefined && value.trim() !== '' ? value : undefined;
}

/** hours / holidays from the key-value store if an admin set them, else the vars. */
const liveSetting = (name) => get(name) ?? locationVar(name);

const callTag = (call, name) => call.tags.find(([n]) => n === name)?.[1];

function menu() {
  // A u32 as Rust parses it (digits, an optional `+`); anything else means the default.
  const configured = locationVar('menu_timeout_ms')?.trim() ?? '';
  const timeoutMs = /^\+?[0-9]+$/.test(configured) && Number(configured) <= 0xffffffff
    ? Number(configured)
    : MENU_TIMEOUT_MS;
  return {
    tag: 'gather',
    val: { maxDigits: 1, timeoutMs, interDigitTimeoutMs: undefined, terminator: undefined, prompt: 'menu' },
  };
}

function incoming() {
  const timezone = nonEmptyVar('timezone') ?? 'UTC';
  let schedule;
  try {
    schedule = parseSchedule(liveSetting('hours') ?? '', liveSetting('holidays') ?? '');
  } catch (e) {
    write('error', `front-door: ${e.message}`);
    return []; // the host falls back
  }
  let local;
  try {
    local = toLocal(now(), timezone);
  } catch (e) {
    // A result's error arrives as an exception whose payload is the host's message.
    write('error', `front-door: timezone var: ${e.payload}`);
    return [];
  }
  const state = openState(schedule, local, get('override'));
  const actions = [tag('hours', state)];
  if (locationVar('record') === 'true') actions.push({ tag: 'recording', val: true });
  if (state === 'open' || state === 'override-open') {
    actions.push({ tag: 'answer' }, play('welcome'), menu());
    return actions;
  }
  actions.push(play('closed'));
  const afterHours = nonEmptyVar('after_hours_number');
  if (afterHours !== undefined) {
    actions.push(tag('department', 'after-hours'), toNumber(afterHours));
  } else {
    actions.push(play('goodbye'), hangup);
  }
  return actions;
}

function digitsGathered(call, gathered) {
  const department = MENU.get(gathered.digits);
  if (department !== undefined) return transfer(department);
  if (callTag(call, 'menu_repeated') === undefined) {
    const actions = [tag('menu_repeated', 'true')];
    if (gathered.digits !== '') actions.push(play('invalid-choice'));
    actions.push(menu());
    return actions;
  }
  return transfer('operator');
}

function forwardFailed(call, failure) {
  write('warn', `front-door: forward failed with ${failure.status} ${failure.reason}`);
  if (failure.target.tag === 'fallback' || callTag(call, 'department') === 'fallback') {
    return [play('goodbye'), hangup];
  }
  return [tag('department', 'fallback'), toFallback()];
}

/** Send the caller to a department's number, or the operator's if it has none. */
function transfer(wanted) {
  let department = wanted;
  let number = nonEmptyVar(wanted);
  if (number === undefined) {
    department = 'operator';
    number = nonEmptyVar('operator');
  }
  if (number === undefined) {
    write('error', `front-door: no ${wanted} or operator var`);
    return [tag('department', 'fallback'), toFallback()];
  }
  return [tag('department', department), play('transferring'), toNumber(number)];
}

export const router = {
  handle(call, event) {
    switch (event.tag) {
      case 'incoming': return incoming();
      case 'digits-gathered': return digitsGathered(call, event.val);
      case 'forward-failed': return forwardFailed(call, event.val);
      default: return []; // call-ended, external: nothing to do
    }
  },
};
