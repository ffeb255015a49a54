#!/usr/bin/env python3
"""Several nodes with real phones behind the shipped edge: Alice's desk phone and mobile
register with Kamailio (examples/deploy/kamailio/kamailio.cfg with DB_URL: registrations
in the shared PostgreSQL, digest against the users the nodes publish), not with a node.
Her desk phone calls Bob (the carrier's side, reached through the edge): the dispatcher
gives the call to one node. Her mobile's *77 then goes to that node — the node holding
her call, found in the shared database — where the dispatcher's round robin would have
sent it to the other; the mobile takes the call over and the desk phone is released.
Bob notices nothing: no INVITE after his first, one RTP stream; he hears the desk's tone
(440 Hz), then the mobile's (700 Hz). A phone with the wrong password is refused (403).
Then Carol, whose phone is at the edge too, calls Alice's extension: the node the call
reaches rings both of Alice's phones through the edge; the desk answers, the mobile
pulls the call, then pushes it back with *8: the node, which reads the phones the edge
registered from the shared database, rings the desk alone through the edge (its
registered contact); Carol notices nothing either and hears desk, mobile, desk.

Everything runs in this network namespace (host/server/tests/integration/baresip.rs):
PostgreSQL of Debian's (a throw-away cluster), Kamailio on 127.0.0.1:5060, node a on
127.0.0.11, node b on 127.0.0.12, the phones on 127.0.0.1, Bob on 127.0.0.2.

    python3 tests/e2e/baresip_edge_flip.py /path/to/wasmpbx /path/to/flip-policy.wasm examples/deploy/kamailio/kamailio.cfg
"""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from baresip_call import TIMEOUT, Phone
from baresip_flip import Capture, bob_hangs_up, tone_between

DB_URL = "postgres://wasmpbx@127.0.0.1:5432/pbx"
NODES = {"a": "127.0.0.11", "b": "127.0.0.12"}


def postgres(work):
    """A throw-away PostgreSQL on 127.0.0.1:5432 with database `pbx` holding Kamailio's
    own tables (the nodes create theirs); its data folder (stop with pg_ctl)."""
    bin_dir = os.path.dirname(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1])
    data = os.path.join(work, "pg")
    os.makedirs(data)
    shutil.chown(data, "postgres")
    as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run(as_postgres + [f"{bin_dir}/initdb", "-A", "trust", "-U", "wasmpbx", "-E", "UTF8",
                                  "--locale=C", "--no-sync", "-D", data], check=True, capture_output=True)
    options = f"-p 5432 -c listen_addresses=127.0.0.1 -k {data} -c fsync=off -c synchronous_commit=off"
    subprocess.run(as_postgres + [f"{bin_dir}/pg_ctl", "start", "-w", "-t", "30", "-D", data,
                                  "-l", os.path.join(data, "log"), "-o", options], check=True, capture_output=True)
    psql(["-d", "postgres", "-c", "CREATE DATABASE pbx"])
    for schema in ("standard", "usrloc"):
        psql(["-d", "pbx", "-v", "ON_ERROR_STOP=1", "-f", f"/usr/share/kamailio/postgres/{schema}-create.sql"])
    return bin_dir, data


def psql(args):
    """psql as the cluster's owner; its output, unaligned and without headers."""
    return subprocess.run(["psql", "-h", "127.0.0.1", "-p", "5432", "-U", "wasmpbx", "-qAt"] + args,
                          check=True, capture_output=True, text=True).stdout.strip()


def start_node(binary, work, name, flip_policy, log_level="info"):
    """Node `name` on its own address: the shared database, the edges trusted, Alice's
    and Carol's extensions, its calls out through the edge (the carrier's trunk). The
    first edge listed is down (nothing listens on 127.0.0.1:5059): the node finds out by
    probing and reaches the phones through the second, the running one."""
    ip = NODES[name]
    folder = os.path.join(work, f"node-{name}")
    os.makedirs(os.path.join(folder, "scripts"))
    shutil.copy(flip_policy, os.path.join(folder, "scripts", "flip-policy.wasm"))
    low = 20000 + 1000 * list(NODES).index(name)
    config = os.path.join(folder, "wasmpbx.toml")
    with open(config, "w") as f:
        f.write(f"""[sip]
listen = ["udp:{ip}:5060"]
domain = "pbx.test"
[http]
listen = "{ip}:8080"
[media]
rtp_ports = "{low}-{low + 999}"
public_ip = "{ip}"
[scripts]
dir = "{folder}/scripts"
[store]
url = "{DB_URL}"
[cluster]
node = "{name}"
edge = ["sip:127.0.0.1:5059", "sip:127.0.0.1:5060"]
[[users]]
id = "alice"
extension = "2001"
password = "alice-secret"
[[users]]
id = "carol"
extension = "2002"
password = "carol-secret"
[[trunks]]
name = "carrier"
uri = "sip:127.0.0.1:5060"
inbound = ["127.0.0.1"]
""")
    log = open(os.path.join(folder, "server.log"), "w")
    return subprocess.Popen([binary, "run", "--config", config], stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, RUST_LOG=log_level), start_new_session=True)


