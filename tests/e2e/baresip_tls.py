#!/usr/bin/env python3
"""A phone on SIP over TLS and a phone on plain UDP, through wasmpbx's `tls:` listener.

Alice's desk phone (baresip, 440 Hz) registers over TLS, trusting the test's CA; Bob's
(1000 Hz) over UDP. Bob calls Alice: the desk rings over its TLS connection, answers,
they hear each other's tones, the desk hangs up (its BYE goes to the host's TLS Contact).
Then the desk calls Bob and Bob hangs up (his BYE reaches the desk over TLS). Everything
on the TLS port is captured: TLS records only, not one byte of readable SIP; and the
desk never sends plain SIP from its UDP or TCP port.

Run inside a namespace of its own (host/server/tests/integration/baresip.rs does that):

    python3 tests/e2e/baresip_tls.py /path/to/wasmpbx CERT.pem KEY.pem CA.pem
"""

import sys
import time

from baresip_call import (ALICE_AND_BOB, LoopbackCapture, Phone, api, received_tone, run, start_server,
                          wait_registrations)

TLS_PORT = 5061
DESK_SIP = 5070  # the desk's plain SIP port (UDP and TCP); its TLS one is 5071


def capture_tls(plain_port):
    """A capture of what goes over the TLS port ("tls", payload) and of what is sent from
    `plain_port` in the clear ("plain", payload)."""

    def keep(proto, sport, dport, payload):
        if proto == 6 and TLS_PORT in (sport, dport):
            return "tls", payload
        if sport == plain_port:
            return "plain", payload
        return None

    return LoopbackCapture(keep)


def main():
    binary, cert, key, ca = sys.argv[1:5]
    sip = (f'listen = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060", "tls:127.0.0.1:{TLS_PORT}"]\n'
           f'tls_cert = "{cert}"\ntls_key = "{key}"')
    return run("wasmpbx-baresip-tls-",
               lambda work: start_server(binary, work, ALICE_AND_BOB, sip_settings=sip),
               lambda work, phones: calls_over_tls(work, phones, ca))


def calls_over_tls(work, phones, ca):
    capture = capture_tls(DESK_SIP)
    capture.start()
    desk = Phone(work, "alice-desk", "2001", None, DESK_SIP, 4444, 10000, 440,
                 account="<sip:2001@127.0.0.1;transport=tls>;auth_pass=alice-secret;regint=300;"
                         "audio_codecs=PCMU,PCMA;answermode=manual;ptime=20\n",
                 config_extra=f"sip_cafile {ca}\n")
    bob = Phone(work, "bob", "2002", "bob-secret", 5074, 4448, 10200, 1000)
    phones += [desk, bob]
    wait_registrations(2)
    transports = {r["user_id"]: r["transport"] for r in api("/api/registrations")}
    assert transports == {"alice": "tls", "bob": "udp"}, transports
    print("registered: the desk over TLS, bob over UDP")

    bob.command("dial", "sip:2001@127.0.0.1")
    desk.wait("CALL_INCOMING")
    desk.command("accept")
    bob.wait("CALL_ESTABLISHED")
    desk.wait("CALL_ESTABLISHED")
    time.sleep(3)
    desk.command("hangup")
    bob.wait("CALL_CLOSED")
    desk.wait("CALL_CLOSED")
    print("bob called the desk over TLS; the desk hung up")
    bob_heard, desk_heard = received_tone(bob), received_tone(desk)
    print(f"bob heard {bob_heard[0]:.1f} s, dominant {bob_heard[1]:.0f} Hz (desk plays 440)")
    print(f"desk heard {desk_heard[0]:.1f} s, dominant {desk_heard[1]:.0f} Hz (bob plays 1000)")
    assert bob_heard[0] > 2 and 380 < bob_heard[1] < 500, f"bob should hear the desk: {bob_heard}"
    assert desk_heard[0] > 2 and 900 < desk_heard[1] < 1100, f"the desk should hear bob: {desk_heard}"

    desk.command("dial", "sip:2002@127.0.0.1;transport=tls")
    bob.wait("CALL_INCOMING")
    bob.command("accept")
    desk.wait("CALL_ESTABLISHED")
    time.sleep(1)
    bob.command("hangup")
    desk.wait("CALL_CLOSED")
    bob.wait("CALL_CLOSED")
    print("the desk called bob over TLS; bob hung up")
    assert api("/api/calls") == [], "no call left behind"

    capture.stop()
    payloads = [p for _, kind, p in capture.packets if kind == "tls"]
    plain = sum(1 for _, kind, _ in capture.packets if kind == "plain")
    wire = b"".join(payloads)
    records = [p for p in payloads if p[0] in (0x14, 0x15, 0x16, 0x17) and p[1] == 0x03]
    print(f"TLS port: {len(payloads)} segments with data, {len(wire)} bytes")
    assert len(records) > 10, f"TLS records on the wire: {len(records)}"
    for word in (b"SIP/2.0", b"REGISTER", b"INVITE", b"BYE sip", b"alice", b"2001@"):
        assert word not in wire, f"readable {word!r} on the TLS port"
    assert plain == 0, f"the desk sent {plain} packets of plain SIP"


if __name__ == "__main__":
    sys.exit(main())
