#!/usr/bin/env python3
"""Figures for tests/bench/active.sh from its loopback captures.

    active_analysis.py rtp.pcap sip.pcap MEDIA_PORT HOST_SIP_PORT DEPARTMENT_PORT

RTP (to the callers' media port): per stream (SSRC) and talk spurt (marker bit), how late
each packet left against its 20 ms schedule, anchored at the spurt's earliest implied
start. SIP: from each caller's INFO (its key) to the host's INVITE to the department for
that caller (matched by the caller's number in From).
"""

import struct
import sys


def packets(path):
    """(time, UDP source port, UDP destination port, UDP payload) of each UDP packet."""
    with open(path, "rb") as f:
        header = f.read(24)
        magic = struct.unpack("<I", header[:4])[0]
        endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
        nano = struct.unpack(endian + "I", header[:4])[0] == 0xA1B23C4D
        linktype = struct.unpack(endian + "I", header[20:24])[0]
        link = {1: 14, 113: 16, 276: 20, 0: 4}[linktype]
        while True:
            record = f.read(16)
            if len(record) < 16:
                return
            secs, frac, caplen, _ = struct.unpack(endian + "IIII", record)
            data = f.read(caplen)
            ip = data[link:]
            if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
                continue
            ihl = (ip[0] & 0x0F) * 4
            sport, dport = struct.unpack(">HH", ip[ihl:ihl + 4])
            yield secs + frac / (1e9 if nano else 1e6), sport, dport, ip[ihl + 8:]


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def rtp_figures(path, media_port):
    spurts = {}  # (ssrc, spurt number) -> [(time, index)]
    current = {}
    streams = set()
    for t, _, dport, payload in packets(path):
        if dport != media_port or len(payload) < 12 or payload[0] >> 6 != 2:
            continue
        ssrc = struct.unpack(">I", payload[8:12])[0]
        streams.add(ssrc)
        if payload[1] & 0x80 or ssrc not in current:
            current[ssrc] = (current.get(ssrc, (0, -1))[0] + 1, 0)
        spurt, index = current[ssrc]
        spurts.setdefault((ssrc, spurt), []).append((t, index))
        current[ssrc] = (spurt, index + 1)
    lateness = []
    for sent in spurts.values():
        start = min(t - 0.020 * i for t, i in sent)
        lateness.extend((t - 0.020 * i - start) * 1000 for t, i in sent)
    late = sum(1 for x in lateness if x > 20)
    return len(streams), len(lateness), lateness, late


def sip_figures(path, host_port, department_port):
    info_at, invite_at = {}, {}
    for t, _, dport, payload in packets(path):
        text = payload[:600].decode("latin-1")
        first = text.split("\r\n", 1)[0]
        user = None
        for line in text.split("\r\n"):
            if line.lower().startswith("from:"):
                user = line.split("sip:", 1)[-1].split("@", 1)[0]
        if first.startswith("INFO ") and dport == host_port:
            info_at.setdefault(user, t)
        elif first.startswith("INVITE ") and dport == department_port:
            invite_at.setdefault(user, t)
    return [(invite_at[u] - info_at[u]) * 1000 for u in info_at if u in invite_at]


def main():
    rtp, sip, media_port, host_port, department_port = sys.argv[1:6]
    streams, count, lateness, late = rtp_figures(rtp, int(media_port))
    print(f"host RTP streams: {streams}, packets: {count}")
    print(f"send lateness against the 20 ms schedule: p50 {percentile(lateness, 50):.2f} ms, "
          f"p99 {percentile(lateness, 99):.2f} ms, max {max(lateness, default=0):.2f} ms; "
          f"packets more than one frame late: {late}")
    delays = sip_figures(sip, int(host_port), int(department_port))
    print(f"digit (INFO) to INVITE to the department: {len(delays)} calls, "
          f"p50 {percentile(delays, 50):.1f} ms, p99 {percentile(delays, 99):.1f} ms "
          f"(includes the 1960 ms 'transferring' prompt front-door plays first)")


if __name__ == "__main__":
    main()
