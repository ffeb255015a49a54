#!/usr/bin/env python3
"""Call flip with real phones: Bob calls Alice, her desk phone answers, and the call
moves between her desk phone and her mobile four times — pulled by the mobile (*77),
pushed back by the push code (*8 as RFC 4733), pushed by the desk's transfer key (REFER
to her own extension), pushed by the admin API — while Bob notices nothing.

Three baresip phones (desk 440 Hz, mobile 700 Hz, Bob 1000 Hz) and wasmpbx with the real
`flip-policy` script, in a network namespace of their own. A packet capture on the
namespace's loopback (AF_PACKET) checks what went to Bob: no INVITE at all (no
re-INVITE: his dialog is untouched) and one RTP stream — one SSRC, no sequence gap, no
timestamp jump beyond the time that passed, across all four switches. Bob's recording
has the desk's tone and the mobile's in turn, and the call record lists four flips.

    python3 tests/e2e/baresip_flip.py /path/to/wasmpbx /path/to/flip-policy.wasm
"""

import struct
import sys
import time
import urllib.request

from baresip_call import (ALICE_AND_BOB, LoopbackCapture, alice_and_bob, api, dominant_hz, received_audio, run,
                          start_server)

BOB_SIP = 5074
BOB_RTP = range(10200, 10241)


class Capture(LoopbackCapture):
    """UDP packets to Bob's SIP and RTP ports, as (time, dst port, payload)."""

    def __init__(self):
        super().__init__(lambda proto, _sport, dport, payload: (dport, payload)
                         if proto == 17 and (dport == BOB_SIP or dport in BOB_RTP) else None)


def check_stream(packets):
    """One SSRC, sequence numbers without a gap, timestamps that follow the clock."""
    rtp = [(t, p) for t, port, p in packets
           if port in BOB_RTP and len(p) >= 12 and p[0] >> 6 == 2 and not 200 <= p[1] <= 204]  # not RTCP
    assert len(rtp) > 100, f"Bob received {len(rtp)} RTP packets"
    ssrcs = {struct.unpack(">I", p[8:12])[0] for _, p in rtp}
    assert len(ssrcs) == 1, f"Bob received {len(ssrcs)} streams: {ssrcs}"
    worst_gap = 0.0
    for (t0, a), (t1, b) in zip(rtp, rtp[1:]):
        seq_a, seq_b = struct.unpack(">H", a[2:4])[0], struct.unpack(">H", b[2:4])[0]
        assert (seq_b - seq_a) % 65536 == 1, f"sequence {seq_a} then {seq_b}"
        ts_a, ts_b = struct.unpack(">I", a[4:8])[0], struct.unpack(">I", b[4:8])[0]
        elapsed_samples = (t1 - t0) * 8000
        step = (ts_b - ts_a) % 2**32
        jump = step - elapsed_samples
        # The next 20 ms frame is continuous however late it arrives (a sender or a busy
        # machine stalling); any other step must follow the clock.
        assert step == 160 or abs(jump) < 8000 * 0.1, f"timestamp {ts_a} then {ts_b} over {t1 - t0:.3f} s"
        worst_gap = max(worst_gap, t1 - t0)
    # RTCP sender reports speak for the same stream, whichever phone sent them.
    reports = [p for t, port, p in packets if port in BOB_RTP and len(p) >= 8 and p[1] == 200]
    others = {struct.unpack(">I", p[4:8])[0] for p in reports} - ssrcs
    assert not others, f"sender reports for other streams reached bob: {others}"
    events = [p for _, p in rtp if p[1] & 0x7F == 101]
    assert not events, f"the push code reached bob: {len(events)} telephone-event packets"
    return len(rtp), len(reports), worst_gap


def bob_noticed_nothing(capture, bob, invites=0):
    """Once Bob's call is over: he got `invites` INVITEs (1 if he was called) — no
    re-INVITE — and one RTP stream (see `check_stream`). What he heard: (samples, rate)."""
    capture.stop()
    got = [p for _, port, p in capture.packets if port == BOB_SIP and p.startswith(b"INVITE ")]
    assert len(got) == invites, f"bob got {len(got)} INVITEs, {invites} expected: no re-INVITE"
    count, reports, worst_gap = check_stream(capture.packets)
    print(f"bob received one RTP stream: {count} packets ({reports} sender reports for it), "
          f"no sequence gap, no key of the push code, longest silence {worst_gap * 1000:.0f} ms")
    return received_audio(bob)


