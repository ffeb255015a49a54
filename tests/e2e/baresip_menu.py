#!/usr/bin/env python3
"""A baresip phone calls a business's flip number in active mode.

baresip stands for a PSTN caller on the trunk (it sends from 127.0.0.2, the trunk's
address, without registering); SIPp stands for the billing department behind its return
number, echoing what it hears. wasmpbx runs the real `front-door` script: the caller hears
the welcome, presses 2 during the menu (RFC 4733 from baresip's keypad), hears
"transferring", and is connected to billing, where it hears its own 440 Hz tone echoed.
The call is recorded (`record = "true"`): the recording, fetched from the admin API as
soon as the record names it, is as long as the call, with the welcome on the right and
the caller's tone on the left.

Run inside a network namespace whose only interface is lo with a default route on it
(baresip takes its media address from the default route): host/server/tests/integration/baresip.rs does that.

    python3 tests/e2e/baresip_menu.py /path/to/wasmpbx /path/to/front-door.wasm tests/sipp/department.xml
"""

import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import wave

from baresip_call import Phone, api, dominant_hz, received_audio, report_failure, start_server

FLIP = "+61290000001"
BILLING = "+61290000050"
WELCOME_S = 2.218


def speech_seconds(samples, rate, start_s, end_s):
    """How much of [start, end) has audio above a whisper, in 100 ms windows."""
    window = rate // 10
    loud = 0
    for i in range(int(start_s * rate), int(end_s * rate) - window + 1, window):
        chunk = samples[i:i + window]
        power = sum(s * s for s in chunk) / len(chunk)
        loud += power > 300 ** 2
    return loud / 10


def main():
    binary, front_door, department_xml = sys.argv[1:4]
    work = tempfile.mkdtemp(prefix="wasmpbx-baresip-menu-")
    server = start_server(binary, work, scripts={"front-door": front_door}, extra=f"""[media]
recordings = "{work}/recordings"
[[trunks]]
name = "pstn"
uri = "sip:127.0.0.1:5090"
inbound = ["127.0.0.2"]
[[locations]]
name = "sydney"
flip_number = "{FLIP}"
script = "front-door"
fallback_number = "+61290000099"
[locations.vars]
timezone = "Australia/Sydney"
sales = "+61290000040"
billing = "{BILLING}"
operator = "+61290000060"
record = "true"
""")
    sipp_dir = os.path.join(work, "billing")
    os.makedirs(sipp_dir)
    billing = subprocess.Popen(["sipp", "-sf", os.path.abspath(department_xml), "-i", "127.0.0.1", "-p", "5090",
                                "-mp", "16000", "-m", "1", "-d", "3000", "-rtp_echo", "-trace_msg",
                                "-nostdin", "-timeout", "60"],
                               cwd=sipp_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    caller = None
    try:
        time.sleep(1)
        caller = Phone(work, "caller", None, None, 5076, 4450, 10300, 440, listen_ip="127.0.0.2",
                       account="<sip:+61400000001@127.0.0.2;transport=udp>;regint=0;"
                               "audio_codecs=PCMU,PCMA;answermode=manual;ptime=20\n")
        caller.command("dial", f"sip:{FLIP}@127.0.0.1:5060")
        caller.wait("CALL_ESTABLISHED")
        print("the host answered")
        time.sleep(WELCOME_S + 1.0)  # the welcome, then a second of the menu
        caller.command("sndcode", "2")
        caller.wait("CALL_CLOSED", timeout=20)  # billing hangs up after 3 s
        print("the call went to billing and ended there")
        if billing.wait(timeout=10) != 0:
            raise RuntimeError("the billing SIPp failed its call")
        messages = "".join(open(os.path.join(sipp_dir, f)).read() for f in os.listdir(sipp_dir)
                           if f.endswith("_messages.log"))
        assert f"INVITE sip:{BILLING}@" in messages, "billing got the INVITE"

        samples, rate = received_audio(caller)
        heard = speech_seconds(samples, rate, 0.0, WELCOME_S)
        print(f"the caller heard {heard:.1f} s of the {WELCOME_S} s welcome")
        assert heard >= 1.5, f"the welcome should be audible: {heard} s"
        end = len(samples) / rate
        tail = samples[int((end - 2.0) * rate):int((end - 0.5) * rate)]
        hz = dominant_hz(tail, rate)
        print(f"at billing the caller heard {hz:.0f} Hz (its own 440 Hz tone, echoed)")
        assert 380 < hz < 500, f"the caller should hear billing's echo: {hz} Hz"

        time.sleep(0.5)
        cdr = api("/api/cdrs?limit=1")[0]
        tags = dict(cdr["tags"])
        assert tags.get("department") == "billing" and cdr["legs"][0][0] == BILLING, cdr
        assert "2" in cdr["digits"], cdr

        # The call's recording, from the API as soon as the record names it: stereo, as
        # long as the call, the welcome on the right (what the caller heard), the
        # caller's 440 Hz on the left.
        assert cdr["recording"], cdr
        with urllib.request.urlopen(f"http://127.0.0.1:8080/api/recordings/{cdr['session']}",
                                    timeout=5) as response:
            wav = wave.open(io.BytesIO(response.read()))
        assert (wav.getnchannels(), wav.getframerate()) == (2, 8000), wav.getparams()
        frames = wav.readframes(wav.getnframes())
        pcm = [int.from_bytes(frames[i:i + 2], "little", signed=True) for i in range(0, len(frames) - 1, 2)]
        left, right = pcm[0::2], pcm[1::2]
        length_ms = len(left) * 1000 // 8000
        print(f"recording {length_ms} ms, call {cdr['duration_ms']} ms")
        assert abs(length_ms - cdr["duration_ms"]) <= 300, (length_ms, cdr["duration_ms"])
        welcome = speech_seconds(right, 8000, 0.0, WELCOME_S)
        assert welcome >= 1.5, f"the welcome in the recording: {welcome} s"
        hz = dominant_hz(left[len(left) - 2 * 8000:len(left) - 4000], 8000)
        assert 380 < hz < 500, f"the caller's tone in the recording: {hz} Hz"
        print("1 passed, 0 failed")
        return 0
    except Exception as error:  # report everything the test saw, then fail
        report_failure(error, work, [caller] if caller else [])
        return 1
    finally:
        if caller:
            caller.stop()
        billing.kill()
        server.kill()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
