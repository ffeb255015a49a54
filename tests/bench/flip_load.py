#!/usr/bin/env python3
"""Flips per second on many live calls: a load driver for BENCHMARKS.md.

N far ends (users f0..) each call one user (u0..), whose desk phone answers; the far end
streams RTP (PCMU, 50 packets/s) for the whole run. Then flips are asked for at a fixed
rate, round robin over the calls, alternating a pull (`*77` INVITE from the idle device)
and a push (`POST /api/calls/{id}/flip`, the idle device answering). A flip counts as
done when the old device gets its BYE. At the end every far end hangs up and the call
records are checked: each done flip must be listed as `done`.

The SIP user agents here are this script's own (a load driver, not a client under test):
just enough UDP SIP — digest registration and INVITE authentication, answering, ACK,
BYE, CANCEL — to play 3N phones at once.

    python3 tests/bench/flip_load.py BINARY SCRIPTS_DIR CALLS RATE SECONDS

EXTRA_CONFIG (TOML) is appended to the server's config: the soak (tests/bench/soak.sh)
adds a trunk and a location there for SIPp's calls to the same server.
"""

import asyncio
import hashlib
import json
import os
import random
import re
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HOST = ("127.0.0.1", 16060)
DOMAIN = "127.0.0.1"
PASSWORD = "pw"


def md5(text):
    return hashlib.md5(text.encode()).hexdigest()


def header(message, name):
    match = re.search(rf"^{name}:\s*(.*?)\r$", message, re.MULTILINE | re.IGNORECASE)
    return match.group(1) if match else ""


