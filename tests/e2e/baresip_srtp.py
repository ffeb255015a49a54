#!/usr/bin/env python3
"""SDES-SRTP with real phones: baresip's own SRTP (libre) on every encrypted leg.

Alice's desk (440 Hz) and mobile (700 Hz) and Carol's phone (550 Hz) register over TLS
with `mediaenc=srtp-mand` (they take and offer nothing but RTP/SAVP), so their users
say `srtp = "required"`; Bob's phone (1000 Hz) registers over UDP with plain RTP, under
the default `[media] srtp = "optional"`. Every leg has its own keys, and the relay
decrypts and re-encrypts between them.

1. Carol (SRTP) calls Alice: the desk (SRTP) answers; they hear each other. The mobile
   dials *77 and takes the call over (SRTP, keys of its own); Carol now hears the
   mobile. What went to Carol's phone was one SRTP stream — one SSRC, sequence numbers
   without a gap across the flip — that Carol's phone decrypted throughout.
2. The desk (SRTP) calls Bob (plain RTP): each hears the other.

A capture of the loopback checks that no audio on an encrypted leg is readable (the
payloads are not the tones), that each packet there carries an 80-bit SRTP tag, and
that Bob's plain leg does carry his and the desk's tones in the clear.

    python3 tests/e2e/baresip_srtp.py /path/to/wasmpbx CERT.pem KEY.pem CA.pem FLIP-POLICY.wasm
"""

import os
import struct
import sys
import time
import wave

from baresip_call import LoopbackCapture, Phone, api, dominant_hz, received_audio, run, start_server, \
    wait_registrations

USERS = """[[users]]
id = "alice"
extension = "2001"
password = "alice-secret"
srtp = "required"
[[users]]
id = "bob"
extension = "2002"
password = "bob-secret"
[[users]]
id = "carol"
extension = "2003"
password = "carol-secret"
srtp = "required"
"""

DESK_RTP, MOBILE_RTP, BOB_RTP, CAROL_RTP = 10000, 10100, 10200, 10300
ENCRYPTED = {"desk": DESK_RTP, "mobile": MOBILE_RTP, "carol": CAROL_RTP}
SRTP_TAG = 10  # AES_CM_128_HMAC_SHA1_80


def phone_of(port):
    for name, low in list(ENCRYPTED.items()) + [("bob", BOB_RTP)]:
        if low <= port <= low + 40:
            return name
    return None


def capture_rtp():
    """RTP (not RTCP) to each phone's media ports: (phone, payload)."""
    def keep(proto, _sport, dport, payload):
        name = phone_of(dport)
        if proto != 17 or name is None or len(payload) < 12 or payload[0] >> 6 != 2 or 200 <= payload[1] <= 204:
            return None
        return name, payload
    return LoopbackCapture(keep)


def srtp_phone(work, name, extension, password, sip_port, ctrl_port, rtp, tone, ca):
    return Phone(work, name, extension, None, sip_port, ctrl_port, rtp, tone,
                 account=f"<sip:{extension}@127.0.0.1;transport=tls>;auth_pass={password};regint=300;"
                         "audio_codecs=PCMU,PCMA;answermode=manual;ptime=20;mediaenc=srtp-mand\n",
                 config_extra=f"sip_cafile {ca}\nmodule srtp.so\n")


def last_call_audio(phone):
    """(samples, rate) of what a phone received in its last call (sndfile names its
    recordings by the time the call started)."""
    files = sorted(f for f in os.listdir(phone.recordings) if f.endswith("-dec.wav"))
    with wave.open(os.path.join(phone.recordings, files[-1])) as w:
        frames, rate = w.readframes(w.getnframes()), w.getframerate()
    return [int.from_bytes(frames[i:i + 2], "little", signed=True) for i in range(0, len(frames) - 1, 2)], rate


def heard_hz(samples, rate, start, seconds):
    """The dominant frequency of what a phone received from `start` s on, over `seconds`."""
    stretch = samples[int(start * rate):int((start + seconds) * rate)]
    return dominant_hz(stretch, rate) if len(stretch) > rate // 2 else 0.0


def payload_hz(payloads):
    """The dominant frequency the payloads would have as G.711 audio, by the sign bits'
    changes: a tone's frequency for a tone, about 2000 Hz for encrypted noise."""
    signs = [b >> 7 for p in payloads for b in p]
    crossings = sum(1 for a, b in zip(signs, signs[1:]) if a != b)
    return crossings / 2 / (len(signs) / 8000) if signs else 0.0


def main():
    binary, cert, key, ca, flip_policy = sys.argv[1:6]
    sip = ('listen = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060", "tls:127.0.0.1:5061"]\n'
           f'tls_cert = "{cert}"\ntls_key = "{key}"')
    return run("wasmpbx-baresip-srtp-",
               lambda work: start_server(binary, work, USERS, scripts={"flip-policy": flip_policy},
                                         sip_settings=sip),
               lambda work, phones: encrypted_calls(work, phones, ca))


