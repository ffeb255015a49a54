"""flip-policy — who may move a live call to which of their devices, in Python; the same
behaviour as the Rust scripts/flip-policy.

- Only the user's own devices are candidates (the host enforces this too).
- Emergency calls are never flipped by this policy.
- Users whose role is `kiosk` may not flip.
- If a target device's name matches the `[flip] pin_devices` globs (shared desk phones,
  e.g. "lobby-*") and the user has a PIN, the PIN is required.
"""

import re

import wit_world
from wit_world.exports import flip_policy as f
from wit_world.imports import config, directory


def matches(pattern: str, name: str) -> bool:
    """Shell-style `*` and `?` on a whole device name, case-sensitive."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name, re.DOTALL) is not None


def matches_any(patterns: str, name: str) -> bool:
    return any(matches(p.strip(), name) for p in patterns.split(",") if p.strip())


class FlipPolicy(wit_world.exports.FlipPolicy):
    def decide(self, request: f.FlipRequest) -> f.Decision:
        user = directory.find_user(request.user_id)
        if user is None:
            return f.Decision_Deny(f"unknown user {request.user_id}")
        if request.call.emergency:
            return f.Decision_Deny("emergency calls cannot be flipped")
        if user.role == "kiosk":
            return f.Decision_Deny("kiosk users may not flip calls")
        targets = [
            d.name
            for d in request.candidates
            if d.user_id == request.user_id and d.name != request.call.current_device
        ]
        if not targets:
            return f.Decision_Deny("no other device of the user is registered")
        pin_devices = config.setting("flip.pin_devices") or ""
        allow = f.Allow(targets, 0)
        if user.has_pin and any(matches_any(pin_devices, t) for t in targets):
            return f.Decision_RequirePin(allow)
        return f.Decision_Allow(allow)
