#!/usr/bin/env bash
# Flip timing with real phones (baresip), in a network namespace of its own: N pulls and
# N pushes in one call each. Prints one JSON line per mode for BENCHMARKS.md.
#
#   tests/bench/flip.sh [N]        (default 40; needs root, baresip, a release build)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
n=${1:-40}
bin="$root/target/release/wasmpbx"
[ -x "$bin" ] || { echo "build first: cargo build --release -p wasmpbx" >&2; exit 1; }
scripts=$(mktemp -d)
"$root/scripts/build.sh" "$scripts" > /dev/null
echo "Machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for mode in pull push; do
    ns="wasmpbx-flip-bench-$$"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$ns" route add default dev lo
    ip netns exec "$ns" python3 "$root/tests/bench/flip_bench.py" "$bin" "$scripts/flip-policy.wasm" "$mode" "$n" || true
    ip netns del "$ns"
done
rm -rf "$scripts"
