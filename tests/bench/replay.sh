#!/usr/bin/env bash
# How fast recorded calls replay: CALLS listen-mode calls (default 10000, HOLD_MS 200)
# at RATE calls/s (default 500) through wasmpbx with decisions recorded, then
# `wasmpbx script replay` of all of them offline — on the recorded versions (every
# decision must come out the same) and on front-door instead. Markdown for BENCHMARKS.md.
#
#   tests/bench/replay.sh [RATE]
#
# Needs a release build (cargo build --release -p wasmpbx).
set -euo pipefail
. "$(dirname "$0")/server.sh"
calls=${CALLS:-10000}
hold=${HOLD_MS:-200}
rate=${1:-500}
start_server listen 'return_number = "15550101"'
read -r ok failed retrans _ < <(run_sipp 127.0.0.1:$host_port "$rate")
# The journal writes in batches behind the calls: wait until all are in.
for _ in $(seq 100); do
    recorded=$(curl -s "$http/metrics" | awk '/^wasmpbx_decisions_recorded_total/ {print $2}')
    [ "${recorded:-0}" -ge $((2 * calls)) ] && break
    sleep 0.2
done
kill $server
wait $server 2>/dev/null || true

machine_line
echo
echo "$ok calls answered ($failed failed, $retrans retransmissions), ${recorded:-0} decisions recorded, store $(du -h "$work/bench.db"* | awk '{print $1}' | paste -sd+)"
echo
echo "| replayed on | calls | decisions | the same | changed | seconds | calls/s |"
echo "|---|---|---|---|---|---|---|"
for script in recorded front-door; do
    args=(script replay --location bench --limit "$calls" --json --config "$work/wasmpbx.toml")
    [ $script = recorded ] || args+=(--script "$work/scripts/$script.wasm")
    "$bin" "${args[@]}" > "$work/replay.json" || true
    python3 - "$work/replay.json" "$script" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"| {sys.argv[2]} | {r['calls']} | {r['decisions']} | {r['same']} | {r['changed']} | {r['seconds']:.2f} | {r['calls'] / r['seconds']:.0f} |")
PY
done
