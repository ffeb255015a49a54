#!/usr/bin/env bash
# Pull latency across nodes against one node, with real phones (baresip), in a network
# namespace of its own: N pulls in one call each, one node direct, then the shipped edge
# in front of two nodes on a throw-away PostgreSQL. One JSON line per layout for
# BENCHMARKS.md.
#
#   tests/bench/pull_across_nodes.sh [N]     (default 20; root, baresip, kamailio,
#                                             postgresql and a release build)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
n=${1:-20}
bin="$root/target/release/wasmpbx"
[ -x "$bin" ] || { echo "build first: cargo build --release -p wasmpbx" >&2; exit 1; }
scripts=$(mktemp -d)
"$root/scripts/build.sh" "$scripts" > /dev/null
echo "Machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
ns="wasmpbx-pull-bench-$$"
ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" route add default dev lo
ip netns exec "$ns" python3 "$root/tests/bench/pull_across_nodes.py" "$bin" "$scripts/flip-policy.wasm" \
    "$root/examples/deploy/kamailio/kamailio.cfg" "$n" || true
ip netns del "$ns"
rm -rf "$scripts"
