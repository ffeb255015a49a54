#!/usr/bin/env python3
"""Flipping calls a user placed, with real phones. Alice's desk phone dials 911 through
the trunk (a SIPp UAS): her mobile's *77 is refused (403) — emergency calls stay put.
Then her desk phone calls Bob; the desk phone's network goes silent (its process is
stopped: no RTP, no SIP) and her mobile pulls the call (*77) all the same — the "bad
Wi-Fi, take it on cellular" case; the mobile pushes it back with *8. Bob, the far end on the leg the host placed, notices nothing: no INVITE after his
first, one RTP stream (one SSRC, no sequence gap, no timestamp jump beyond the time that
passed, no key of the push code); he hears the desk (440 Hz), the mobile (700 Hz), the
desk again.

    python3 tests/e2e/baresip_flip_placed.py /path/to/wasmpbx /path/to/flip-policy.wasm tests/sipp/department.xml
"""

import os
import signal
import subprocess
import sys
import time

from baresip_call import ALICE_AND_BOB, alice_and_bob, api, run, start_server
from baresip_flip import Capture, bob_hangs_up, tone_between

CONFIG = ALICE_AND_BOB + """
[[trunks]]
name = "pstn"
uri = "sip:127.0.0.1:5090"
"""


def main():
    binary, flip_policy, department_xml = sys.argv[1:4]
    return run("wasmpbx-baresip-placed-",
               lambda work: start_server(binary, work, CONFIG, scripts={"flip-policy": flip_policy}),
               lambda work, phones: flips_of_placed_calls(work, phones, department_xml))


def flips_of_placed_calls(work, phones, department_xml):
    sipp_dir = os.path.join(work, "emergency")
    os.makedirs(sipp_dir)
    emergency = subprocess.Popen(["sipp", "-sf", os.path.abspath(department_xml), "-i", "127.0.0.1", "-p", "5090",
                                  "-m", "1", "-d", "6000", "-timeout", "60", "-nostdin", "-trace_err"],
                                 cwd=sipp_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        desk, mobile, bob, _ = alice_and_bob(work, phones)
        capture = Capture()

        desk.command("dial", "sip:911@127.0.0.1")
        desk.wait("CALL_ESTABLISHED")
        mobile.command("dial", "sip:*77@127.0.0.1")
        closed = mobile.wait("CALL_CLOSED")
        assert "403" in closed.get("param", ""), closed
        assert not desk.saw("CALL_CLOSED"), "the emergency call goes on"
        print(f"1. the mobile's *77 during the desk's 911 call was refused: {closed.get('param')}")
        desk.wait("CALL_CLOSED", timeout=20)  # the emergency service hangs up
        emergency.wait(timeout=10)

        capture.start()
        desk.command("dial", "sip:2002@127.0.0.1")
        bob.wait("CALL_INCOMING")
        bob.command("accept")
        desk.wait("CALL_ESTABLISHED")
        answered = time.time()
        print("alice's desk phone is talking to bob")
        time.sleep(2)

        os.kill(desk.proc.pid, signal.SIGSTOP)
        time.sleep(0.5)
        mobile.command("dial", "sip:*77@127.0.0.1")
        mobile.wait("CALL_ESTABLISHED")
        pulled = time.time()
        os.kill(desk.proc.pid, signal.SIGCONT)
        desk.wait("CALL_CLOSED")  # the host's BYE, retransmitted until the desk is back
        print("2. the desk went silent; the mobile pulled the call alice placed (*77); the desk was released")
        time.sleep(2.5)

        mobile.command("sndcode", "*8")
        desk.wait("CALL_INCOMING")
        desk.command("accept")
        desk.wait("CALL_ESTABLISHED")
        mobile.wait("CALL_CLOSED")
        print("3. the mobile pushed it back with *8; the desk answered, the mobile was released")
        time.sleep(2)

        audio = bob_hangs_up(capture, bob, desk, invites=1)
        middle = pulled - answered + 0.5
        heard = [tone_between(audio, a, b) for a, b in [(0.3, 1.3), (middle, middle + 1.0), (-1.5, -0.3)]]
        print("bob heard {:.0f} Hz (desk), {:.0f} Hz (mobile), {:.0f} Hz (desk)".format(*heard))
        assert 380 < heard[0] < 500 and 620 < heard[1] < 780 and 380 < heard[2] < 500, heard

        cdr = api("/api/cdrs?limit=1")[0]
        seen = [(f["kind"], f["trigger"], f["result"]) for f in cdr["flips"]]
        assert seen == [("pull", "pull-code", "done"), ("push", "push-code", "done")], seen
        print("the call record lists both flips")
    finally:
        emergency.kill()


if __name__ == "__main__":
    sys.exit(main())