def sdp(port):
    body = (f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n")
    return body


class Phone(asyncio.DatagramProtocol):
    """One registered device: a SIP socket and an RTP socket."""

    def __init__(self, user, extension, agent, driver):
        self.user, self.extension, self.agent, self.driver = user, extension, agent, driver
        self.transport = None
        self.port = 0
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.rtp.setblocking(False)
        self.waiters = {}  # "Call-ID CSeq" -> future of the final response
        self.dialog = None  # (call_id, from, to, remote target) of the call this phone has
        self.pending_invites = {}  # Call-ID -> (INVITE text, answer handle)
        self.cseq = 0

    def connection_made(self, transport):
        self.transport = transport
        self.port = transport.get_extra_info("sockname")[1]

    def send(self, text):
        self.transport.sendto(text.encode(), HOST)

    def datagram_received(self, data, _):
        text = data.decode(errors="replace")
        if text.startswith("SIP/2.0"):
            code = int(text.split(" ", 2)[1])
            key = header(text, "Call-ID") + " " + header(text, "CSeq")
            future = self.waiters.get(key)
            if code >= 200 and future and not future.done():
                future.set_result(text)
            return
        method = text.split(" ", 1)[0]
        if method == "INVITE":
            self.on_invite(text)
        elif method == "CANCEL":
            self.respond(text, 200)
            pending = self.pending_invites.pop(header(text, "Call-ID"), None)
            if pending:
                pending[1].cancel()
                self.respond(pending[0], 487, tag=True)
        elif method == "BYE":
            self.respond(text, 200)
            if self.dialog and self.dialog[0] == header(text, "Call-ID"):
                self.dialog = None
                self.driver.released(self)
        elif method != "ACK":
            self.respond(text, 200)

    def respond(self, request, code, tag=False, body=""):
        reasons = {200: "OK", 487: "Request Terminated"}
        to = header(request, "To") + (f";tag={self.agent}{self.port}" if tag else "")
        lines = [f"SIP/2.0 {code} {reasons.get(code, 'X')}"]
        lines += [f"Via: {v}" for v in re.findall(r"^Via:\s*(.*?)\r$", request, re.MULTILINE | re.IGNORECASE)]
        lines += [f"From: {header(request, 'From')}", f"To: {to}", f"Call-ID: {header(request, 'Call-ID')}",
                  f"CSeq: {header(request, 'CSeq')}", f"Contact: <sip:{self.extension}@127.0.0.1:{self.port}>"]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        self.send("\r\n".join(lines) + "\r\n\r\n" + body)

    def on_invite(self, text):
        call_id = header(text, "Call-ID")
        # The desk answers the first call at once; the mobile is slower, so the desk
        # wins the fork and the mobile is cancelled. Flips are answered at once.
        delay = 0.3 if self.agent == "mobile" and not self.driver.established(self) else 0.0
        handle = asyncio.get_running_loop().call_later(delay, self.answer, text)
        self.pending_invites[call_id] = (text, handle)

    def answer(self, text):
        call_id = header(text, "Call-ID")
        self.pending_invites.pop(call_id, None)
        self.respond(text, 200, tag=True, body=sdp(self.rtp.getsockname()[1]))
        self.dialog = (call_id,)
        self.driver.answered(self)

    async def request(self, method, uri, call_id, from_tag, to, extra="", body="", cseq=None):
        self.cseq += 1
        cseq = cseq or self.cseq
        branch = f"z9hG4bK{random.getrandbits(48):x}"
        lines = [f"{method} {uri} SIP/2.0", f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport",
                 f"From: <sip:{self.extension}@{DOMAIN}>;tag={from_tag}", f"To: {to}", f"Call-ID: {call_id}",
                 f"CSeq: {cseq} {method}", f"Contact: <sip:{self.extension}@127.0.0.1:{self.port}>",
                 "Max-Forwards: 70", f"User-Agent: {self.agent}"]
        if extra:
            lines.append(extra)
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        future = asyncio.get_running_loop().create_future()
        self.waiters[f"{call_id} {cseq} {method}"] = future
        text = "\r\n".join(lines) + "\r\n\r\n" + body
        for _ in range(7):  # UDP: resend until a final response (timer A, roughly)
            self.send(text)
            try:
                return await asyncio.wait_for(asyncio.shield(future), 0.5)
            except asyncio.TimeoutError:
                continue
        raise RuntimeError(f"{self.user}/{self.agent}: no answer to {method}")

    def authorization(self, challenge, method, uri, kind):
        realm = re.search(r'realm="([^"]*)"', challenge).group(1)
        nonce = re.search(r'nonce="([^"]*)"', challenge).group(1)
        cnonce = f"{random.getrandbits(32):x}"
        response = md5(f"{md5(f'{self.extension}:{realm}:{PASSWORD}')}:{nonce}:00000001:{cnonce}:auth:"
                       f"{md5(f'{method}:{uri}')}")
        return (f'{kind}: Digest username="{self.extension}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
                f'response="{response}", algorithm=MD5, qop=auth, nc=00000001, cnonce="{cnonce}"')

    async def register(self):
        call_id = f"reg-{self.user}-{self.agent}"
        uri = f"sip:{DOMAIN}"
        to = f"<sip:{self.extension}@{DOMAIN}>"
        reply = await self.request("REGISTER", uri, call_id, "r", to, "Expires: 3600")
        auth = self.authorization(header(reply, "WWW-Authenticate"), "REGISTER", uri, "Authorization")
        reply = await self.request("REGISTER", uri, call_id, "r", to, f"Expires: 3600\r\n{auth}")
        assert reply.startswith("SIP/2.0 200"), reply

    async def invite(self, number):
        """An authenticated INVITE; the final response."""
        call_id = f"{random.getrandbits(64):x}@bench"
        uri = f"sip:{number}@{DOMAIN}"
        to = f"<{uri}>"
        body = sdp(self.rtp.getsockname()[1])
        reply = await self.request("INVITE", uri, call_id, "c", to, body=body)
        if reply.startswith("SIP/2.0 407"):
            self.ack(reply, uri, via=header(reply, "Via"))
            auth = self.authorization(header(reply, "Proxy-Authenticate"), "INVITE", uri, "Proxy-Authorization")
            reply = await self.request("INVITE", uri, call_id, "c", to, auth, body=body)
        if reply.startswith("SIP/2.0 2"):
            self.ack(reply, header(reply, "Contact").strip("<>"))
        else:
            self.ack(reply, uri, via=header(reply, "Via"))
        return reply

    def ack(self, reply, target, via=None):
        """ACK a final response: a 2xx in a transaction of its own, any other in the
        INVITE's (its Via)."""
        via = via or f"SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{random.getrandbits(48):x}"
        lines = [f"ACK {target} SIP/2.0", f"Via: {via}",
                 f"From: {header(reply, 'From')}", f"To: {header(reply, 'To')}", f"Call-ID: {header(reply, 'Call-ID')}",
                 f"CSeq: {header(reply, 'CSeq').split()[0]} ACK", "Max-Forwards: 70", "Content-Length: 0"]
        self.send("\r\n".join(lines) + "\r\n\r\n")


class Driver:
    def __init__(self, calls):
        self.calls = calls
        self.on_call = {}  # user -> the phone that has the user's call
        self.flipping = {}  # user -> (started, kind)
        self.done = []  # (kind, seconds)
        self.failed = []

    def established(self, phone):
        return phone.user in self.on_call

    def answered(self, phone):
        if phone.user not in self.on_call:
            self.on_call[phone.user] = phone

    def released(self, phone):
        """The old device got its BYE: the flip that was under way is done."""
        flip = self.flipping.pop(phone.user, None)
        others = [p for p in self.devices[phone.user] if p is not phone]
        self.on_call[phone.user] = others[0]
        if flip:
            self.done.append((flip[1], time.perf_counter() - flip[0]))


async def main():
    binary, scripts, calls, rate, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), \
        float(sys.argv[5])
    work = tempfile.mkdtemp(prefix="wasmpbx-flip-load-")
    users = "".join(f'[[users]]\nid = "u{i}"\nextension = "{3000 + i}"\npassword = "{PASSWORD}"\n'
                    f'[[users]]\nid = "f{i}"\nextension = "{6000 + i}"\npassword = "{PASSWORD}"\n'
                    for i in range(calls))
    config = os.path.join(work, "wasmpbx.toml")
    with open(config, "w") as f:
        f.write(f"""[sip]
listen = ["udp:127.0.0.1:{HOST[1]}"]
domain = "{DOMAIN}"
[http]
listen = "127.0.0.1:18080"
[media]
rtp_ports = "20000-39999"
[scripts]
dir = "{scripts}"
[store]
path = "{work}/bench.db"
{users}{os.environ.get("EXTRA_CONFIG", "")}""")
    server = subprocess.Popen([binary, "run", "--config", config], stdout=subprocess.DEVNULL,
                              stderr=open(os.path.join(work, "server.err"), "w"),
                              env=dict(os.environ, RUST_LOG="warn"))
    await asyncio.sleep(2)
    loop = asyncio.get_running_loop()
    driver = Driver(calls)
    phones, far_ends = {}, []
    for i in range(calls):
        for agent in ("desk", "mobile"):
            _, phone = await loop.create_datagram_endpoint(lambda a=agent: Phone(f"u{i}", f"{3000 + i}", a, driver),
                                                           local_addr=("127.0.0.1", 0))
            phones.setdefault(f"u{i}", []).append(phone)
        _, far = await loop.create_datagram_endpoint(lambda: Phone(f"f{i}", f"{6000 + i}", "far", driver),
                                                     local_addr=("127.0.0.1", 0))
        far_ends.append(far)
    driver.devices = phones
    await asyncio.gather(*(p.register() for ps in phones.values() for p in ps), *(f.register() for f in far_ends))

    # The calls, and the far ends' RTP to wherever the host's answer said.
    streams = []
    for i, far in enumerate(far_ends):
        reply = await far.invite(str(3000 + i))
        assert reply.startswith("SIP/2.0 200"), reply[:200]
        port = int(re.search(r"m=audio (\d+)", reply).group(1))
        far.dialog = (header(reply, "Call-ID"), header(reply, "From"), header(reply, "To"),
                      header(reply, "Contact").strip("<>"))
        streams.append((far.rtp, port, random.getrandbits(32)))
    await asyncio.sleep(1)
    sessions = {c["caller"]: c["session"] for c in api("/api/calls")}  # far end's extension
    assert len(sessions) == calls, f"{len(sessions)} calls up of {calls}"
    assert all(f"u{i}" in driver.on_call for i in range(calls))

    running = True

    async def send_rtp():
        sequence, payload = 0, bytes([0xFF]) * 160
        next_at = time.perf_counter()
        while running:
            sequence += 1
            for sock, port, ssrc in streams:
                header_bytes = bytes([0x80, 0]) + (sequence % 65536).to_bytes(2, "big") + \
                    (sequence * 160 % 2**32).to_bytes(4, "big") + ssrc.to_bytes(4, "big")
                try:
                    sock.sendto(header_bytes + payload, ("127.0.0.1", port))
                except BlockingIOError:
                    pass
            next_at += 0.02
            await asyncio.sleep(max(0, next_at - time.perf_counter()))

    async def flip(i, kind):
        user = f"u{i}"
        current = driver.on_call[user]
        idle = next(p for p in phones[user] if p is not current)
        driver.flipping[user] = (time.perf_counter(), kind)
        try:
            if kind == "pull":
                reply = await idle.invite("*77")
                if not reply.startswith("SIP/2.0 200"):
                    raise RuntimeError(reply.split("\r\n", 1)[0])
                idle.dialog = (header(reply, "Call-ID"),)
            else:
                await asyncio.to_thread(post, f"/api/calls/{sessions[str(6000 + i)]}/flip")
        except Exception as error:  # noqa: BLE001 — every failure is counted and shown
            driver.flipping.pop(user, None)
            driver.failed.append(f"{kind} u{i}: {error}")

    async def keep_registered():
        # Registrations last an hour (Expires: 3600): renew them for longer runs.
        while running:
            await asyncio.sleep(1800)
            if running:
                await asyncio.gather(*(p.register() for ps in phones.values() for p in ps),
                                     *(f.register() for f in far_ends))

    rtp_task = asyncio.create_task(send_rtp())
    renew_task = asyncio.create_task(keep_registered())
    cpu_before = cpu_ticks(server.pid)
    started = time.perf_counter()
    asked, tasks, turn = 0, [], 0
    while time.perf_counter() - started < seconds:
        i = turn % calls
        turn += 1
        if f"u{i}" in driver.flipping:
            continue
        tasks.append(asyncio.create_task(flip(i, "pull" if (turn // calls) % 2 == 0 else "push")))
        asked += 1
        await asyncio.sleep(max(0, started + asked / rate - time.perf_counter()))
    await asyncio.gather(*tasks)
    deadline = time.perf_counter() + 10
    while driver.flipping and time.perf_counter() < deadline:
        await asyncio.sleep(0.1)
    elapsed = time.perf_counter() - started
    cpu = (cpu_ticks(server.pid) - cpu_before) / os.sysconf("SC_CLK_TCK") / elapsed
    rss = int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{server.pid}/status").read()).group(1)) // 1024
    running = False
    await rtp_task
    renew_task.cancel()

    # Every far end hangs up; every done flip must be in the records.
    for far in far_ends:
        call_id, from_, to, target = far.dialog
        far.cseq = 0
        await far.request("BYE", target, call_id, from_.split("tag=")[1], to, cseq=10)
    await asyncio.sleep(1)
    # The far ends' records, from the database (other calls may have newer ones).
    far_extensions = [str(6000 + i) for i in range(calls)]
    with sqlite3.connect(os.path.join(work, "bench.db")) as db:
        cdrs = [json.loads(row[0]) for row in db.execute(
            "SELECT record FROM cdrs WHERE json_extract(record, '$.caller') IN (%s)"
            % ",".join("?" * calls), far_extensions)]
    logged = sum(1 for cdr in cdrs for f in cdr["flips"] if f["result"] == "done")
    server.kill()
    server.wait()

    for kind in ("pull", "push"):
        times = sorted(t * 1000 for k, t in driver.done if k == kind)
        if times:
            p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
            print(f"  {kind}: {len(times)} done, request → old device released p50 "
                  f"{statistics.median(times):.1f} ms, p99 {p99:.1f} ms")
    print(json.dumps({"calls": calls, "offered_per_s": rate, "seconds": round(elapsed, 1), "asked": asked,
                      "done": len(driver.done), "done_per_s": round(len(driver.done) / elapsed, 1),
                      "failed": len(driver.failed), "logged_done": logged, "host_cores": round(cpu, 2),
                      "rss_mib": rss}))
    for failure in driver.failed[:5]:
        print("  failed:", failure)


def cpu_ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def api(path):
    with urllib.request.urlopen(f"http://127.0.0.1:18080{path}", timeout=10) as response:
        return json.loads(response.read())


def post(path):
    request = urllib.request.Request(f"http://127.0.0.1:18080{path}", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202, response.status


if __name__ == "__main__":
    asyncio.run(main())
