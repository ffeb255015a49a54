#!/usr/bin/env python3
"""Pull latency across nodes against one node, with real phones, in one run: Carol
(baresip) calls Alice, whose desk phone and mobile (baresip, answering automatically)
then pull the call from each other N times (*77). Two layouts, one after the other:

- one node: wasmpbx on 127.0.0.1, the phones registered with it;
- across nodes: the shipped edge (Kamailio) on 127.0.0.1 in front of two nodes on
  127.0.0.11 and 127.0.0.12 sharing a throw-away PostgreSQL; the phones registered with
  the edge, each pull looked up there and sent to the node holding the call.

A capture on the namespace's loopback times each pull as the phone sees it: from its
authenticated INVITE (the one with Proxy-Authorization: the challenge before it is the
same in both layouts) to the 200 OK it gets back. Run inside a network namespace
(tests/bench/pull_across_nodes.sh does):

    python3 tests/bench/pull_across_nodes.py WASMPBX FLIP_POLICY_WASM KAMAILIO_CFG N
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
from baresip_call import LoopbackCapture, Phone  # noqa: E402
from baresip_edge_flip import NODES, postgres, psql, start_edge, start_node, until  # noqa: E402

DESK, MOBILE, CAROL = 5070, 5072, 5074


def auto(extension, password):
    return (f"<sip:{extension}@127.0.0.1;transport=udp>;auth_pass={password};regint=300;"
            "audio_codecs=PCMU;answermode=auto;ptime=20\n")


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))] if values else float("nan")


class PullLog(LoopbackCapture):
    """SIP between Alice's phones and 127.0.0.1:5060 (the node, or the edge)."""

    def __init__(self):
        super().__init__(lambda proto, sport, dport, payload: (sport, dport, payload)
                         if proto == 17 and 5060 in (sport, dport) and {sport, dport} & {DESK, MOBILE} else None)


def one_node(binary, flip_policy, work):
    """wasmpbx alone on 127.0.0.1:5060; the process."""
    folder = os.path.join(work, "node")
    os.makedirs(os.path.join(folder, "scripts"))
    shutil.copy(flip_policy, os.path.join(folder, "scripts", "flip-policy.wasm"))
    config = os.path.join(folder, "wasmpbx.toml")
    with open(config, "w") as f:
        f.write(f"""[sip]
listen = ["udp:127.0.0.1:5060"]
domain = "pbx.test"
[scripts]
dir = "{folder}/scripts"
[store]
path = "{folder}/wasmpbx.db"
[[users]]
id = "alice"
extension = "2001"
password = "alice-secret"
[[users]]
id = "carol"
extension = "2002"
password = "carol-secret"
""")
    log = open(os.path.join(folder, "server.log"), "w")
    return subprocess.Popen([binary, "run", "--config", config], stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, RUST_LOG="warn"))


def calls_on(api_base):
    with urllib.request.urlopen(f"{api_base}/api/calls", timeout=5) as response:
        return json.loads(response.read())


