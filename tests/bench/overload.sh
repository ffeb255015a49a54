#!/usr/bin/env bash
# Overload: listen-mode calls offered past the host's capacity. Each rate runs CALLS
# calls (default 10000) of HOLD_MS (default 1000) through
#   SIPp caller (127.0.0.2, the trunk; tests/sipp/caller_logs.xml) → wasmpbx → SIPp uas
# and reports what the callers saw: answered and ended, refused with 503 (overload
# control), anything else (failed), SIPp's retransmissions on both sides, and the
# host's CPU. The bar: every call the host admits completes, the rest get a fast 503.
#
#   tests/bench/overload.sh [RATES...]        (default: 1500 2250 3000 4000)
#
# Needs a release build (cargo build --release -p wasmpbx); WASMPBX_BIN measures another.
set -euo pipefail
. "$(dirname "$0")/server.sh"
calls=${CALLS:-10000}
hold=${HOLD_MS:-1000}
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(1500 2250 3000 4000)
start_server listen 'return_number = "15550101"'

machine_line
echo
echo "| offered (calls/s) | answered and ended | refused (503) | failed | retransmissions | host CPU (% of one core) | refused by the host (/metrics) |"
echo "|---|---|---|---|---|---|---|"
for rate in "${rates[@]}"; do
    sipp -sn uas -i 127.0.0.1 -p $uas_port -nostdin -bg -trace_stat -fd 1 -stf "$work/uas.csv" > /dev/null 2>&1 || true
    sleep 0.5
    cpu0=$(cpu_of $server)
    start=$(date +%s.%N)
    sipp -sf "$root/tests/sipp/caller_logs.xml" -i 127.0.0.2 -p 15080 -s 15550100 127.0.0.1:$host_port \
        -r "$rate" -m "$calls" -d "$hold" -l $((rate * 10)) -nostdin -timeout $((calls / rate + 60)) \
        -trace_stat -stf "$work/uac.csv" -trace_logs -log_file "$work/calls.log" > /dev/null 2>&1 || true
    end=$(date +%s.%N)
    cpu1=$(cpu_of $server)
    sleep 1.5 # the UAS writes its counts each second (-fd 1)
    pkill -f "sipp -sn uas -i 127.0.0.1 -p $uas_port" || true
    sleep 0.5
    ended=$(grep -c '^ended ' "$work/calls.log" || true)
    refused=$(grep -c '^refused ' "$work/calls.log" || true)
    failed=$((calls - ended - refused))
    retrans=$(( $(column "$work/uac.csv" 'Retransmissions(C)') + $(column "$work/uas.csv" 'Retransmissions(C)') ))
    cpu=$(echo "scale=0; 100 * ($cpu1 - $cpu0) / $ticks / ($end - $start)" | bc)
    metrics_port=$(grep -oE 'http://127.0.0.1:[0-9]+' "$work/server.out" | head -n 1)
    host_refused=$(curl -s "$metrics_port/metrics" | awk '/^wasmpbx_calls_refused_overload_total/ {print $2}')
    echo "| $rate | $ended | $refused | $failed | $retrans | $cpu | ${host_refused:-?} (total) |"
    rm -f "$work"/uac.csv "$work"/uas.csv "$work"/calls.log
    sleep 3 # let the host's queue and the last calls' records settle
done
