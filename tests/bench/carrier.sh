#!/usr/bin/env bash
# Listen-mode calls per second out through a carrier that challenges every INVITE, side by
# side with the same carrier taking the trunk by IP (no challenge), in one run; then the
# registration with the carrier under 1,000 concurrent calls. Prints markdown for
# BENCHMARKS.md.
#
#   tests/bench/carrier.sh [RATES...]        (default: 200 400)
#
#   SIPp uac (127.0.0.2, the trunk) → wasmpbx (listen) → Kamailio (tests/carrier/,
#   127.0.0.3, record-routing) → SIPp as the PSTN (tests/sipp/pstn_uas_diversion.xml)
# Each rate runs CALLS calls (default 6000) of HOLD_MS (default 2000). A rate is clean
# when no call failed and neither SIPp retransmitted anything. Kamailio gets 512 MB of
# shared memory: with its default 64 MB its transactions (kept 5 s after they end) run
# out at ~900 calls/s and it answers 500. Needs a release build and kamailio
# (tests/run.sh installs it).
set -euo pipefail
. "$(dirname "$0")/server.sh"
calls=${CALLS:-6000}
hold=${HOLD_MS:-2000}
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(200 400)
carrier_port=15090

start_carrier() { # extra kamailio args; sets $carrier (the pid)
    local dir="$work/kamailio"
    mkdir -p "$dir"
    sed -e "s/@ADDR@/127.0.0.3:$carrier_port/g; s/@ALIAS@/carrier.test/g; s/@USER@/acct1/g" \
        -e "s/@PASSWORD@/secret/g; s/@REALM@/carrier.test/g; s/@PSTN@/sip:127.0.0.1:$uas_port/g" \
        -e "s/@PSTN_IP@/127.0.0.9/g; s/@NAME@/carrier/g" \
        -e "s/^debug=2/debug=1/; s/^children=1/children=2/" \
        "$root/tests/carrier/kamailio.cfg" > "$dir/kamailio.cfg"
    # In a process group of its own (with its workers), to be measured and stopped as one.
    setsid /usr/sbin/kamailio -f "$dir/kamailio.cfg" -DD -E -n 1 -m 512 -M 16 -Y "$dir" -P "$dir/pid" -w "$dir" "$@" \
        >> "$dir/log" 2>&1 &
    carrier=$!
    sleep 1
}

stop_carrier() {
    kill -- -"$carrier" 2>/dev/null || true
    sleep 1
}

carrier_cpu() { # CPU ticks of Kamailio and its workers
    pgrep -g "$carrier" | xargs -I{} awk '{print $14 + $15}' /proc/{}/stat | paste -sd+ | bc
}

carrier_sipp() { # rate -> "successful failed retransmissions seconds" (both SIPps' retransmissions)
    local rate=$1
    # The PSTN: answers what the carrier relays, keeping it in the path (Record-Route),
    # and refuses a call without Diversion or P-Asserted-Identity.
    sipp -sf "$root/tests/sipp/pstn_uas_diversion.xml" -i 127.0.0.1 -p $uas_port -nostdin -bg \
        -trace_stat -stf "$work/uas.csv" > /dev/null 2>&1 || true
    sleep 0.5
    local start end
    start=$(date +%s.%N)
    sipp -sn uac -i 127.0.0.2 -p 15080 -s 15550100 127.0.0.1:$host_port -r "$rate" -m "$calls" -d "$hold" \
        -l $((rate * 10)) -nostdin -timeout $((calls / rate + 60)) -trace_stat -stf "$work/uac.csv" \
        -trace_err -error_file "$work/uac_errors.log" > /dev/null 2>&1 || true
    end=$(date +%s.%N)
    pkill -f "sipp -sf $root/tests/sipp/pstn_uas_diversion.xml" || true
    sleep 0.5
    local retransmissions
    retransmissions=$(( $(column "$work/uac.csv" 'Retransmissions(C)') + $(column "$work/uas.csv" 'Retransmissions(C)') ))
    echo "$(column "$work/uac.csv" 'SuccessfulCall(C)') $(column "$work/uac.csv" 'FailedCall(C)')" \
        "$retransmissions $(echo "$end - $start" | bc)"
    rm -f "$work/uac.csv" "$work/uas.csv"
}

