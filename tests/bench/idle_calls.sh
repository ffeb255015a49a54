#!/usr/bin/env bash
# Memory per idle anchored call: CALLS listen-mode calls through wasmpbx (SIPp uac from
# the trunk's 127.0.0.2 → wasmpbx, listen script, four media ports a call → SIPp uas),
# set up at RATE calls/s and then held with no media; the host's RSS before (after a
# warm-up of 200 short calls), with every
# call up (per /api/health's live_calls) and idle — SETTLE seconds later (default 40:
# the set-up transactions are gone after RFC 6026's 32 s) — and once they have ended.
# One server per count. Prints a markdown table for BENCHMARKS.md.
#
#   tests/bench/idle_calls.sh [CALLS...]        (default 2000; RATE=200)
#
# Needs a release build (cargo build --release -p wasmpbx).
set -euo pipefail
. "$(dirname "$0")/server.sh"
rate=${RATE:-200}
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(2000)
settle=${SETTLE:-40}

live_calls() {
    curl -s "$http/api/health" | python3 -c 'import json, sys; print(json.load(sys.stdin).get("live_calls") or 0)'
}

until_live() { # test (-ge N or -eq 0), bounded by 120 s
    for _ in $(seq 240); do
        [ "$(live_calls)" "$@" ] && return 0
        sleep 0.5
    done
    echo "live calls never reached $*: $(live_calls)" >&2
    return 1
}

machine_line
echo
echo "| calls held | host RSS before | with the calls up | per call | after they ended |"
echo "|---|---|---|---|---|"
for calls in "${counts[@]}"; do
    start_server listen 'return_number = "15550101"'
    sipp -sn uas -i 127.0.0.1 -p $uas_port -nostdin -bg > /dev/null 2>&1 || true
    sleep 0.5
    # A warm-up (200 short calls: the script pool, the store, the allocator's first
    # pages), then the baseline once they are over.
    sipp -sn uac -i 127.0.0.2 -p 15080 -s 15550100 127.0.0.1:$host_port -r "$rate" -m 200 \
        -d 500 -nostdin > /dev/null 2>&1 || true
    until_live -eq 0
    sleep 5
    before=$(rss_of $server)
    # Held long enough for all to be up and measured; then SIPp hangs them up.
    hold=$(( (calls / rate + settle + 15) * 1000 ))
    sipp -sn uac -i 127.0.0.2 -p 15080 -s 15550100 127.0.0.1:$host_port -r "$rate" -m "$calls" \
        -d "$hold" -l "$calls" -nostdin -bg > /dev/null 2>&1 || true
    until_live -ge "$calls"
    sleep "$settle"
    up=$(rss_of $server)
    until_live -eq 0
    sleep 2
    after=$(rss_of $server)
    pkill -f "sipp -sn u" || true
    kill $server
    wait $server 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$work"
    sleep 1
    echo "| $calls | $((before / 1024)) MiB | $((up / 1024)) MiB | $(( (up - before) / calls )) KiB | $((after / 1024)) MiB |"
done
