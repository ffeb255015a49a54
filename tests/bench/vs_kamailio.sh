#!/usr/bin/env bash
# wasmpbx side by side with Kamailio, in one run, at rising rates: the same SIPp harness
#   SIPp uac (127.0.0.2) → X → SIPp uas
# where X is wasmpbx in listen mode (a B2BUA: two transactions a call each way, a WASM
# decision, anchored media ports, a call record) or Kamailio from Debian as a stateful
# proxy (tests/bench/kamailio/proxy.cfg: tm, record-routing; two worker processes for the
# two cores). Each rate runs CALLS calls (default 10000) of HOLD_MS (default 1000). A
# rate is clean when no call failed and neither SIPp retransmitted anything. Reports
# successful, failed, retransmissions, call set-up p50/p99 (INVITE → 200, SIPp's
# response times, 1 ms resolution), server CPU per call and RSS, and the share of the
# machine's CPU the hypervisor took during that rate's run (steal). Markdown for
# BENCHMARKS.md. Both are warmed first (WARMUP calls at 500/s, default 2000; 0: none).
#
#   tests/bench/vs_kamailio.sh [RATES...]        (default: 1000 1500 2000 2500)
#
# Needs a release build (cargo build --release -p wasmpbx) and kamailio.
set -euo pipefail
. "$(dirname "$0")/server.sh"
calls=${CALLS:-10000}
hold=${HOLD_MS:-1000}
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(1000 1500 2000 2500)
proxy_port=15095
start_server listen 'return_number = "15550101"'

dir="$work/kamailio"
mkdir -p "$dir"
sed -e "s/@ADDR@/127.0.0.1:$proxy_port/; s/@NEXT@/127.0.0.1:$uas_port/" \
    "$root/tests/bench/kamailio/proxy.cfg" > "$dir/kamailio.cfg"
# In a process group of its own (with its workers), to be measured as one. 512 MB of
# shared memory: transactions are kept a few seconds after they end.
setsid /usr/sbin/kamailio -f "$dir/kamailio.cfg" -DD -E -m 512 -M 16 -Y "$dir" -P "$dir/pid" -w "$dir" \
    >> "$dir/log" 2>&1 &
kamailio=$!
trap 'kill -- -$kamailio 2>/dev/null; kill $server $(jobs -p) 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
sleep 1

group_cpu() { # CPU ticks of a process group
    pgrep -g "$1" | xargs -I{} awk '{print $14 + $15}' /proc/{}/stat | paste -sd+ | bc
}

group_rss() { # KiB resident of a process group (shared memory counted once per process)
    pgrep -g "$1" | xargs -I{} awk '/VmRSS/ {print $2}' /proc/{}/status | paste -sd+ | bc
}

# Both servers warm first (threads, caches, the store's first pages), so the first rate
# measured is not also the first calls ever: WARMUP calls (default 2000) at 500/s.
warm_calls=${WARMUP:-2000}
if [ "$warm_calls" -gt 0 ]; then
    for port in $host_port $proxy_port; do
        calls=$warm_calls run_sipp 127.0.0.1:$port 500 > /dev/null
    done
fi

machine_line
echo "$(kamailio -v 2>/dev/null | head -n 1)"
echo
echo "| rate (calls/s) | server | successful | failed | retransmissions | set-up p50 / p99 | server CPU per call | server RSS after | CPU stolen |"
echo "|---|---|---|---|---|---|---|---|---|"
for rate in "${rates[@]}"; do
    for target in wasmpbx kamailio; do
        stolen0=$(cpu_ticks)
        if [ $target = wasmpbx ]; then
            cpu0=$(cpu_of $server)
            read -r ok failed retrans p50 p99 < <(run_sipp 127.0.0.1:$host_port "$rate")
            cpu1=$(cpu_of $server)
            rss=$(rss_of $server)
        else
            cpu0=$(group_cpu $kamailio)
            read -r ok failed retrans p50 p99 < <(run_sipp 127.0.0.1:$proxy_port "$rate")
            cpu1=$(group_cpu $kamailio)
            rss=$(group_rss $kamailio)
        fi
        per_call=$(echo "scale=3; 1000 * ($cpu1 - $cpu0) / $ticks / $calls" | bc)
        echo "| $rate | $target | $ok | $failed | $retrans | $p50 / $p99 ms | $per_call ms | $((rss / 1024)) MiB | $(stolen_share "$stolen0") % |"
        sleep 3 # the last calls' records and transactions settle
    done
done
