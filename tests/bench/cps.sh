#!/usr/bin/env bash
# Calls per second through wasmpbx in listen mode, side by side with SIPp talking to
# itself, on loopback. Prints a markdown table for BENCHMARKS.md.
#
#   tests/bench/cps.sh [RATES...]        (default: 300 600 900 1200)
#
# Each rate runs CALLS calls (default 10000) of HOLD_MS (default 2000) through
#   SIPp uac (127.0.0.2, the trunk) → wasmpbx (listen script) → SIPp uas
# and then SIPp uac → SIPp uas directly. A rate is clean when no call failed and neither
# SIPp retransmitted (a retransmission means a message waited too long somewhere).
# Needs a release build (cargo build --release -p wasmpbx); the scripts are built fresh.
# STREAMS=1: each rate also runs with every call's audio streamed to a WebSocket engine
# (the relay benchmark's engine, in its own process), on the same server.
set -euo pipefail
. "$(dirname "$0")/server.sh"
calls=${CALLS:-10000}
hold=${HOLD_MS:-2000}
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(300 600 900 1200)
if [ -n "${STREAMS:-}" ]; then
    engine_bin=$(cd "$root" && cargo bench -q -p wasmpbx --bench relay --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json, sys
for m in map(json.loads, sys.stdin):
    if m.get("executable") and m["target"]["name"] == "relay": print(m["executable"])' | tail -n 1)
    # The engine runs until its stdin closes (when this script exits).
    coproc ENGINE { WASMPBX_BENCH_ENGINE=1 "$engine_bin" --bench; }
    read -r engine_port <&"${ENGINE[0]}"
    export STREAM_URL="ws://127.0.0.1:$engine_port/cps"
fi
start_server listen 'return_number = "15550101"'

timed_sipp() { # target rate [number] -> "successful failed seconds retransmissions(uac+uas)"
    local target=$1 rate=$2 number=${3:-15550100}
    sipp -sn uas -i 127.0.0.1 -p $uas_port -nostdin -bg -trace_stat -fd 1 -stf "$work/uas.csv" > /dev/null 2>&1 || true
    sleep 0.5
    local start end
    start=$(date +%s.%N)
    sipp -sn uac -i 127.0.0.2 -p 15080 -s "$number" "$target" -r "$rate" -m "$calls" -d "$hold" -l $((rate * 10)) \
        -nostdin -timeout $((calls / rate + 60)) -trace_stat -stf "$work/uac.csv" > /dev/null 2>&1 || true
    end=$(date +%s.%N)
    sleep 1.5 # the UAS writes its counts each second (-fd 1)
    pkill -f "sipp -sn uas -i 127.0.0.1 -p $uas_port" || true
    sleep 0.5
    local retrans=$(( $(column "$work/uac.csv" 'Retransmissions(C)') + $(column "$work/uas.csv" 'Retransmissions(C)') ))
    echo "$(column "$work/uac.csv" 'SuccessfulCall(C)') $(column "$work/uac.csv" 'FailedCall(C)') $(echo "$end - $start" | bc) $retrans"
    rm -f "$work"/uac.csv "$work"/uas.csv
}

machine_line
echo
echo "| rate (calls/s) | path | successful | failed | retransmissions | host CPU (% of one core) | host RSS after |"
echo "|---|---|---|---|---|---|---|"
for rate in "${rates[@]}"; do
    cpu0=$(cpu_of $server)
    read -r ok failed secs retrans < <(timed_sipp 127.0.0.1:$host_port "$rate")
    cpu1=$(cpu_of $server)
    cpu=$(echo "scale=0; 100 * ($cpu1 - $cpu0) / $ticks / $secs" | bc)
    echo "| $rate | SIPp → wasmpbx → SIPp | $ok | $failed | $retrans | $cpu | $(( $(rss_of $server) / 1024 )) MiB |"
    if [ "$failed" != 0 ]; then
        echo "host warnings (counts):" >&2
        sed -E 's/^[^ ]+ +//; s/session=[0-9a-f]+//; s/[0-9]+//g' "$work/server.err" | sort | uniq -c | sort -rn | head -5 >&2
    fi
    if [ -n "${STREAMS:-}" ]; then
        cpu0=$(cpu_of $server)
        read -r ok failed secs retrans < <(timed_sipp 127.0.0.1:$host_port "$rate" 15550102)
        cpu1=$(cpu_of $server)
        cpu=$(echo "scale=0; 100 * ($cpu1 - $cpu0) / $ticks / $secs" | bc)
        echo "| $rate | SIPp → wasmpbx → SIPp, every call streamed | $ok | $failed | $retrans | $cpu | $(( $(rss_of $server) / 1024 )) MiB |"
    fi
    read -r ok failed secs retrans < <(timed_sipp 127.0.0.1:$uas_port "$rate")
    echo "| $rate | SIPp → SIPp (direct) | $ok | $failed | $retrans | – | – |"
done
