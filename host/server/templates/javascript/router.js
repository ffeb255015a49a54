// {{name}} — a wasmpbx routing script. Every call to a location that runs it goes on to
// the location's `return_number` var; if that number fails, the caller hears its failure
// (busy stays busy).

import { write } from 'wasmpbx:script/log@0.2.0';
import { locationVar } from 'wasmpbx:script/config@0.2.0';

/** How long the return number may ring. */
const RING_TIMEOUT_MS = 60000;

function incoming(call) {
  const number = (locationVar('return_number') ?? '').trim();
  if (number === '') {
    // No action: the host sends the call to the location's fallback number.
    write('error', '{{name}}: the location has no return_number var');
    return [];
  }
  write('info', `{{name}}: call from ${call.caller} to ${number}`);
  const target = { tag: 'number', val: number };
  return [{
    tag: 'forward',
    val: { target, trunk: undefined, ringTimeoutMs: RING_TIMEOUT_MS, callerId: undefined },
  }];
}

export const router = {
  // Each event runs in a fresh instance: keep nothing in module variables between calls.
  handle(call, event) {
    switch (event.tag) {
      case 'incoming':
        return incoming(call);
      case 'forward-failed':
        return [{ tag: 'reject', val: { status: event.val.status, reason: event.val.reason } }];
      default: // digits-gathered, call-ended, external: nothing to do
        return [];
    }
  },
};
