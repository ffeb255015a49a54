#!/usr/bin/env bash
# Flips per second on many live calls with RTP flowing (tests/bench/flip_load.py): for
# each offered rate, CALLS calls (default 100) flipped round robin for SECONDS (default
# 20), pulls and pushes alternating. Prints the machine, then one JSON line per rate.
#
#   tests/bench/flip_load.sh [RATES...]     (default: 25 50 100 200; needs a release build)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin="${WASMPBX_BIN:-$root/target/release/wasmpbx}"  # WASMPBX_BIN: another build to measure
[ -x "$bin" ] || { echo "build first: cargo build --release -p wasmpbx" >&2; exit 1; }
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(25 50 100 200)
scripts=$(mktemp -d)
trap 'rm -rf "$scripts"' EXIT
"$root/scripts/build.sh" "$scripts" > /dev/null
echo "Machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for rate in "${rates[@]}"; do
    python3 "$root/tests/bench/flip_load.py" "$bin" "$scripts" "${CALLS:-100}" "$rate" "${SECONDS_PER_RATE:-20}"
done