trunk='host = "127.0.0.3:15090"
username = "acct1"
password = "secret"
send_pai = true
diversion = true'
start_server listen 'return_number = "15550101"' "$trunk"

machine_line
echo
echo "| rate (calls/s) | carrier | successful | failed | retransmissions | wasmpbx CPU (% of one core) | Kamailio CPU |"
echo "|---|---|---|---|---|---|---|"
for rate in "${rates[@]}"; do
    for mode in challenge open; do
        if [ $mode = open ]; then start_carrier -A OPEN_TRUNK; else start_carrier; fi
        cpu0=$(cpu_of $server); k0=$(carrier_cpu)
        read -r ok failed retrans secs < <(carrier_sipp "$rate")
        cpu1=$(cpu_of $server); k1=$(carrier_cpu)
        cpu=$(echo "scale=0; 100 * ($cpu1 - $cpu0) / $ticks / $secs" | bc)
        kcpu=$(echo "scale=0; 100 * ($k1 - $k0) / $ticks / $secs" | bc)
        label=$([ $mode = open ] && echo "by IP (no challenge)" || echo "407 on every INVITE")
        echo "| $rate | $label | $ok | $failed | $retrans | $cpu | $kcpu |"
        if [ "$failed" != 0 ]; then
            echo "SIPp's errors (counts):" >&2
            grep -E '^(SIP/2.0|[A-Z]+ sip:)|rror|nexpected|borting' "$work/uac_errors.log" \
                | sed -E 's/[0-9]+/N/g' | sort | uniq -c | sort -rn | head -5 >&2
        fi
        [ -n "${KEEP:-}" ] || rm -f "$work/uac_errors.log"
        stop_carrier
    done
done

# The registration under load: 1,000 calls held for 70 s while the registration
# (60 s, refreshed at 30 s) goes on.
kill $server; sleep 1
start_server listen 'return_number = "15550101"' "$trunk
register = true
register_expires = 60"
start_carrier
http_port=$(grep -oE 'http://127.0.0.1:[0-9]+' "$work/server.out" | head -1 | cut -d: -f3)
sleep 2
sipp -sf "$root/tests/sipp/pstn_uas_diversion.xml" -i 127.0.0.1 -p $uas_port -nostdin -bg > /dev/null 2>&1 || true
sipp -sn uac -i 127.0.0.2 -p 15080 -s 15550100 127.0.0.1:$host_port -r 100 -m 1000 -d 70000 -l 1000 \
    -nostdin -timeout 200 -trace_stat -stf "$work/uac.csv" > /dev/null 2>&1 &
uac=$!
samples=0 registered=0 refreshes=0 last=0
while kill -0 $uac 2>/dev/null; do
    state=$(curl -s "http://127.0.0.1:$http_port/api/trunks")
    expires=$(echo "$state" | python3 -c 'import json,sys; r=json.load(sys.stdin)[0]["registration"]; print(r.get("expires_in_s", -1), r["state"])')
    read -r left st <<< "$expires"
    samples=$((samples + 1))
    [ "$st" = registered ] && registered=$((registered + 1))
    [ "$left" -gt "$last" ] && [ "$last" -gt 0 ] && refreshes=$((refreshes + 1))
    last=$left
    sleep 1
done
pkill -f "sipp -sf $root/tests/sipp/pstn_uas_diversion.xml" || true
echo
echo "Registration (60 s, refreshed at half) under 1,000 concurrent calls (100 calls/s, each held 70 s):"
echo "$registered of $samples one-second samples registered; $refreshes refreshes seen;" \
    "calls: $(column "$work/uac.csv" 'SuccessfulCall(C)') successful," \
    "$(column "$work/uac.csv" 'FailedCall(C)') failed, $(column "$work/uac.csv" 'Retransmissions(C)') retransmissions"
stop_carrier
