#!/usr/bin/env python3
"""A flip that needs the user's PIN, with real phones: Bob calls Alice, her desk phone
answers; the policy (the real `flip-policy` script, `[flip] pin_devices = "*"`) wants
her PIN for every flip. Her mobile dials *77: the host answers it alone and asks for the
PIN, the desk keeps the call; the mobile keys 1234 (RFC 4733) and takes the call. Then
the mobile pushes with *8, the desk answers and keys a wrong PIN three times: the desk
is released, the call stays on the mobile. Bob notices nothing: no INVITE, one RTP
stream, no key of anyone's PIN; he hears the desk, then the mobile.

    python3 tests/e2e/baresip_pin.py /path/to/wasmpbx /path/to/flip-policy.wasm
"""

import sys
import time

from baresip_call import ALICE_AND_BOB, alice_and_bob, api, dominant_hz, received_audio, run, start_server
from baresip_flip import Capture, bob_hangs_up, tone_between

CONFIG = ALICE_AND_BOB.replace('password = "alice-secret"', 'password = "alice-secret"\npin = "1234"') + """
[flip]
pin_devices = "*"
"""


def main():
    binary, flip_policy = sys.argv[1:3]
    return run("wasmpbx-baresip-pin-",
               lambda work: start_server(binary, work, CONFIG, scripts={"flip-policy": flip_policy}),
               flips_with_pin)


def flips_with_pin(work, phones):
    capture = Capture()
    capture.start()
    desk, mobile, bob, names = alice_and_bob(work, phones)
    desk_name, mobile_name = names[desk], names[mobile]

    bob.command("dial", "sip:2001@127.0.0.1")
    desk.wait("CALL_INCOMING")
    mobile.wait("CALL_INCOMING")
    desk.command("accept")
    bob.wait("CALL_ESTABLISHED")
    mobile.wait("CALL_CLOSED")
    print("bob is talking to alice's desk phone")
    time.sleep(1.5)

    mobile.command("dial", "sip:*77@127.0.0.1")
    mobile.wait("CALL_ESTABLISHED")
    time.sleep(2.5)  # the enter-PIN prompt
    assert not desk.saw("CALL_CLOSED"), "the desk keeps the call until the PIN is right"
    mobile.command("sndcode", "1234")
    desk.wait("CALL_CLOSED")
    print("1. the mobile pulled the call with *77 and PIN 1234; the desk was released")
    time.sleep(2)

    mobile.command("sndcode", "*8")
    desk.wait("CALL_INCOMING")
    desk.command("accept")
    desk.wait("CALL_ESTABLISHED")
    for _ in range(3):
        time.sleep(1.5)
        desk.command("sndcode", "9999")
    desk.wait("CALL_CLOSED")
    assert not mobile.saw("CALL_CLOSED"), "a wrong PIN leaves the call on the mobile"
    print("2. the mobile pushed with *8; the desk keyed a wrong PIN three times and was released")
    time.sleep(2)

    audio = bob_hangs_up(capture, bob, mobile)
    early, late = tone_between(audio, 0.3, 1.3), tone_between(audio, -1.5, -0.3)
    print(f"bob heard {early:.0f} Hz (the desk's 440), then {late:.0f} Hz (the mobile's 700)")
    assert 380 < early < 500 and 620 < late < 780, (early, late)
    heard, rate = received_audio(mobile)
    prompt = heard[int(0.2 * rate):int(1.8 * rate)]
    loud = sum(1 for s in prompt if abs(s) > 1000)
    assert loud > rate // 10, f"the mobile heard no prompt before the PIN ({loud} loud samples)"
    assert not 900 < dominant_hz(prompt, rate) < 1100, "bob's tone before the PIN"
    print(f"the mobile heard the prompt first ({loud} loud samples), not bob")

    flips = api("/api/cdrs?limit=1")[0]["flips"]
    seen = [(f["kind"], f["trigger"], f["from_device"], f["targets"], f["result"], f.get("reason"))
            for f in flips]
    expected = [
        ("pull", "pull-code", desk_name, [mobile_name], "done", None),
        ("push", "push-code", mobile_name, [desk_name], "denied", "wrong PIN (3 tries)"),
    ]
    assert seen == expected, seen
    print("the call record lists the PIN flip and the denied one")


if __name__ == "__main__":
    sys.exit(main())
