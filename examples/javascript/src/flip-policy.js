// flip-policy — who may move a live call to which of their devices, in JavaScript; the
// same behaviour as the Rust scripts/flip-policy.
//
// - Only the user's own devices are candidates (the host enforces this too).
// - Emergency calls are never flipped by this policy.
// - Users whose role is `kiosk` may not flip.
// - If a target device's name matches the `[flip] pin_devices` globs (shared desk
//   phones, e.g. "lobby-*") and the user has a PIN, the PIN is required.

import { setting } from 'wasmpbx:script/config@0.2.0';
import { findUser } from 'wasmpbx:script/directory@0.2.0';

/**
 * Shell-style `*` (any run) and `?` (one character) on a whole device name,
 * case-sensitive: the guest SDK's iterative matcher, which backtracks only to the last
 * `*` (no regex blow-up on patterns with many stars).
 */
function matches(pattern, name) {
  const [p, n] = [[...pattern], [...name]];
  let [pi, ni] = [0, 0];
  let star; // [pattern index of the last `*`, name index it is matched up to]
  while (ni < n.length) {
    if (pi < p.length && (p[pi] === '?' || p[pi] === n[ni])) {
      pi += 1;
      ni += 1;
    } else if (pi < p.length && p[pi] === '*') {
      star = [pi, ni];
      pi += 1;
    } else if (star) {
      star[1] += 1;
      [pi, ni] = [star[0] + 1, star[1]];
    } else {
      return false;
    }
  }
  return p.slice(pi).every((c) => c === '*');
}

const matchesAny = (patterns, name) => patterns.split(',').map((p) => p.trim())
  .filter((p) => p !== '').some((p) => matches(p, name));

const deny = (reason) => ({ tag: 'deny', val: reason });

export const flipPolicy = {
  decide(request) {
    const user = findUser(request.userId);
    if (user === undefined) return deny(`unknown user ${request.userId}`);
    if (request.call.emergency) return deny('emergency calls cannot be flipped');
    if (user.role === 'kiosk') return deny('kiosk users may not flip calls');
    const targets = request.candidates
      .filter((d) => d.userId === request.userId && d.name !== request.call.currentDevice)
      .map((d) => d.name);
    if (targets.length === 0) return deny('no other device of the user is registered');
    const pinDevices = setting('flip.pin_devices') ?? '';
    const needsPin = user.hasPin && targets.some((t) => matchesAny(pinDevices, t));
    return { tag: needsPin ? 'require-pin' : 'allow', val: { targets, ringTimeoutMs: 0 } };
  },
};