def pulls(work, count, api_bases, ready, settled):
    """Carol calls Alice; her phones pull the call from each other `count` times. The
    pull times (ms) of those that completed. `ready()` waits for the phones to register,
    `settled()` for the call to be known where pulls look it up."""
    desk = Phone(work, "desk", "2001", "alice-secret", DESK, 4444, 10000, 440, account=auto("2001", "alice-secret"))
    mobile = Phone(work, "mobile", "2001", "alice-secret", MOBILE, 4446, 10100, 700, account=auto("2001", "alice-secret"))
    carol = Phone(work, "carol", "2002", "carol-secret", CAROL, 4448, 10200, 1000)
    phones = [desk, mobile, carol]
    capture = PullLog()
    try:
        ready()
        capture.start()
        carol.command("dial", "sip:2001@127.0.0.1")
        carol.wait("CALL_ESTABLISHED")
        time.sleep(1.5)  # both answer; the one that lost the fork is cancelled
        # Which phone has the call: the node names it by Contact port behind the edge,
        # by User-Agent alone directly (then the first to register, the desk, is
        # "baresip").
        api = until("the node holding the call", lambda: next((a for a in api_bases if calls_on(a)), None))
        settled()
        # A phone registered with the node is named by its User-Agent, made unique; one
        # behind the edge by its User-Agent and Contact address.
        with urllib.request.urlopen(f"{api}/api/registrations", timeout=5) as response:
            ports = {r["device"]: int(r["source"].rsplit(":", 1)[1]) for r in json.loads(response.read())
                     if r["user_id"] == "alice"}

        def current():
            calls = calls_on(api)
            if not calls:
                logs = [os.path.join(d, "server.log") for d, _, files in os.walk(work) if "server.log" in files]
                tails = "\n".join(f"--- {log}\n{open(log).read()[-2500:]}" for log in logs)
                raise RuntimeError(f"the call ended\n{tails}")
            device = calls[0]["forwarded_to"].split("/", 1)[1]
            return ports.get(device) or int(device.rsplit(":", 1)[1])

        started = []
        for _ in range(count):
            holder = current()
            idle = mobile if holder == DESK else desk
            started.append((time.time(), idle.sip_port))
            idle.command("dial", "sip:*77@127.0.0.1")
            deadline = time.time() + 3
            while current() == holder and time.time() < deadline:
                time.sleep(0.005)
            time.sleep(0.5)
        carol.command("hangup")
        time.sleep(0.5)
        capture.stop()
        times = []
        for at, port in started:
            window = [x for x in capture.packets if at <= x[0] < at + 3]
            invite = next((x for x in window if x[1] == port and x[3].startswith(b"INVITE sip:*77")
                           and b"Proxy-Authorization" in x[3]), None)
            ok = next((x for x in window if invite and x[0] >= invite[0] and x[2] == port
                       and x[3].startswith(b"SIP/2.0 200") and b" INVITE" in x[3].split(b"CSeq:")[1][:20]), None)
            if invite and ok:
                times.append((ok[0] - invite[0]) * 1000)
        return times
    finally:
        capture.running = False
        for phone in phones:
            phone.stop()


def main():
    binary, flip_policy, edge_cfg, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    results = {}
    work = tempfile.mkdtemp(prefix="wasmpbx-pull-bench-")
    os.chmod(work, 0o755)
    node = one_node(binary, flip_policy, work)
    try:
        time.sleep(1)
        def registered():
            until("the three phones registered", lambda: len(json.loads(urllib.request.urlopen(
                "http://127.0.0.1:8080/api/registrations", timeout=5).read())) == 3)

        results["one node"] = pulls(work, count, ["http://127.0.0.1:8080"], registered, lambda: None)
    finally:
        node.kill()
        node.wait()
        shutil.rmtree(work, ignore_errors=True)

    work = tempfile.mkdtemp(prefix="wasmpbx-pull-bench-")
    os.chmod(work, 0o755)
    processes, pg = [], None
    try:
        pg = postgres(work)
        processes += [start_node(binary, work, name, flip_policy, log_level="warn") for name in NODES]
        until("the users published", lambda: psql(["-d", "pbx", "-c", "SELECT count(*) FROM edge_users"]) == "2")
        processes.append(start_edge(work, edge_cfg))

        def ready():
            until("alice's phones registered with the edge",
                  lambda: psql(["-d", "pbx", "-c", "SELECT count(*) FROM location WHERE username = '2001'"]) == "2")
            time.sleep(2)  # the dispatcher's first probes

        def settled():
            until("the holder's heartbeat naming alice",
                  lambda: psql(["-d", "pbx", "-c", "SELECT count(*) FROM edge_calls WHERE username = '2001'"]) == "1")

        bases = [f"http://{ip}:8080" for ip in NODES.values()]
        results["across nodes (edge + 2 nodes)"] = pulls(work, count, bases, ready, settled)
    finally:
        for process in processes:
            process.kill()
            process.wait()
        if pg:
            bin_dir, data = pg
            subprocess.run(["runuser", "-u", "postgres", "--", f"{bin_dir}/pg_ctl", "stop", "-m", "immediate",
                            "-D", data], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)

    for layout, times in results.items():
        print(json.dumps({"layout": layout, "pulls_requested": count, "pulls_timed": len(times),
                          "invite_to_200_ms": {"p50": round(percentile(times, 50), 1),
                                               "p90": round(percentile(times, 90), 1),
                                               "max": round(max(times, default=float("nan")), 1)}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
