#!/usr/bin/env python3
"""A call flips between a baresip desk phone and the browser phone, and back.

Bob (baresip, 1000 Hz) calls Alice; her desk phone (baresip, 440 Hz) answers. Alice signs
in to the browser phone at /phone (headless Chromium driven by playwright-core, its
fake microphone beeping) and presses Take over: the browser has the call over WebRTC,
the desk phone gets BYE. She presses Flip: the desk phone rings, answers, and has the
call back; the browser is released. Bob notices nothing: a packet capture on the
namespace's loopback sees no INVITE reach him after his own call's, and one RTP stream
(one SSRC, no sequence gap, no timestamp jump beyond the time that passed) across both
switches; he hears the desk at the start and at the end, and the browser's beeps while
it has the call — the desk's tone up to the switch and the browser's audio after it,
never both (the silence at each switch is printed). The call record lists the pull and
the push.

Run inside a network namespace (host/server/tests/integration/baresip.rs does that):

    python3 tests/e2e/baresip_browser_flip.py /path/to/wasmpbx /path/to/flip-policy.wasm
"""

import math
import os
import subprocess
import sys
import threading
import time
import urllib.request

from baresip_call import ALICE_AND_BOB, Phone, api, run, start_server, wait_registrations
from baresip_flip import BOB_RTP, BOB_SIP, Capture, bob_hangs_up, tone_between

PHONE_UI = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "browser", "phone_ui.mjs")


class BrowserPhone:
    """tests/browser/phone_ui.mjs signed in as Alice: its output lines as they come."""

    def __init__(self):
        self.proc = subprocess.Popen(["node", PHONE_UI, "8080", "2001", "alice-secret", "2002"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text, timeout=40):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if text in self.lines:
                return
            if any(line.startswith("FAILED") for line in self.lines) or self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"the browser phone never printed {text!r}: {self.lines}")

    def flip(self):
        self.proc.stdin.write("flip\n")
        self.proc.stdin.close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.reader.join(timeout=5)


def browser_audio(capture, start, end):
    """The PCMU samples Bob got between `start` and `end` (wall time): how many, and how
    many of them loud."""
    samples = [ulaw(b) for t, port, p in capture.packets if start <= t < end and port != BOB_SIP and len(p) > 12
               and p[1] & 0x7F == 0 for b in p[12:]]
    return len(samples), sum(1 for s in samples if abs(s) > 1000)


def silences_at_the_switches(capture):
    """The far end's silence at each switch between the desk and the browser: from the
    last packet carrying the desk's steady tone to the next packet (the browser's), and
    from the browser's last to the desk's first — as (which way, seconds)."""
    rtp = [(t, p) for t, port, p in capture.packets if port in BOB_RTP and len(p) > 12 and p[1] & 0x7F == 0]
    desk = [is_the_desks_tone(p[12:]) for _, p in rtp]
    return [("to the browser" if desk[i - 1] else "back to the desk", rtp[i][0] - rtp[i - 1][0])
            for i in range(1, len(rtp)) if desk[i] != desk[i - 1]]


def is_the_desks_tone(payload, hz=440, rate=8000):
    """Whether a PCMU frame is (nearly all) the desk's tone: its power at `hz`
    (Goertzel) against the frame's whole power."""
    samples = [ulaw(b) for b in payload]
    energy = sum(x * x for x in samples)
    if energy < len(samples) * 1000 ** 2:
        return False
    coefficient = 2 * math.cos(2 * math.pi * hz / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coefficient * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coefficient * s1 * s2
    return power / (len(samples) / 2 * energy) > 0.5


def ulaw(byte):
    """One G.711 µ-law byte as a 16-bit linear sample."""
    byte = ~byte & 0xFF
    magnitude = ((((byte & 0x0F) << 3) + 0x84) << ((byte & 0x70) >> 4)) - 0x84
    return -magnitude if byte & 0x80 else magnitude


def main():
    binary, flip_policy = sys.argv[1:3]
    return run("wasmpbx-baresip-browser-",
               lambda work: start_server(binary, work, ALICE_AND_BOB, scripts={"flip-policy": flip_policy}),
               desk_to_browser_and_back)


def desk_to_browser_and_back(work, phones):
    capture = Capture()
    capture.start()
    desk = Phone(work, "alice-desk", "2001", "alice-secret", 5070, 4444, 10000, 440)
    bob = Phone(work, "bob", "2002", "bob-secret", 5074, 4448, 10200, 1000)
    phones += [desk, bob]
    wait_registrations(2)

    bob.command("dial", "sip:2001@127.0.0.1")
    desk.wait("CALL_INCOMING")
    desk.command("accept")
    bob.wait("CALL_ESTABLISHED")
    print("bob is talking to alice's desk phone")
    time.sleep(2)

    browser = BrowserPhone()
    try:
        browser.wait_for("took over")
        desk.wait("CALL_CLOSED")
        listed = [line for line in browser.lines if line.startswith("call list:")]
        print(f"1. the browser phone pressed Take over; the desk phone got BYE ({'; '.join(listed)})")
        on_browser = api("/api/calls")[0]
        assert on_browser["state"] == "connected", on_browser
        took_over = time.time()
        time.sleep(3)

        flipped = time.time()
        browser.flip()
        desk.wait("CALL_INCOMING")
        desk.command("accept")
        desk.wait("CALL_ESTABLISHED")
        browser.wait_for("flipped back")
        browser.wait_for("1 passed, 0 failed")
        print("2. the browser phone pressed Flip; the desk phone rang, answered, and has the call back")
        with urllib.request.urlopen("http://127.0.0.1:8080/metrics", timeout=5) as response:
            metrics = response.read().decode()
        assert "\nwasmpbx_webrtc_bridges 0\n" in metrics, "the browser's bridge stopped with its leg"
        print("   the browser's WebRTC bridge stopped once the desk had the call")
    finally:
        browser.stop()
        print("\n".join(f"   browser: {line}" for line in browser.lines))
    time.sleep(2)

    audio = bob_hangs_up(capture, bob, desk)
    switches = silences_at_the_switches(capture)
    # Make before break, and no more: one device's audio, then the other's, never both.
    assert [way for way, _ in switches] == ["to the browser", "back to the desk"], switches
    print("bob's silence at the switches: " + ", ".join(f"{s * 1000:.0f} ms {way}" for way, s in switches))
    early, late = tone_between(audio, 0.5, 1.5), tone_between(audio, -1.5, -0.3)
    print(f"bob heard {early:.0f} Hz (the desk's 440) at the start and {late:.0f} Hz (the desk again) at the end")
    assert 380 < early < 500 and 380 < late < 500, (early, late)

    cdr = api("/api/cdrs?limit=1")[0]
    seen = [(f["kind"], f["trigger"], f["result"]) for f in cdr["flips"]]
    assert seen == [("pull", "pull-code", "done"), ("push", "push-code", "done")], cdr["flips"]
    print("the call record lists the pull and the push")
    samples, loud = browser_audio(capture, took_over + 0.5, flipped)
    print(f"while the browser had the call bob got {samples} samples, {loud} of them loud: "
          "the beeps of Chromium's fake microphone, not the desk's steady tone")
    assert 800 < loud < samples // 2, (samples, loud)


if __name__ == "__main__":
    sys.exit(main())
