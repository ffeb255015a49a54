#!/usr/bin/env python3
"""Flip timing with real phones: Bob (baresip) calls Alice; her desk phone and mobile
(baresip, answering automatically) take the call in turn, N times, by pull (*77 from the
idle device) or by push (POST /api/calls/{id}/flip). A capture on the namespace's
loopback times each switch:

- inside the host: from the new device's request reaching the host (the *77 INVITE, or
  the target's 200 OK) to the host's BYE to the old device;
- to the far end: from the new device's 200 OK (push) / the host's 200 OK to it (pull)
  to the first packet of the new device's audio (told apart by its tone) reaching Bob;
- the longest gap in Bob's RTP around each switch.

Run inside a network namespace (tests/bench/flip.sh does):

    python3 tests/bench/flip_bench.py WASMPBX FLIP_POLICY_WASM pull|push N
"""

import json
import os
import shutil
import struct
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
from baresip_call import ALICE_AND_BOB, LoopbackCapture, Phone, api, start_server, wait_registrations  # noqa: E402
from baresip_flip import BOB_SIP  # noqa: E402

DESK, MOBILE, HOST = 5070, 5072, 5060
TONES = {DESK: 440, MOBILE: 700}


def ulaw_crossings(payload):
    """Zero crossings in a 20 ms µ-law frame: 440 Hz ≈ 17.6, 700 Hz ≈ 28."""
    signs = [b & 0x80 for b in payload]  # µ-law: the top bit set means a positive sample
    return sum(1 for a, b in zip(signs, signs[1:]) if a != b)


def tone_of(payload):
    crossings = ulaw_crossings(payload)
    return 700 if crossings > 23 else 440


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))] if values else float("nan")


class SipLog(LoopbackCapture):
    """All UDP on loopback to or from the host's SIP port, plus Bob's RTP, as
    (time, source port, destination port, payload)."""

    def __init__(self):
        super().__init__(lambda proto, sport, dport, payload: (sport, dport, payload)
                         if proto == 17 and (HOST in (sport, dport) or 10200 <= dport <= 10240) else None)


def main():
    binary, flip_policy, mode, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    work = tempfile.mkdtemp(prefix="wasmpbx-flip-bench-")
    server = start_server(binary, work, ALICE_AND_BOB, scripts={"flip-policy": flip_policy}, log_level="warn")
    auto = "<sip:2001@127.0.0.1;transport=udp>;auth_pass=alice-secret;regint=300;audio_codecs=PCMU;answermode=auto;ptime=20\n"
    phones = []
    capture = SipLog()
    try:
        time.sleep(1)
        desk = Phone(work, "desk", "2001", "alice-secret", DESK, 4444, 10000, TONES[DESK], account=auto)
        mobile = Phone(work, "mobile", "2001", "alice-secret", MOBILE, 4446, 10100, TONES[MOBILE], account=auto)
        bob = Phone(work, "bob", "2002", "bob-secret", BOB_SIP, 4448, 10200, 1000)
        phones = [desk, mobile, bob]
        wait_registrations(3)
        capture.start()
        bob.command("dial", "sip:2001@127.0.0.1")
        bob.wait("CALL_ESTABLISHED")
        # Both auto-answer; the one that lost the fork is cancelled.
        time.sleep(1.5)
        session = api("/api/calls")[0]["session"]
        names = {r["source"].rsplit(":", 1)[1]: r["device"] for r in api("/api/registrations")}
        on = lambda: api("/api/calls")[0]["forwarded_to"].split("/", 1)[1]  # noqa: E731
        switches = []
        busy = 0.0  # time spent flipping, without the pauses between flips
        for _ in range(count):
            current = on()
            requested = time.time()
            if mode == "push":
                request = urllib.request.Request(f"http://127.0.0.1:8080/api/calls/{session}/flip",
                                                 data=b"", method="POST")
                urllib.request.urlopen(request, timeout=5).read()
            else:
                # The device not in the call pulls.
                idle = mobile if current == names[str(DESK)] else desk
                idle.command("dial", "sip:*77@127.0.0.1")
            switches.append(requested)
            deadline = requested + 3
            while on() == current and time.time() < deadline:
                time.sleep(0.005)
            busy += time.time() - requested
            time.sleep(0.5)  # let audio flow before the next switch
        bob.command("hangup")
        time.sleep(0.5)
        capture.stop()
        cdr = api("/api/cdrs?limit=1")[0]
        done = [f for f in cdr["flips"] if f["result"] == "done"]

        sip = [(t, s, d, p) for t, s, d, p in capture.packets if HOST in (s, d)]
        rtp = [(t, p) for t, s, d, p in capture.packets
               if 10200 <= d <= 10240 and len(p) > 12 and p[0] >> 6 == 2 and not 200 <= p[1] <= 204
               and p[1] & 0x7F == 0]
        inside, to_far_end, gaps = [], [], []
        for requested in switches:
            window = [x for x in sip if requested <= x[0] < requested + 1.0]
            if mode == "push":
                trigger = next((x for x in window if x[2] == HOST and x[3].startswith(b"SIP/2.0 200")
                                and b"INVITE" in x[3].split(b"CSeq:")[1][:20]), None)
            else:
                trigger = next((x for x in window if x[2] == HOST and x[3].startswith(b"INVITE sip:*77")
                                and b"Proxy-Authorization" in x[3]), None)
            if trigger is None:
                continue
            new_port = trigger[1]
            old_port = DESK if new_port == MOBILE else MOBILE
            bye = next((x for x in window if x[1] == HOST and x[2] == old_port and x[3].startswith(b"BYE ")), None)
            if bye:
                inside.append((bye[0] - trigger[0]) * 1000)
            answered = trigger[0] if mode == "push" else next(
                (x[0] for x in window if x[1] == HOST and x[2] == new_port and x[3].startswith(b"SIP/2.0 200")), None)
            first = next((t for t, p in rtp if t >= (answered or 0) and tone_of(p[12:]) == TONES[new_port]), None)
            if answered and first:
                to_far_end.append((first - answered) * 1000)
            around = [t for t, _ in rtp if requested - 0.5 <= t <= requested + 1.0]
            if len(around) > 1:
                gaps.append(max(b - a for a, b in zip(around, around[1:])) * 1000)
        ssrcs = {struct.unpack(">I", p[8:12])[0] for _, p in rtp}
        print(json.dumps({
            "mode": mode,
            "flips_requested": count,
            "flips_done": len(done),
            "flips_per_second_back_to_back": round(len(done) / busy, 1),
            "far_end_ssrcs": len(ssrcs),
            "inside_host_ms": {"p50": round(percentile(inside, 50), 2), "p99": round(percentile(inside, 99), 2), "n": len(inside)},
            "answer_to_far_end_ms": {"p50": round(percentile(to_far_end, 50), 2), "p99": round(percentile(to_far_end, 99), 2), "n": len(to_far_end)},
            "longest_far_end_gap_ms": {"p50": round(percentile(gaps, 50), 1), "p99": round(percentile(gaps, 99), 1), "max": round(max(gaps, default=0), 1)},
        }))
        return 0
    finally:
        capture.running = False
        for phone in phones:
            phone.stop()
        server.kill()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
