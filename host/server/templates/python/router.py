"""{{name}} — a wasmpbx routing script. Every call to a location that runs it goes on to
the location's `return_number` var; if that number fails, the caller hears its failure
(busy stays busy).

Each event runs in a fresh instance: keep nothing in module globals between calls.
"""

from typing import List

import wit_world
from wit_world.exports import router as r
from wit_world.imports import config, log

# How long the return number may ring.
RING_TIMEOUT_MS = 60_000


def incoming(call: r.CallContext) -> List[r.Action]:
    number = (config.location_var("return_number") or "").strip()
    if not number:
        # No action: the host sends the call to the location's fallback number.
        log.write(log.Level.ERROR, "{{name}}: the location has no return_number var")
        return []
    log.write(log.Level.INFO, f"{{name}}: call from {call.caller} to {number}")
    target = r.ForwardTarget_Number(number)
    return [r.Action_Forward(r.Forward(target, None, RING_TIMEOUT_MS, None))]


class Router(wit_world.exports.Router):
    def handle(self, call: r.CallContext, event: r.Event) -> List[r.Action]:
        if isinstance(event, r.Event_Incoming):
            return incoming(call)
        if isinstance(event, r.Event_ForwardFailed):
            return [r.Action_Reject(r.Reject(event.value.status, event.value.reason))]
        return []  # digits-gathered, call-ended, external: nothing to do
