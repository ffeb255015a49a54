#!/usr/bin/env bash
# Active mode under load: concurrent answered calls hearing prompts and pressing a key,
# through wasmpbx running the real front-door script, on loopback.
#
#   tests/bench/active.sh [CONCURRENT...]      (default: 250 500 750)
#
# For each target, SIPp callers (tests/bench/active_caller.xml) arrive at CONCURRENT/6
# calls a second for 30 s: each hears the welcome and the menu for 4 s, presses 2 by SIP
# INFO, hears "transferring", reaches billing (a SIPp UAS) and hangs up 3 s later. About
# six seconds of every call are the host's prompts, so CONCURRENT calls are playing at
# once in the steady state. dumpcap records loopback; active_analysis.py reports how late
# the host's RTP left against its 20 ms schedule and how long from each key to the
# INVITE to billing. Host CPU comes from /proc.
# Needs a release build (cargo build --release -p wasmpbx), sip-tester and tshark
# (dumpcap); run as root for the capture. The scripts are built fresh (scripts/build.sh).
set -euo pipefail
. "$(dirname "$0")/server.sh"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(250 500 750)
caller_port=15080 media_port=16000
start_server front-door 'sales = "15550140"
billing = "15550150"
operator = "15550160"'

machine_line
for target in "${targets[@]}"; do
    rate=$(( (target + 5) / 6 ))
    calls=$(( rate * 30 ))
    echo
    echo "## $target concurrent: $rate calls/s, $calls calls"
    sipp -sn uas -i 127.0.0.1 -p $uas_port -nostdin -bg > /dev/null 2>&1 || true
    dumpcap -q -P -i lo -s 64 -f "udp dst port $media_port" -w "$work/rtp.pcap" 2> /dev/null &
    rtp_cap=$!
    dumpcap -q -P -i lo -f "udp port $host_port or udp dst port $uas_port" -w "$work/sip.pcap" 2> /dev/null &
    sip_cap=$!
    sleep 1
    cpu0=$(cpu_of $server)
    start=$(date +%s.%N)
    sipp -sf "$root/tests/bench/active_caller.xml" -i 127.0.0.2 -p $caller_port -mp $media_port \
        -s 15550100 127.0.0.1:$host_port -r "$rate" -m "$calls" -l $(( rate * 10 )) \
        -nostdin -timeout $(( calls / rate + 60 )) -trace_stat -stf "$work/uac.csv" > /dev/null 2>&1 || true
    end=$(date +%s.%N)
    cpu1=$(cpu_of $server)
    sleep 1
    kill $rtp_cap $sip_cap; wait $rtp_cap $sip_cap 2>/dev/null || true
    pkill -f "sipp -sn uas -i 127.0.0.1 -p $uas_port" || true
    header=$(head -n 1 "$work/uac.csv"); last=$(tail -n 1 "$work/uac.csv")
    col() { echo "$header" | tr ';' '\n' | grep -n "^$1\$" | cut -d: -f1; }
    ok=$(echo "$last" | cut -d';' -f"$(col 'SuccessfulCall(C)')")
    failed=$(echo "$last" | cut -d';' -f"$(col 'FailedCall(C)')")
    secs=$(echo "$end - $start" | bc)
    cores=$(echo "scale=3; ($cpu1 - $cpu0) / $ticks / $secs" | bc)
    echo "calls: $ok successful, $failed failed, over $secs s"
    echo "host CPU: $cores cores on average over the run; per 100 concurrent calls: $(echo "scale=3; $cores * 100 / $target" | bc) cores"
    python3 "$root/tests/bench/active_analysis.py" "$work/rtp.pcap" "$work/sip.pcap" $media_port $host_port $uas_port
    rm -f "$work"/*.pcap "$work"/uac.csv
done
