#!/usr/bin/env python3
"""Flip races with real phones. Bob calls Alice; her desk phone answers. Then:
1. her mobile and her tablet dial *77 at the same moment: exactly one takes the call,
   the other is refused (491) — the policy takes its time (100 ms, the deadline raised
   for it), so the second pull arrives while the first is decided;
2. the winner pushes with *8 and hangs up while the desk and the other device ring: Bob
   keeps the call, hearing ringback, until the desk answers;
3. the desk pushes with *8 and Bob hangs up while the two others ring: they stop ringing
   (CANCEL), the desk is released, the call ends cleanly.
Bob's capture shows one RTP stream throughout; the call record lists the flips.

    python3 tests/e2e/baresip_flip_races.py /path/to/wasmpbx /path/to/misbehave.wasm
"""

import sys
import time

from baresip_call import ALICE_AND_BOB, Phone, alice_and_bob, api, run, start_server, wait_registrations
from baresip_flip import Capture, bob_noticed_nothing, tone_between

# The misbehaving test script takes 100 ms over each flip of user "slow".
CONFIG = ALICE_AND_BOB.replace('id = "alice"', 'id = "slow"')


def first_event(phones, types, timeout=15):
    """The first of `types` any of `phones` reports: (phone, event)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for phone in phones:
            for i, event in enumerate(phone.events):
                if event.get("type") in types:
                    return phone, phone.events.pop(i)
            phone._read(0.05)
    raise RuntimeError(f"none of {[p.name for p in phones]} reported {types}")


def main():
    binary, misbehave = sys.argv[1:3]
    return run("wasmpbx-baresip-races-",
               lambda work: start_server(binary, work, CONFIG, scripts={"flip-policy": misbehave},
                                         script_settings="deadline_ms = 500"),
               races)


def races(work, phones):
    capture = Capture()
    capture.start()
    desk, mobile, bob, name = alice_and_bob(work, phones)
    tablet = Phone(work, "alice-tablet", "2001", "alice-secret", 5076, 4450, 10300, 560)
    phones.append(tablet)
    wait_registrations(4)
    name[tablet] = next(r["device"] for r in api("/api/registrations") if r["source"].endswith(":5076"))

    bob.command("dial", "sip:2001@127.0.0.1")
    for phone in (desk, mobile, tablet):
        phone.wait("CALL_INCOMING")
    desk.command("accept")
    bob.wait("CALL_ESTABLISHED")
    mobile.wait("CALL_CLOSED")
    tablet.wait("CALL_CLOSED")
    print("bob is talking to alice's desk phone")
    time.sleep(1.5)

    mobile.command("dial", "sip:*77@127.0.0.1")
    tablet.command("dial", "sip:*77@127.0.0.1")
    winner, _ = first_event([mobile, tablet], ["CALL_ESTABLISHED"])
    loser = tablet if winner is mobile else mobile
    refused = loser.wait("CALL_CLOSED")
    assert "491" in refused.get("param", ""), refused
    assert not loser.saw("CALL_ESTABLISHED")
    desk.wait("CALL_CLOSED")
    print(f"1. two pulls at once: {winner.name} took the call, {loser.name} got {refused.get('param')}")
    time.sleep(1.5)

    winner.command("sndcode", "*8")
    desk.wait("CALL_INCOMING")
    loser.wait("CALL_INCOMING")
    winner.command("hangup")
    winner.wait("CALL_CLOSED")
    time.sleep(1.5)
    assert not bob.saw("CALL_CLOSED"), "bob waits for a device to answer"
    desk.command("accept")
    desk.wait("CALL_ESTABLISHED")
    loser.wait("CALL_CLOSED")
    print(f"2. {winner.name} pushed and hung up while the others rang; bob waited; the desk answered")
    time.sleep(2)

    desk.command("sndcode", "*8")
    winner.wait("CALL_INCOMING")
    loser.wait("CALL_INCOMING")
    bob.command("hangup")
    winner.wait("CALL_CLOSED")
    loser.wait("CALL_CLOSED")
    desk.wait("CALL_CLOSED")
    bob.wait("CALL_CLOSED")
    print("3. bob hung up while the desk's push rang the others: they stopped, the desk was released")
    time.sleep(0.5)
    assert not api("/api/calls"), "no call left behind"
    audio = bob_noticed_nothing(capture, bob)
    early, late = tone_between(audio, 0.3, 1.3), tone_between(audio, -1.5, -0.3)
    print(f"bob heard {early:.0f} Hz at the start and {late:.0f} Hz at the end (the desk's 440)")
    assert 380 < early < 500 and 380 < late < 500, (early, late)

    flips = api("/api/cdrs?limit=1")[0]["flips"]
    seen = [(f["kind"], f["from_device"], sorted(f["targets"]), f["result"]) for f in flips]
    expected = [
        ("pull", name[desk], [name[winner]], "done"),
        ("push", name[winner], [name[desk]], "done"),
        ("push", name[desk], sorted([name[winner], name[loser]]), "cancelled"),
    ]
    assert seen == expected, seen
    print("the call record lists the pull, the push and the cancelled push")


if __name__ == "__main__":
    sys.exit(main())