def node_api(name, path):
    with urllib.request.urlopen(f"http://{NODES[name]}:8080{path}", timeout=5) as response:
        return json.loads(response.read())


def node_log(work, name):
    return open(os.path.join(work, f"node-{name}", "server.log")).read()


def start_edge(work, cfg):
    """The shipped edge on 127.0.0.1:5060: the carrier (Bob) at 127.0.0.2, the nodes
    probed every second, devices registered in the shared database."""
    folder = os.path.join(work, "edge")
    os.makedirs(folder)
    nodes = os.path.join(folder, "dispatcher.list")
    with open(nodes, "w") as f:
        f.writelines(f"1 sip:{ip}:5060\n" for ip in NODES.values())
    defines = ['CARRIER="127.0.0.2"', 'CARRIER_OUT="sip:127.0.0.2:5074"', f'DISPATCHER_LIST="{nodes}"',
               "PROBE_EVERY=1", f'DB_URL="{DB_URL}"', 'REALM="pbx.test"']
    log = open(os.path.join(folder, "kamailio.log"), "w")
    return subprocess.Popen(["kamailio", "-f", cfg, "-DD", "-E", "-n", "2", "-m", "32", "-M", "8",
                             "-l", "udp:127.0.0.1:5060", "-Y", folder, "-P", os.path.join(folder, "pid"),
                             "-w", folder] + [arg for d in defines for arg in ("-A", d)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def until(what, check, timeout=TIMEOUT, poll=0.3):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            found = check()
        except (OSError, subprocess.CalledProcessError):  # not up yet
            found = None
        if found:
            return found
        time.sleep(poll)
    raise RuntimeError(f"{what}: not within {timeout} s")


def main():
    binary, flip_policy, edge_cfg = sys.argv[1:4]
    work = tempfile.mkdtemp(prefix="wasmpbx-edge-pull-")
    os.chmod(work, 0o755)  # PostgreSQL's data folder is in it
    processes, phones, pg = [], [], None
    try:
        pg = postgres(work)
        processes += [start_node(binary, work, name, flip_policy) for name in NODES]
        for name in NODES:
            until(f"node {name} up", lambda: node_api(name, "/api/health"))
        until("the users published for the edge", lambda: psql(["-d", "pbx", "-c", "SELECT count(*) FROM edge_users"]) == "2")
        processes.append(start_edge(work, edge_cfg))
        desk, mobile = pull_through_the_edge(work, phones)
        carol_calls_alice(work, phones, desk, mobile)
        a_stale_contact_is_not_rung()
        print("1 passed, 0 failed")
        return 0
    except Exception as error:  # report everything the test saw, then fail
        print(f"FAILED: {error}")
        for name in NODES:
            print(f"--- node {name}\n{node_log(work, name)[-3000:]}")
        edge_log = os.path.join(work, "edge", "kamailio.log")
        if os.path.exists(edge_log):
            print(f"--- edge\n{open(edge_log).read()[-3000:]}")
        for phone in phones:
            print(f"--- {phone.name}\n{open(os.path.join(phone.dir, 'baresip.log')).read()[-1500:]}")
        return 1
    finally:
        for phone in phones:
            phone.stop()
        for process in processes:
            # The edge's workers are its children: the whole group goes (each node is
            # a group of one).
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if pg:
            bin_dir, data = pg
            subprocess.run(["runuser", "-u", "postgres", "--", f"{bin_dir}/pg_ctl", "stop", "-m", "immediate",
                            "-D", data], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def pull_through_the_edge(work, phones):
    desk = Phone(work, "alice-desk", "2001", "alice-secret", 5070, 4444, 10000, 440)
    mobile = Phone(work, "alice-mobile", "2001", "alice-secret", 5072, 4446, 10100, 700)
    bob = Phone(work, "bob", None, None, 5074, 4448, 10200, 1000, listen_ip="127.0.0.2",
                account="<sip:0299990000@127.0.0.2>;regint=0;audio_codecs=PCMU,PCMA;answermode=manual;ptime=20\n")
    phones += [desk, mobile, bob]
    until("both of alice's devices registered with the edge",
          lambda: psql(["-d", "pbx", "-c", "SELECT count(*) FROM location WHERE username = '2001'"]) == "2")
    print("alice's desk phone and mobile registered with the edge (usrloc in PostgreSQL)")
    def phones_listed_by(name):
        contacts = [r["contact"] for r in node_api(name, "/api/registrations")
                    if r["user_id"] == "alice" and r["registered_with"] == "edge"]
        return len(contacts) == 2 and all(any(f"@127.0.0.1:{port}" in c for c in contacts)
                                          for port in (5070, 5072))
    for name in NODES:
        until(f"node {name} listing alice's phones behind the edge", lambda: phones_listed_by(name))
    print("each node lists them in /api/registrations as registered with the edge")
    intruder = Phone(work, "intruder", "2001", "not-alices-secret", 5076, 4450, 10300, 300)
    phones.append(intruder)
    # Refused before its control socket is up: its log says so.
    until("the wrong password refused", lambda: "403 Forbidden" in open(os.path.join(intruder.dir, "baresip.log")).read())
    assert psql(["-d", "pbx", "-c", "SELECT count(*) FROM location WHERE username = '2001'"]) == "2"
    print("a phone with the wrong password was refused by the edge: 403 Forbidden")

    capture = Capture()
    capture.start()
    desk.command("dial", "sip:0299990000@127.0.0.1")
    bob.wait("CALL_INCOMING")
    bob.command("accept")
    desk.wait("CALL_ESTABLISHED")
    answered = time.time()
    holder = node_holding_alices_call(answered)
    other = next(name for name in NODES if name != holder)
    print(f"alice's desk phone is talking to bob through the edge; node {holder} holds the call")

    pulled = mobile_pulls(holder, desk, mobile)
    time.sleep(2)
    flips = hangs_up_having_heard(holder, bob, mobile, capture, invites=1, tones=[
        ("the desk", answered, 380, 500), ("the mobile", pulled, 620, 780)])
    assert [(f["kind"], f["trigger"], f["result"]) for f in flips] == [("pull", "pull-code", "done")], flips
    pull = flips[0]
    edge_log = open(os.path.join(work, "edge", "kamailio.log")).read()
    assert f"from user 2001 to *77: node sip:{NODES[holder]}:5060 holds the user's call" in edge_log, edge_log[-2000:]
    assert "pull requested" not in node_log(work, other), f"node {other} saw the pull"
    assert "pull requested" in node_log(work, holder)
    devices = (pull["from_device"], pull["targets"])
    assert devices == ("baresip@127.0.0.1:5070", ["baresip@127.0.0.1:5072"]), devices
    print(f"node {holder}'s record of the call lists the pull from {devices[0]} to {devices[1][0]}")
    bob.stop()
    phones.remove(bob)
    return desk, mobile


def carol_calls_alice(work, phones, desk, mobile):
    """Carol's phone (at the edge too) calls Alice's extension: the node the call reaches
    rings Alice's phones through the edge, both at once; the desk answers; the mobile
    pulls the call from the node holding it, then pushes it back (*8): the node rings the
    desk alone — the one phone, through the edge, by the contact the edge registered."""
    carol = Phone(work, "carol", "2002", "carol-secret", 5074, 4452, 10200, 1000, listen_ip="127.0.0.3",
                  account="<sip:2002@127.0.0.1>;auth_pass=carol-secret;regint=300;"
                          "audio_codecs=PCMU,PCMA;answermode=manual;ptime=20\n")
    phones.append(carol)
    until("carol registered with the edge",
          lambda: psql(["-d", "pbx", "-c", "SELECT count(*) FROM location WHERE username = '2002'"]) == "1")
    capture = Capture()
    capture.start()
    carol.command("dial", "sip:2001@127.0.0.1")
    desk.wait("CALL_INCOMING")
    mobile.wait("CALL_INCOMING")
    desk.command("accept")
    carol.wait("CALL_ESTABLISHED")
    mobile.wait("CALL_CLOSED")
    answered = time.time()
    holder = node_holding_alices_call(answered)
    assert "edge down" in node_log(work, holder), "the node never found the first edge down"
    print(f"carol called alice: node {holder} rang both of her phones through the edge that is up (the "
          "first listed is down); the desk answered, the mobile stopped ringing")

    pulled = mobile_pulls(holder, desk, mobile)
    time.sleep(2)
    mobile.command("sndcode", "*8")
    desk.wait("CALL_INCOMING")
    desk.command("accept")
    desk.wait("CALL_ESTABLISHED")
    pushed = time.time()
    mobile.wait("CALL_CLOSED")
    assert not mobile.saw("CALL_INCOMING"), "the push rang the phone it pushes from"
    edge_log = open(os.path.join(work, "edge", "kamailio.log")).read()
    assert "to user 2001: ringing the phone at sip:" in edge_log, edge_log[-2000:]
    print(f"the mobile pushed the call back (*8): node {holder} rang the desk alone through the edge; "
          "the desk answered, the mobile was released")
    time.sleep(2)

    flips = hangs_up_having_heard(holder, carol, desk, capture, invites=0, tones=[
        ("the desk", answered, 380, 500), ("the mobile", pulled, 620, 780), ("the desk", pushed, 380, 500)])
    assert [(f["kind"], f["trigger"], f["result"]) for f in flips] == [
        ("pull", "pull-code", "done"), ("push", "push-code", "done")], flips
    pull, push = flips
    assert pull["from_device"].endswith("@127.0.0.1:5070"), pull
    assert (push["from_device"], push["targets"]) == (pull["targets"][0], [pull["from_device"]]), push
    print(f"node {holder}'s record lists the pull from {pull['from_device']}, the phone that answered behind "
          f"the edge, and the push back to it from {push['from_device']}")


def a_stale_contact_is_not_rung():
    """A node's INVITE for a contact Alice no longer has (its list of her phones is
    refreshed every heartbeat) gets 404 from the edge — not relayed, and not taken for a
    call out to the carrier."""
    invite = ("INVITE sip:2001-gone@127.0.0.1:5999 SIP/2.0\r\n"
              "Via: SIP/2.0/UDP 127.0.0.11:{port};branch=z9hG4bK-stale\r\n"
              "From: <sip:0299990000@pbx.test>;tag=stale\r\nTo: <sip:2001@pbx.test>\r\n"
              "Call-ID: stale-contact\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
              "Contact: <sip:node@127.0.0.11:{port}>\r\nContent-Length: 0\r\n\r\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as node:
        node.bind(("127.0.0.11", 0))  # a node's address: the dispatcher's list
        node.settimeout(5)
        node.sendto(invite.format(port=node.getsockname()[1]).encode(), ("127.0.0.1", 5060))
        while True:
            reply = node.recv(65536).decode(errors="replace")
            if not reply.startswith("SIP/2.0 1"):
                break
    assert reply.startswith("SIP/2.0 404"), reply
    print("a node's INVITE for a contact alice no longer has: the edge answered 404, rang nobody")


def node_holding_alices_call(answered):
    """The node with Alice's call (answered at `answered`), once its status has told the
    edge so (the edge routes her pull by it): written as the call is answered, not at
    the next heartbeat; how long that took is printed."""
    holder = until("a node holding the call", lambda: next(
        (name for name in NODES if node_api(name, "/api/calls")), None))
    until("the holder's status naming alice",
          lambda: psql(["-d", "pbx", "-c", "SELECT node FROM edge_calls WHERE username = '2001'"]) == holder,
          poll=0.005)
    print(f"the edge knew node {holder} holds alice's call {(time.time() - answered) * 1000:.0f} ms after the answer")
    time.sleep(1)
    return holder


def mobile_pulls(holder, desk, mobile):
    """Alice's mobile dials the pull code while her desk has the call (held by node
    `holder`): the mobile takes it over, the desk is released. When it did."""
    mobile.command("dial", "sip:*77@127.0.0.1")
    mobile.wait("CALL_ESTABLISHED")
    pulled = time.time()
    desk.wait("CALL_CLOSED")
    print(f"the mobile's *77 reached node {holder} and pulled the call; the desk phone was released")
    return pulled


def hangs_up_having_heard(holder, far_end, device, capture, invites, tones):
    """The far end hangs up its call with Alice's `device` (held by node `holder`),
    having had one stream (`invites` INVITEs: 1 if it was called) and heard each of
    `tones` — (whose, from when, lowest Hz, highest Hz) — in turn, from half a second in
    for a second at most (until the next one). The flips of the call's record."""
    first = tones[0][1]
    audio = bob_hangs_up(capture, far_end, device, invites=invites)
    ends = [since - first for _, since, _, _ in tones[1:]] + [float("inf")]
    for (whose, since, low, high), next_starts in zip(tones, ends):
        start = since - first + 0.5
        heard = tone_between(audio, start, min(start + 1.0, next_starts))
        print(f"{far_end.name} heard {heard:.0f} Hz ({whose})")
        assert low < heard < high, (whose, heard)
    time.sleep(0.5)
    return node_api(holder, "/api/cdrs?limit=1")[0]["flips"]


if __name__ == "__main__":
    sys.exit(main())
