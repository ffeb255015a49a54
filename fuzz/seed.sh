#!/usr/bin/env bash
# Rebuild the seed corpus (fuzz/corpus/TARGET/) from real clients' traffic: capture what
# goes over the wire (tshark) while the integration tests that drive SIPp, baresip and
# JsSIP in Chromium run, then sort the payloads into the targets' folders
# (seed_sort.py). The corpus is committed; run this again when the clients change.
#
#   fuzz/seed.sh [TEST FILTERS...]   (default: the tests with real clients)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'kill "$capture" 2>/dev/null || true; rm -rf "$work"' EXIT
filters=("$@")
[ ${#filters[@]} -gt 0 ] || filters=(listen_mode active_mode sip_registrar baresip websocket flip device_calls carrier)
# -i any: baresip runs in network namespaces, behind veth pairs.
tshark -i any -f "udp or tcp" -w "$work/capture.pcapng" -q 2> "$work/tshark.err" &
capture=$!
sleep 2
(cd "$root" && cargo test -p wasmpbx --test integration -- "${filters[@]}") > "$work/tests.log" 2>&1 || {
    echo "some tests failed (the capture is still used): see $work/tests.log" >&2
}
sleep 1
kill -INT "$capture"
wait "$capture" || true
# Every payload, with whether it is a masked (client-to-server) WebSocket frame; HTTP on
# every port so the upgraded connections are read as WebSocket.
tshark -r "$work/capture.pcapng" -o 'http.tcp.port:1-65535' -T fields -E separator=';' \
    -e udp.payload -e tcp.payload -e websocket.mask > "$work/payloads.txt" 2>/dev/null
python3 "$root/fuzz/seed_sort.py" "$work/payloads.txt" "$root/fuzz/corpus" "$root"
