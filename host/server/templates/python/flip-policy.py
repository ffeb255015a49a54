"""{{name}} — a wasmpbx flip policy: a user may move a live call to any of their other
registered devices; emergency calls stay where they are."""

import wit_world
from wit_world.exports import flip_policy as f


class FlipPolicy(wit_world.exports.FlipPolicy):
    def decide(self, request: f.FlipRequest) -> f.Decision:
        if request.call.emergency:
            return f.Decision_Deny("emergency calls cannot be flipped")
        targets = [
            d.name
            for d in request.candidates
            if d.user_id == request.user_id and d.name != request.call.current_device
        ]
        if not targets:
            return f.Decision_Deny("no other device of the user is registered")
        return f.Decision_Allow(f.Allow(targets, 0))
