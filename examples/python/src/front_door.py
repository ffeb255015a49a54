"""front-door — active mode in Python: time conditions, a welcome, a menu and
departments; the same behaviour as the Rust scripts/front-door.

Location vars: timezone (IANA), hours, holidays, sales, billing, operator, optional
after_hours_number, menu_timeout_ms (default 5000) and record ("true" records every
call). Key-value entries: override (open/closed), and hours / holidays, which win over
the vars of the same name.

Open: welcome, then the menu (1 sales, 2 billing, 0 operator); an invalid or missing
choice repeats the menu once, then goes to the operator. Closed: the closed prompt, then
after_hours_number or goodbye. A failed forward goes to the fallback number.
"""

from typing import List, Optional

import wit_world
from componentize_py_types import Err
from wit_world.exports import router as r
from wit_world.imports import clock, config, kv, log

from schedule import Schedule

RING_TIMEOUT_MS = 30_000
MENU_TIMEOUT_MS = 5_000
# Menu key → department (a location var, and the `department` tag's value).
MENU = {"1": "sales", "2": "billing", "0": "operator"}


def tag(name: str, value: str) -> r.Action:
    return r.Action_SetTag((name, value))


def play(prompt: str) -> r.Action:
    return r.Action_Play(r.Play(prompt))


def forward(target: r.ForwardTarget) -> r.Action:
    return r.Action_Forward(r.Forward(target, None, RING_TIMEOUT_MS, None))


def non_empty_var(name: str) -> Optional[str]:
    """A location var, with an empty value treated as unset."""
    value = config.location_var(name)
    return value if value is not None and value.strip() else None


def live_setting(name: str) -> Optional[str]:
    """hours / holidays from the key-value store if an admin set them, else the vars."""
    value = kv.get(name)
    return value if value is not None else config.location_var(name)


def call_tag(call: r.CallContext, name: str) -> Optional[str]:
    return next((v for n, v in call.tags if n == name), None)


def menu() -> r.Action:
    try:
        timeout_ms = int((config.location_var("menu_timeout_ms") or "").strip())
    except ValueError:
        timeout_ms = MENU_TIMEOUT_MS
    if not 0 <= timeout_ms < 2**32:
        timeout_ms = MENU_TIMEOUT_MS
    return r.Action_Gather(r.Gather(1, timeout_ms, None, None, "menu", None))


def incoming() -> List[r.Action]:
    timezone = non_empty_var("timezone") or "UTC"
    try:
        schedule = Schedule.parse(live_setting("hours") or "", live_setting("holidays") or "")
    except ValueError as e:
        log.write(log.Level.ERROR, f"front-door: {e}")
        return []  # the host falls back
    try:
        local = clock.to_local(clock.now(), timezone)
    except Err as e:
        log.write(log.Level.ERROR, f"front-door: timezone var: {e.value}")
        return []
    state = schedule.state(local, kv.get("override"))
    actions = [tag("hours", state)]
    if config.location_var("record") == "true":
        actions.append(r.Action_Recording(True))
    if state in ("open", "override-open"):
        return actions + [r.Action_Answer(), play("welcome"), menu()]
    actions.append(play("closed"))
    after_hours = non_empty_var("after_hours_number")
    if after_hours is not None:
        return actions + [tag("department", "after-hours"), forward(r.ForwardTarget_Number(after_hours))]
    return actions + [play("goodbye"), r.Action_Hangup()]


def digits_gathered(call: r.CallContext, gathered: r.Gathered) -> List[r.Action]:
    if gathered.digits in MENU:
        return transfer(MENU[gathered.digits])
    if call_tag(call, "menu_repeated") is None:
        actions = [tag("menu_repeated", "true")]
        if gathered.digits:
            actions.append(play("invalid-choice"))
        return actions + [menu()]
    return transfer("operator")


def forward_failed(call: r.CallContext, failure: r.ForwardFailure) -> List[r.Action]:
    log.write(log.Level.WARN, f"front-door: forward failed with {failure.status} {failure.reason}")
    if isinstance(failure.target, r.ForwardTarget_Fallback) or call_tag(call, "department") == "fallback":
        return [play("goodbye"), r.Action_Hangup()]
    return [tag("department", "fallback"), forward(r.ForwardTarget_Fallback())]


def transfer(wanted: str) -> List[r.Action]:
    """Send the caller to a department's number, or the operator's if it has none."""
    department, number = wanted, non_empty_var(wanted)
    if number is None:
        department, number = "operator", non_empty_var("operator")
    if number is None:
        log.write(log.Level.ERROR, f"front-door: no {wanted} or operator var")
        return [tag("department", "fallback"), forward(r.ForwardTarget_Fallback())]
    return [tag("department", department), play("transferring"), forward(r.ForwardTarget_Number(number))]


class Router(wit_world.exports.Router):
    def handle(self, call: r.CallContext, event: r.Event) -> List[r.Action]:
        if isinstance(event, r.Event_Incoming):
            return incoming()
        if isinstance(event, r.Event_DigitsGathered):
            return digits_gathered(call, event.value)
        if isinstance(event, r.Event_ForwardFailed):
            return forward_failed(call, event.value)
        return []  # call-ended, external: nothing to do
