#!/usr/bin/env bash
# What a shadow script costs the calls it watches: at each rate, CALLS listen-mode calls
# (default 10000, HOLD_MS 1000) through a location without a shadow, then the same
# through a location whose shadow is SHADOW (default front-door), on one server, in one
# run. Reports successful, failed, retransmissions, set-up p50/p99, the serving script's
# decision p99 (from /metrics: the histogram bucket it falls in), host CPU per call, and
# what the decision journal's thread did (compared, dropped for a full queue). Markdown for
# BENCHMARKS.md.
#
#   tests/bench/shadow.sh [RATES...]        (default: 500 1000 1500)
#
# Needs a release build (cargo build --release -p wasmpbx).
set -euo pipefail
. "$(dirname "$0")/server.sh"
calls=${CALLS:-10000}
hold=${HOLD_MS:-1000}
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(500 1000 1500)
export SHADOW=${SHADOW:-front-door}
start_server listen 'return_number = "15550101"'

metrics() { curl -s "$http/metrics" > "$1"; }

# The decision p99 between two /metrics snapshots (the listen script, every version),
# as the upper bound of its histogram bucket; and the shadow counters' growth.
between() { # before after -> "decision_p99 compared dropped"
    python3 - "$1" "$2" <<'PY'
import re, sys
def read(path):
    buckets, shadow = {}, {}
    for line in open(path):
        m = re.match(r'wasmpbx_script_decision_seconds_bucket\{script="listen",version="[^"]*",le="([^"]+)"\} (\d+)', line)
        if m:
            buckets[m[1]] = buckets.get(m[1], 0) + int(m[2])
        m = re.match(r'(wasmpbx_shadow_events_total\{result="\w+"\}|wasmpbx_decisions_dropped_total) (\d+)', line)
        if m:
            shadow[m[1]] = int(m[2])
    return buckets, shadow
(b0, s0), (b1, s1) = read(sys.argv[1]), read(sys.argv[2])
delta = sorted(((float("inf") if le == "+Inf" else float(le)), b1[le] - b0.get(le, 0)) for le in b1)
total = delta[-1][1] if delta else 0
p99 = next((le for le, n in delta if n >= 0.99 * total), float("inf")) if total else None
grew = lambda key: s1.get(key, 0) - s0.get(key, 0)
compared = sum(grew(k) for k in s1 if k.startswith("wasmpbx_shadow_events_total"))
p99 = "–" if p99 is None else ("> 50 ms" if p99 == float("inf") else f"≤ {p99 * 1e6:.0f} µs")
print(p99.replace(" ", "\u00a0"), compared, grew("wasmpbx_decisions_dropped_total"))
PY
}

machine_line
echo
echo "| rate (calls/s) | location | successful | failed | retransmissions | set-up p50 / p99 | decision p99 | host CPU per call | shadow: compared / dropped |"
echo "|---|---|---|---|---|---|---|---|---|"
for rate in "${rates[@]}"; do
    for number in 15550100 15550103; do
        metrics "$work/before"
        cpu0=$(cpu_of $server)
        read -r ok failed retrans p50 p99 < <(run_sipp 127.0.0.1:$host_port "$rate" $number)
        # The shadow thread may still be working through its queue.
        sleep 2
        cpu1=$(cpu_of $server)
        metrics "$work/after"
        read -r decision compared dropped < <(between "$work/before" "$work/after")
        per_call=$(echo "scale=3; 1000 * ($cpu1 - $cpu0) / $ticks / $calls" | bc)
        where=$([ $number = 15550103 ] && echo "shadowed by $SHADOW" || echo "no shadow")
        echo "| $rate | $where | $ok | $failed | $retrans | $p50 / $p99 ms | $decision | $per_call ms | $compared / $dropped |"
        sleep 2
    done
done
