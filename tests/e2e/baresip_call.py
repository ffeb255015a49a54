#!/usr/bin/env python3
"""Three baresip phones and wasmpbx, inside a network namespace of their own.

Alice has a desk phone and a mobile (the same extension, 2001), Bob one phone (2002).
Bob calls 2001: both of Alice's devices ring, the desk phone answers, the mobile stops
ringing, audio flows both ways through the host's relay, Bob hangs up. The host asks
both phones every second whether the call is still there (`dialog_keepalive_s = 1`):
each answers its in-dialog OPTIONS, and the call goes on until Bob hangs up. Each phone plays
its own tone (desk 440 Hz, mobile 700 Hz, Bob 1000 Hz), so the recordings show who
heard whom.

Run inside a namespace whose only interface is lo with a default route on it (baresip
takes its media address from the default route): host/server/tests/integration/baresip.rs does that.

    python3 tests/e2e/baresip_call.py /path/to/wasmpbx
"""

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import wave

TIMEOUT = 15


class Phone:
    """One baresip instance, driven over ctrl_tcp (netstring JSON)."""

    def __init__(self, work, name, extension, password, sip_port, ctrl_port, rtp, tone_hz,
                 listen_ip="127.0.0.1", account=None, config_extra=""):
        self.name = name
        self.sip_port = sip_port
        self.dir = os.path.join(work, name)
        self.recordings = os.path.join(self.dir, "recordings")
        os.makedirs(self.recordings)
        tone = os.path.join(self.dir, "tone.wav")
        subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", tone, "synth", "30", "sine", str(tone_hz), "vol", "0.5"], check=True)
        with open(os.path.join(self.dir, "config"), "w") as f:
            f.write(f"""poll_method epoll
call_local_timeout 120
call_max_calls 4
sip_listen {listen_ip}:{sip_port}
audio_player aubridge,null
audio_source aufile,{tone}
audio_alert aubridge,null
rtp_ports {rtp}-{rtp + 40}
snd_path {self.recordings}
module_path /usr/lib/baresip/modules
module g711.so
module aufile.so
module sndfile.so
module aubridge.so
module_tmp uuid.so
module_tmp account.so
module_app menu.so
module_app ctrl_tcp.so
ctrl_tcp_listen 127.0.0.1:{ctrl_port}
dns_server 127.0.0.1:53
{config_extra}""")
        with open(os.path.join(self.dir, "accounts"), "w") as f:
            f.write(account or f"<sip:{extension}@127.0.0.1;transport=udp>;auth_pass={password};regint=300;"
                    "audio_codecs=PCMU,PCMA;answermode=manual;ptime=20\n")
        self.log = open(os.path.join(self.dir, "baresip.log"), "w")
        self.proc = subprocess.Popen(["baresip", "-f", self.dir, "-t", "60"], stdout=self.log, stderr=subprocess.STDOUT)
        self.buffer = b""
        self.events = []
        deadline = time.time() + TIMEOUT
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", ctrl_port), timeout=1)
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"{name}: ctrl_tcp never came up")
                time.sleep(0.2)

    def command(self, command, params=""):
        body = json.dumps({"command": command, "params": params, "token": command}).encode()
        self.sock.sendall(str(len(body)).encode() + b":" + body + b",")

    def _read(self, timeout):
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return
        if not data:
            raise RuntimeError(f"{self.name}: baresip closed its control socket")
        self.buffer += data
        while b":" in self.buffer:
            length, rest = self.buffer.split(b":", 1)
            if not length.isdigit() or len(rest) < int(length) + 1:
                return
            n = int(length)
            self.events.append(json.loads(rest[:n]))
            self.buffer = rest[n + 1:]

    def wait(self, event_type, timeout=TIMEOUT):
        deadline = time.time() + timeout
        while time.time() < deadline:
            for i, event in enumerate(self.events):
                if event.get("type") == event_type:
                    return self.events.pop(i)
            self._read(0.2)
        raise RuntimeError(f"{self.name}: no {event_type} within {timeout} s; saw {[e.get('type') for e in self.events]}")

    def saw(self, event_type):
        self._read(0.1)
        return any(e.get("type") == event_type for e in self.events)

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()


