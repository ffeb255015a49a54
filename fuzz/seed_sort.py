"""Sort captured payloads into the fuzz targets' seed folders (see seed.sh).

payloads.txt has one packet a line: UDP payload hex; TCP payload hex; WebSocket mask
flag. Files are named by content hash, so a rerun adds only what is new; each target
keeps at most LIMIT seeds, the smallest of each kind of first line first.
"""
import hashlib
import pathlib
import sys

LIMIT = 300
SIP_STARTS = (b"INVITE ", b"ACK ", b"BYE ", b"CANCEL ", b"REGISTER ", b"OPTIONS ",
              b"NOTIFY ", b"SUBSCRIBE ", b"REFER ", b"INFO ", b"UPDATE ", b"PRACK ",
              b"MESSAGE ", b"SIP/2.0 ")


def is_sip(data: bytes) -> bool:
    return data.startswith(SIP_STARTS)


def is_rtp_or_rtcp(data: bytes) -> bool:
    return len(data) >= 8 and data[0] & 0xC0 == 0x80 and not is_sip(data)


def main() -> None:
    payloads, corpus, root = map(pathlib.Path, sys.argv[1:4])
    seeds: dict[str, list[bytes]] = {t: [] for t in
                                     ("sip_message", "sip_stream", "sdp", "digest", "rtp",
                                      "websocket", "config")}
    for line in payloads.read_text().splitlines():
        udp, tcp, mask = (line.split(";") + ["", "", ""])[:3]
        if udp:
            data = bytes.fromhex(udp.replace(":", ""))
            if is_sip(data):
                seeds["sip_message"].append(data)
            elif is_rtp_or_rtcp(data):
                seeds["rtp"].append(data)
        if tcp:
            data = bytes.fromhex(tcp.replace(":", ""))
            if "1" in mask.split(","):
                seeds["websocket"].append(data)
            elif is_sip(data):
                seeds["sip_stream"].append(data)
                seeds["sip_message"].append(data)
    for message in list(seeds["sip_message"]):
        head, _, body = message.partition(b"\r\n\r\n")
        if body.startswith(b"v=0"):
            seeds["sdp"].append(body)
        for header in head.split(b"\r\n"):
            name = header.split(b":", 1)[0].strip().lower()
            if name in (b"authorization", b"proxy-authorization", b"www-authenticate",
                        b"proxy-authenticate"):
                seeds["digest"].append(header.split(b":", 1)[1].strip())
    for toml in [root / "examples/wasmpbx.toml", root / "host/types/src/default-config.toml"]:
        seeds["config"].append(toml.read_bytes())
    for target, found in seeds.items():
        folder = corpus / target
        folder.mkdir(parents=True, exist_ok=True)
        unique = {hashlib.sha1(d).hexdigest(): d for d in found}
        # Variety first: the smallest seed of each first line, then the rest by size.
        by_kind: dict[bytes, list[bytes]] = {}
        for data in sorted(unique.values(), key=len):
            by_kind.setdefault(data.split(b"\r\n", 1)[0][:24], []).append(data)
        ordered = [group[0] for group in by_kind.values()]
        ordered += [d for group in by_kind.values() for d in group[1:]]
        kept = ordered[:LIMIT]
        for data in kept:
            (folder / hashlib.sha1(data).hexdigest()).write_bytes(data)
        print(f"{target}: {len(kept)} seeds ({len(unique)} unique captured)")


main()