def encrypted_calls(work, phones, ca):
    capture = capture_rtp()
    capture.start()
    desk = srtp_phone(work, "alice-desk", "2001", "alice-secret", 5070, 4444, DESK_RTP, 440, ca)
    mobile = srtp_phone(work, "alice-mobile", "2001", "alice-secret", 5072, 4446, MOBILE_RTP, 700, ca)
    carol = srtp_phone(work, "carol", "2003", "carol-secret", 5076, 4450, CAROL_RTP, 550, ca)
    bob = Phone(work, "bob", "2002", "bob-secret", 5074, 4448, BOB_RTP, 1000)
    phones += [desk, mobile, carol, bob]
    wait_registrations(4)

    carol.command("dial", "sip:2001@127.0.0.1;transport=tls")
    desk.wait("CALL_INCOMING")
    mobile.wait("CALL_INCOMING")
    desk.command("accept")
    carol.wait("CALL_ESTABLISHED")
    desk.wait("CALL_ESTABLISHED")
    time.sleep(3)
    print("carol called alice over SRTP; the desk answered")
    mobile.command("dial", "sip:*77@127.0.0.1;transport=tls")
    mobile.wait("CALL_ESTABLISHED")
    desk.wait("CALL_CLOSED")
    time.sleep(3)
    print("the mobile pulled the call (*77) with SRTP keys of its own")
    carol.command("hangup")
    carol.wait("CALL_CLOSED")
    mobile.wait("CALL_CLOSED")
    flips = api("/api/cdrs?limit=1")[0]["flips"]
    assert [f["result"] for f in flips] == ["done"], flips

    desk.command("dial", "sip:2002@127.0.0.1;transport=tls")
    bob.wait("CALL_INCOMING")
    bob.command("accept")
    desk.wait("CALL_ESTABLISHED")
    time.sleep(3)
    bob.command("hangup")
    desk.wait("CALL_CLOSED")
    bob.wait("CALL_CLOSED")
    print("the desk (SRTP) called bob (plain RTP)")
    assert api("/api/calls") == [], "no call left behind"
    capture.stop()

    # Carol heard the desk, then the mobile: her phone decrypted both, one stream.
    samples, rate = received_audio(carol)
    first, last = heard_hz(samples, rate, 0.5, 2), heard_hz(samples, rate, len(samples) / rate - 2.5, 2)
    print(f"carol heard {first:.0f} Hz, then {last:.0f} Hz (desk 440, mobile 700)")
    assert 380 < first < 500 and 640 < last < 760, (first, last)
    samples, rate = received_audio(bob)
    bob_heard = heard_hz(samples, rate, 0.5, 2)
    samples, rate = last_call_audio(desk)
    desk_heard = heard_hz(samples, rate, len(samples) / rate - 2.5, 2)
    print(f"bob heard {bob_heard:.0f} Hz (desk 440); the desk heard {desk_heard:.0f} Hz (bob 1000)")
    assert 380 < bob_heard < 500 and 900 < desk_heard < 1100, (bob_heard, desk_heard)

    to = {name: [p for _, n, p in capture.packets if n == name] for name in ("desk", "mobile", "carol", "bob")}
    to_carol = to["carol"]
    assert len(to_carol) > 200, f"carol received {len(to_carol)} RTP packets"
    ssrcs = {struct.unpack(">I", p[8:12])[0] for p in to_carol}
    assert len(ssrcs) == 1, f"carol received {len(ssrcs)} streams: {ssrcs}"
    sequences = [struct.unpack(">H", p[2:4])[0] for p in to_carol]
    gaps = [(a, b) for a, b in zip(sequences, sequences[1:]) if (b - a) % 65536 != 1]
    assert not gaps, f"sequence gaps towards carol: {gaps[:5]}"
    print(f"to carol: {len(to_carol)} SRTP packets, one SSRC, no sequence gap across the flip")
    for name in ENCRYPTED:
        audio = [p[12:-SRTP_TAG] for p in to[name] if p[1] & 0x7F in (0, 8)]
        assert len(audio) > 100, f"{name} received {len(audio)} audio packets"
        assert all(len(p) == 160 for p in audio), f"{name}: not every packet has an 80-bit tag"
        hz = payload_hz(audio)
        print(f"to {name}: {len(audio)} encrypted packets, payloads read as audio: {hz:.0f} Hz (noise)")
        assert hz > 1600, f"{name}'s payloads read as a tone: {hz:.0f} Hz"
    bob_payloads = [p[12:] for p in to["bob"] if p[1] & 0x7F in (0, 8)]
    hz = payload_hz(bob_payloads)
    print(f"to bob: {len(bob_payloads)} plain packets, payloads read as audio: {hz:.0f} Hz (the desk's 440)")
    assert 380 < hz < 500, f"bob's plain leg: {hz:.0f} Hz"


if __name__ == "__main__":
    sys.exit(main())