class LoopbackCapture(threading.Thread):
    """Every IPv4 UDP and TCP packet with data on lo (once), offered to
    `keep(proto, sport, dport, payload)` (proto 17 for UDP, 6 for TCP); what that returns,
    unless None, goes into `packets` as (time, *returned)."""

    def __init__(self, keep):
        super().__init__(daemon=True)
        self.keep = keep
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
        # Room for seconds of every stream in the namespace: a busy machine can stall this
        # thread, and a packet the capture drops would look like one the host lost.
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)  # SO_RCVBUFFORCE (root)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)
        self.packets = []
        self.running = True

    def run(self):
        while self.running:
            try:
                frame, address = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            if address[2] == socket.PACKET_OUTGOING:
                continue  # loopback shows every packet twice
            ip = frame[14:]
            if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] not in (6, 17):
                continue
            ihl = (ip[0] & 0x0F) * 4
            sport, dport = struct.unpack(">HH", ip[ihl:ihl + 4])
            header = (ip[ihl + 12] >> 4) * 4 if ip[9] == 6 else 8
            payload = ip[ihl + header:struct.unpack(">H", ip[2:4])[0]]
            if not payload:
                continue
            kept = self.keep(ip[9], sport, dport, payload)
            if kept is not None:
                self.packets.append((time.time(), *kept))

    def stop(self):
        self.running = False
        self.join()


ALICE_AND_BOB = """[[users]]
id = "alice"
extension = "2001"
password = "alice-secret"
[[users]]
id = "bob"
extension = "2002"
password = "bob-secret"
"""


