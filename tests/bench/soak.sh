#!/usr/bin/env bash
# A soak, not CI: MINUTES (default 60) of SIPp calls at RATE a second (default 1000, half
# the clean figure in BENCHMARKS.md), each held 2 s, through the `listen` script to a
# SIPp return side, while tests/bench/flip_load.py keeps CALLS (default 20) calls with
# RTP both ways on the same server and flips one every 2 s (pulls and pushes). Every
# minute: the host's RSS, open fds, threads, live calls, the SQLite file and its WAL,
# both SIPps' counts, and the host's late SIP timers (over 100 ms, and the latest one: a
# stalled host shows there, a stalled machine too, a slow SIPp does not) into OUT/soak.csv; at the end OUT/soak.png (matplotlib, in a
# venv of its own) and the flip driver's summary.
#
#   tests/bench/soak.sh            (needs a release build; OUT default docs/soak)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin="${WASMPBX_BIN:-$root/target/release/wasmpbx}"
[ -x "$bin" ] || { echo "build first: cargo build --release -p wasmpbx" >&2; exit 1; }
minutes=${MINUTES:-60}
rate=${RATE:-1000}
calls=${CALLS:-20}
out=${OUT:-$root/docs/soak}
mkdir -p "$out"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; pkill -f "sipp -sn uas -i 127.0.0.1 -p 15070" || true' EXIT
mkdir -p "$work/scripts"
"$root/scripts/build.sh" "$work/scripts" > /dev/null

sipp -sn uas -i 127.0.0.1 -p 15070 -nostdin -bg -trace_stat -fd 60 -stf "$work/uas.csv" > /dev/null 2>&1 || true
extra='
[[trunks]]
name = "pstn"
uri = "sip:127.0.0.1:15070"
inbound = ["127.0.0.2"]
[[locations]]
name = "soak"
flip_number = "15550100"
script = "listen"
fallback_number = "15550199"
[locations.vars]
return_number = "15550101"
'
seconds=$((minutes * 60))
# The flip driver (and its server) outlasts the callers, who start after it.
EXTRA_CONFIG="$extra" python3 "$root/tests/bench/flip_load.py" "$bin" "$work/scripts" "$calls" 0.5 $((seconds + 40)) \
    > "$out/flips.txt" 2>&1 &
flips=$!
for _ in $(seq 60); do
    pid=$(pgrep -f 'wasmpbx-flip-load-[^ ]*/wasmpbx.toml' | head -n 1 || true)
    [ -n "$pid" ] && curl -sf http://127.0.0.1:18080/healthz > /dev/null && break
    sleep 1
done
[ -n "$pid" ] || { echo "the server did not start" >&2; exit 1; }
db=$(dirname "$(tr '\0' ' ' < "/proc/$pid/cmdline" | grep -o '/[^ ]*wasmpbx.toml')")/bench.db
sleep 10 # the flip driver's calls up

echo "Machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $minutes min at $rate calls/s + $calls flipping calls with RTP" \
    > "$out/machine.txt"
sipp -sn uac -i 127.0.0.2 -p 15080 -s 15550100 127.0.0.1:16060 -r "$rate" -m $((rate * seconds)) -d 2000 \
    -l $((rate * 10)) -nostdin -timeout $((seconds + 120)) -trace_stat -fd 60 -stf "$work/uac.csv" > /dev/null 2>&1 &
callers=$!

column() { # csv header-name -> the last line's value of that column (0 before the first)
    [ -s "$1" ] || { echo 0; return; }
    local col
    col=$(head -n 1 "$1" | tr ';' '\n' | grep -n "^$2\$" | cut -d: -f1)
    tail -n 1 "$1" | cut -d';' -f"$col"
}
metric() { # name (with labels) -> its value in the host's /metrics (0 if absent)
    curl -sf http://127.0.0.1:18080/metrics | awk -v m="$1" '$1 == m {print $2; found=1} END {if (!found) print 0}'
}
echo "minute,rss_kib,fds,threads,live_calls,db_bytes,wal_bytes,calls_ok,calls_failed,retransmissions,timers_late_100ms,timer_lag_max_s" > "$out/soak.csv"
minute=0
while kill -0 "$callers" 2>/dev/null && kill -0 "$pid" 2>/dev/null && [ "$minute" -le $((minutes + 2)) ]; do
    live=$(curl -sf http://127.0.0.1:18080/api/health | python3 -c 'import json,sys; print(json.load(sys.stdin)["live_calls"])' || echo -1)
    retrans=$(( $(column "$work/uac.csv" 'Retransmissions(C)') + $(column "$work/uas.csv" 'Retransmissions(C)') ))
    echo "$minute,$(awk '/VmRSS/ {print $2}' "/proc/$pid/status"),$(ls "/proc/$pid/fd" | wc -l),$(awk '/Threads/ {print $2}' "/proc/$pid/status"),$live,$(stat -c %s "$db"),$(stat -c %s "$db-wal" 2>/dev/null || echo 0),$(column "$work/uac.csv" 'SuccessfulCall(C)'),$(column "$work/uac.csv" 'FailedCall(C)'),$retrans,$(metric 'wasmpbx_sip_timers_late_total{over="0.1"}'),$(metric wasmpbx_sip_timer_lag_max_seconds)" \
        >> "$out/soak.csv"
    minute=$((minute + 1))
    sleep 60
done
wait "$callers" || true
sleep 2
retrans=$(( $(column "$work/uac.csv" 'Retransmissions(C)') + $(column "$work/uas.csv" 'Retransmissions(C)') ))
echo "SIPp: $(column "$work/uac.csv" 'SuccessfulCall(C)') calls ok, $(column "$work/uac.csv" 'FailedCall(C)') failed, $retrans retransmissions" \
    >> "$out/machine.txt"
wait "$flips" || true

python3 -m venv "$work/venv" > /dev/null
"$work/venv/bin/pip" install --quiet matplotlib
"$work/venv/bin/python" "$root/tests/bench/soak_plot.py" "$out/soak.csv" "$out/soak.png"
cat "$out/machine.txt" "$out/flips.txt"