def bob_hangs_up(capture, bob, device, invites=0):
    """Bob, still in his call with Alice's `device`, hangs up; once both sides are
    closed, what he heard (see `bob_noticed_nothing`)."""
    assert not bob.saw("CALL_CLOSED"), "bob's call must go on"
    bob.command("hangup")
    device.wait("CALL_CLOSED")
    bob.wait("CALL_CLOSED")
    time.sleep(0.5)
    return bob_noticed_nothing(capture, bob, invites)


def tone_between(audio, start, end):
    """The dominant frequency of `audio` (samples, rate) from `start` to `end` seconds;
    negative times count from its end."""
    samples, rate = audio
    seconds = len(samples) / rate
    start, end = (t + seconds if t < 0 else t for t in (start, end))
    return dominant_hz(samples[int(start * rate):int(end * rate)], rate)


def main():
    binary, flip_policy = sys.argv[1:3]
    return run("wasmpbx-baresip-flip-",
               lambda work: start_server(binary, work, ALICE_AND_BOB, scripts={"flip-policy": flip_policy}),
               four_flips)


def four_flips(work, phones):
    capture = Capture()
    capture.start()
    desk, mobile, bob, names = alice_and_bob(work, phones)
    desk_name, mobile_name = names[desk], names[mobile]
    print(f"alice's devices: desk {desk_name!r}, mobile {mobile_name!r}")

    bob.command("dial", "sip:2001@127.0.0.1")
    desk.wait("CALL_INCOMING")
    mobile.wait("CALL_INCOMING")
    desk.command("accept")
    bob.wait("CALL_ESTABLISHED")
    mobile.wait("CALL_CLOSED")
    print("bob is talking to alice's desk phone")
    time.sleep(2)

    mobile.command("dial", "sip:*77@127.0.0.1")
    mobile.wait("CALL_ESTABLISHED")
    desk.wait("CALL_CLOSED")
    print("1. the mobile pulled the call (*77); the desk phone was released")
    time.sleep(2)

    mobile.command("sndcode", "*8")
    desk.wait("CALL_INCOMING")
    desk.command("accept")
    desk.wait("CALL_ESTABLISHED")
    mobile.wait("CALL_CLOSED")
    print("2. the mobile pushed it back with *8; the desk answered, the mobile was released")
    time.sleep(2)

    desk.command("transfer", "sip:2001@127.0.0.1")
    mobile.wait("CALL_INCOMING")
    mobile.command("accept")
    mobile.wait("CALL_ESTABLISHED")
    desk.wait("CALL_CLOSED")
    print("3. the desk's transfer key to 2001 pushed it; the mobile answered, the desk was released")
    time.sleep(2)

    session = api("/api/calls")[0]["session"]
    request = urllib.request.Request(f"http://127.0.0.1:8080/api/calls/{session}/flip", data=b"",
                                     method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 202, response.status
    desk.wait("CALL_INCOMING")
    desk.command("accept")
    desk.wait("CALL_ESTABLISHED")
    mobile.wait("CALL_CLOSED")
    print("4. the admin API pushed it; the desk answered, the mobile was released")
    time.sleep(3)

    audio = bob_hangs_up(capture, bob, desk)
    early, late = tone_between(audio, 0.5, 1.5), tone_between(audio, -2.0, -0.5)
    print(f"bob heard {early:.0f} Hz (the desk's 440) at the start and {late:.0f} Hz (the desk again) at the end")
    assert 380 < early < 500 and 380 < late < 500, (early, late)

    cdr = api("/api/cdrs?limit=1")[0]
    flips = cdr["flips"]
    seen = [(f["kind"], f["trigger"], f["from_device"], f["targets"], f["result"]) for f in flips]
    expected = [
        ("pull", "pull-code", desk_name, [mobile_name], "done"),
        ("push", "push-code", mobile_name, [desk_name], "done"),
        ("push", "refer", desk_name, [mobile_name], "done"),
        ("push", "api", mobile_name, [desk_name], "done"),
    ]
    assert seen == expected, seen
    assert cdr["disposition"] == "answered", cdr
    print("the call record lists the four flips")


if __name__ == "__main__":
    sys.exit(main())