def start_server(binary, work, extra, scripts=None, log_level="info", script_settings="",
                 sip_settings='listen = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]'):
    """`wasmpbx run` in `work` on loopback's SIP and HTTP defaults, with `scripts`
    ({name: built .wasm}) in its scripts folder, `sip_settings` and `script_settings`
    (TOML lines) in its `[sip]` and `[scripts]` tables and `extra` (TOML) after the
    common sections; the process. Its log is `work/server.log`."""
    os.makedirs(os.path.join(work, "scripts"), exist_ok=True)
    for name, built in (scripts or {}).items():
        shutil.copy(built, os.path.join(work, "scripts", f"{name}.wasm"))
    path = os.path.join(work, "wasmpbx.toml")
    with open(path, "w") as f:
        f.write(f"""[sip]
{sip_settings}
domain = "127.0.0.1"
[scripts]
dir = "{work}/scripts"
{script_settings}
[store]
path = "{work}/wasmpbx.db"
{extra}""")
    log = open(os.path.join(work, "server.log"), "w")
    return subprocess.Popen([binary, "run", "--config", path], stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", log_level)))


def run(prefix, start, test):
    """One end-to-end test in a fresh folder: `start(work)` starts the server (the
    process), `test(work, phones)` runs the test, adding the phones it starts to
    `phones`. Prints the verdict (and on failure everything the test saw), stops the
    phones and the server; the exit status."""
    work = tempfile.mkdtemp(prefix=prefix)
    server = start(work)
    phones = []
    try:
        time.sleep(1)
        test(work, phones)
        print("1 passed, 0 failed")
        return 0
    except Exception as error:  # report everything the test saw, then fail
        report_failure(error, work, phones)
        return 1
    finally:
        for phone in phones:
            phone.stop()
        server.kill()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


def alice_and_bob(work, phones):
    """Alice's desk phone (440 Hz) and mobile (700 Hz) and Bob's phone (1000 Hz),
    registered: (desk, mobile, bob, {phone: the device name the host gave it})."""
    desk = Phone(work, "alice-desk", "2001", "alice-secret", 5070, 4444, 10000, 440)
    mobile = Phone(work, "alice-mobile", "2001", "alice-secret", 5072, 4446, 10100, 700)
    bob = Phone(work, "bob", "2002", "bob-secret", 5074, 4448, 10200, 1000)
    phones += [desk, mobile, bob]
    wait_registrations(3)
    # All run baresip: the host names them by User-Agent, made unique.
    names = {r["source"].rsplit(":", 1)[1]: r["device"] for r in api("/api/registrations")}
    return desk, mobile, bob, {phone: names[str(phone.sip_port)] for phone in (desk, mobile)}


def wait_registrations(count):
    deadline = time.time() + TIMEOUT
    while len(api("/api/registrations")) < count:
        if time.time() > deadline:
            raise RuntimeError(f"registrations: {api('/api/registrations')}")
        time.sleep(0.3)


def report_failure(error, work, phones):
    """Everything a failed run saw: the error, the server's log, each phone's log."""
    print(f"FAILED: {error}")
    print(open(os.path.join(work, "server.log")).read()[-4000:])
    for phone in phones:
        print(f"--- {phone.name}")
        print(open(os.path.join(phone.dir, "baresip.log")).read()[-2000:])


def api(path):
    with urllib.request.urlopen(f"http://127.0.0.1:8080{path}", timeout=5) as response:
        return json.loads(response.read())


def received_audio(phone):
    """(samples, rate) of what a phone received (its sndfile recording)."""
    files = [f for f in os.listdir(phone.recordings) if f.endswith("-dec.wav")]
    if not files:
        return [], 8000
    with wave.open(os.path.join(phone.recordings, files[0])) as w:
        frames = w.readframes(w.getnframes())
        rate = w.getframerate()
    return [int.from_bytes(frames[i:i + 2], "little", signed=True) for i in range(0, len(frames) - 1, 2)], rate


def dominant_hz(samples, rate):
    """The dominant frequency of a stretch of audio, by zero crossings."""
    crossings = sum(1 for a, b in zip(samples, samples[1:]) if (a < 0) != (b < 0))
    return crossings / 2 / (len(samples) / rate)


def received_tone(phone):
    """(seconds of audio, dominant frequency) of what a phone received."""
    samples, rate = received_audio(phone)
    if not samples:
        return 0.0, 0.0
    loud = [s for s in samples if abs(s) > 1000]
    if len(loud) < rate // 2:
        return len(samples) / rate, 0.0
    return len(samples) / rate, dominant_hz(samples, rate)


def main():
    binary = sys.argv[1]
    sip = 'listen = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]\ndialog_keepalive_s = 1'
    return run("wasmpbx-baresip-", lambda work: start_server(binary, work, ALICE_AND_BOB, sip_settings=sip), call)


def keepalives(proto, sport, dport, payload):
    """The host's keep-alive OPTIONS and the phones' answers: (from port, to port, first line)."""
    if proto == 17 and b" OPTIONS\r\n" in payload:
        return sport, dport, payload.split(b"\r\n", 1)[0].decode(errors="replace")
    return None


def call(work, phones):
    desk, mobile, bob, names = alice_and_bob(work, phones)
    print("alice's devices:", sorted(names.values()))
    capture = LoopbackCapture(keepalives)
    capture.start()

    bob.command("dial", "sip:2001@127.0.0.1")
    desk.wait("CALL_INCOMING")
    mobile.wait("CALL_INCOMING")
    print("both of alice's devices ring")
    desk.command("accept")
    bob.wait("CALL_ESTABLISHED")
    desk.wait("CALL_ESTABLISHED")
    mobile.wait("CALL_CLOSED")
    print("the desk phone answered; the mobile stopped ringing")
    calls = api("/api/calls")
    assert len(calls) == 1 and calls[0]["state"] == "connected", calls
    time.sleep(3)
    bob.command("hangup")
    desk.wait("CALL_CLOSED")
    bob.wait("CALL_CLOSED")
    time.sleep(0.5)
    assert not mobile.saw("CALL_ESTABLISHED"), "the mobile must never have been connected"
    capture.stop()
    for phone in (bob, desk):
        asked = [p for p in capture.packets if p[2] == phone.sip_port and p[3].startswith("OPTIONS ")]
        answers = [p[3] for p in capture.packets if p[1] == phone.sip_port and p[3].startswith("SIP/2.0 ")]
        assert len(asked) >= 2, f"{phone.name} was asked: {capture.packets}"
        assert answers and all(a.startswith("SIP/2.0 200") for a in answers), f"{phone.name}: {answers}"
    print("both phones answered the host's keep-alive OPTIONS (200) and the call went on")

    bob_heard = received_tone(bob)
    desk_heard = received_tone(desk)
    print(f"bob heard {bob_heard[0]:.1f} s, dominant {bob_heard[1]:.0f} Hz (desk plays 440)")
    print(f"desk heard {desk_heard[0]:.1f} s, dominant {desk_heard[1]:.0f} Hz (bob plays 1000)")
    assert bob_heard[0] > 2 and 380 < bob_heard[1] < 500, f"bob should hear the desk's 440 Hz: {bob_heard}"
    assert desk_heard[0] > 2 and 900 < desk_heard[1] < 1100, f"the desk should hear bob's 1000 Hz: {desk_heard}"
    assert api("/api/calls") == [], "no call left behind"
    cdr = api("/api/cdrs?limit=1")[0]
    assert cdr["disposition"] == "answered" and cdr["caller"] == "2002", cdr
    assert cdr["end_reason"] == "caller hung up", cdr
    assert len(cdr["legs"]) == 2 and cdr["rtp_packets_in"] > 50 and cdr["rtp_packets_out"] > 50, cdr


if __name__ == "__main__":
    sys.exit(main())
