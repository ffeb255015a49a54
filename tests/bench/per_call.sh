#!/usr/bin/env bash
# What a call costs the host, by thread: CPU and context switches per call at each rate,
# for builds side by side (alternating, so a noisy machine treats them alike).
#
#   tests/bench/per_call.sh RATE... [-- BIN...]   (default build: target/release/wasmpbx)
#
# For each build and rate: a fresh listen-mode server (tests/bench/server.sh), 2 000
# calls at 500/s to warm it, then CALLS calls (default 10000) of HOLD_MS (default 1000)
# through SIPp uac → wasmpbx → SIPp uas. Prints the SIPps' outcome, the server's CPU
# per call (its /proc ticks, the call's tail included) and its context switches per
# call (voluntary and not, from /proc/PID/task/*/status) summed by thread name: a
# thread woken per message or per decision shows up there before it shows in CPU.
# ROUNDS=N runs the whole alternation N times (default 1). A rate of 0 measures the
# warmed server idle instead: 10 s with no call (after 40 s for the warm-up's
# transactions to end), per second.
set -euo pipefail
rates=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do rates+=("$1"); shift; done
[ $# -gt 0 ] && shift
bins=("$@")
[ ${#rates[@]} -gt 0 ] || { echo "usage: $0 RATE... [-- BIN...]" >&2; exit 2; }
. "$(dirname "$0")/server.sh"
[ ${#bins[@]} -gt 0 ] || bins=("$bin")
calls=${CALLS:-10000}
hold=${HOLD_MS:-1000}

# "tid name switches" for every thread of the server.
switches() {
    local task
    for task in /proc/"$server"/task/*; do
        printf '%s %s %s\n' "${task##*/}" "$(tr ' ' _ < "$task/comm")" \
            "$(awk '/ctxt_switches/ {s += $2} END {print s}' "$task/status")"
    done
}

machine_line
for _ in $(seq "${ROUNDS:-1}"); do
    for build in "${bins[@]}"; do
        for rate in "${rates[@]}"; do
            bin=$build
            start_server listen 'return_number = "15550101"'
            calls=2000 run_sipp 127.0.0.1:$host_port 500 > /dev/null
            if [ "$rate" = 0 ]; then
                sleep 40
                per=10
                before=$(switches)
                cpu0=$(cpu_of "$server")
                sleep $per
                cpu1=$(cpu_of "$server")
                after=$(switches)
                echo "$(basename "$build") idle: CPU $(echo "scale=3; 1000 * ($cpu1 - $cpu0) / $ticks / $per" | bc) ms a second"
                unit=second
            else
                per=$calls
                before=$(switches)
                cpu0=$(cpu_of "$server")
                read -r ok failed retrans p50 p99 < <(run_sipp 127.0.0.1:$host_port "$rate")
                cpu1=$(cpu_of "$server")
                after=$(switches)
                echo "$(basename "$build") at $rate/s: $ok ok, $failed failed, $retrans retransmissions, set-up p99 $p99 ms," \
                    "CPU $(echo "scale=3; 1000 * ($cpu1 - $cpu0) / $ticks / $calls" | bc) ms a call"
                unit=call
            fi
            kill "$server"
            wait "$server" 2> /dev/null || true
            python3 - "$per" "$before" "$after" "$unit" <<'EOF'
import collections, sys
calls, before, after, unit = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
start = {tid: int(n) for tid, _, n in (line.split() for line in before.splitlines())}
by_name = collections.Counter()
for tid, name, n in (line.split() for line in after.splitlines()):
    by_name[name] += int(n) - start.get(tid, 0)
total = sum(by_name.values())
print(f"  context switches a {unit}: {total / calls:.2f} (" + ", ".join(
    f"{name} {n / calls:.2f}" for name, n in by_name.most_common() if n) + ")")
EOF
            rm -rf "$work"
        done
    done
done
