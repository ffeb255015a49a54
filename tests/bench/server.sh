# Sourced by the benchmark scripts: a release wasmpbx on loopback with one location.
#
#   start_server SCRIPT VARS [TRUNK]
#                               sets $work (a temp folder, removed at exit unless KEEP
#                               is set), $server (the pid), $host_port and $uas_port
#                               (where the location's trunk, a SIPp UAS, listens).
#                               TRUNK: the [[trunks]] keys after its name, instead of
#                               uri = the UAS.
#                               With STREAM_URL set, a second location on 15550102
#                               streams every call's audio there; with SHADOW set, a
#                               location on 15550103 runs SHADOW as its shadow script.
#                               $http: the admin API's address (http://IP:PORT).
#                               RECORD_DECISIONS=false: [scripts] record_decisions off.
#                               SHARDS=N: [sip] shards (unset: the default, one per CPU).
# Also cpu_of PID (CPU ticks used), rss_of PID (KiB), $ticks, machine_line, and
# run_sipp (SIPp calls through a target with their set-up times).

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# WASMPBX_BIN: another build to measure (e.g. an older commit's, side by side).
# RUST_LOG: the server's log filter (default warn: only what goes wrong).
bin="${WASMPBX_BIN:-$root/target/release/wasmpbx}"
host_port=15060
uas_port=15070
ticks=$(getconf CLK_TCK)

start_server() { # script, location vars (TOML lines), trunk keys (TOML lines)
    [ -x "$bin" ] || { echo "build first: cargo build --release -p wasmpbx" >&2; exit 1; }
    work=$(mktemp -d)
    trap 'kill $(jobs -p) 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
    mkdir -p "$work/scripts"
    # Quotes inside a ${…:-…} default are lost in a here-document: build the line first.
    local trunk=${3:-"uri = \"sip:127.0.0.1:$uas_port\""}
    # Only when asked: a build from before sip.shards refuses the key.
    local shards=""
    [ -z "${SHARDS:-}" ] || shards="shards = $SHARDS"
    "$root/scripts/build.sh" "$work/scripts" > /dev/null
    cat > "$work/wasmpbx.toml" <<TOML
[sip]
listen = ["udp:127.0.0.1:$host_port"]
$shards
[http]
listen = "127.0.0.1:0"
[media]
rtp_ports = "20000-59999"
[scripts]
dir = "$work/scripts"
record_decisions = ${RECORD_DECISIONS:-true}
[store]
path = "$work/bench.db"
[[trunks]]
name = "pstn"
$trunk
inbound = ["127.0.0.2"]
TOML
    location bench 15550100 "$1" "" "$2"
    # The same location again on 15550102, streaming every call's audio.
    [ -z "${STREAM_URL:-}" ] || location bench-streamed 15550102 "$1" "stream_url = \"$STREAM_URL\"" "$2"
    # The same location again on 15550103, with a shadow script.
    [ -z "${SHADOW:-}" ] || location bench-shadowed 15550103 "$1" "shadow = \"$SHADOW\"" "$2"
    # The open-files limit of the shipped systemd unit (examples/deploy), where allowed.
    ulimit -n 65536 2>/dev/null || true
    RUST_LOG="${RUST_LOG:-warn}" "$bin" run --config "$work/wasmpbx.toml" > "$work/server.out" 2> "$work/server.err" &
    server=$!
    sleep 2
    http=$(grep -o 'http://[0-9.]*:[0-9]*' "$work/server.out" | head -n 1)
}

location() { # name, flip number, script, an extra key (TOML line), vars (TOML lines)
    cat >> "$work/wasmpbx.toml" <<TOML
[[locations]]
name = "$1"
flip_number = "$2"
script = "$3"
fallback_number = "15550199"
$4
[locations.vars]
$5
TOML
}

cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_of() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# "steal total": all CPUs' ticks stolen by the hypervisor, and all ticks. On a VM a noisy
# neighbour shows here, not in the load average: with stolen_share, the share of the
# machine taken from a stretch of a run.
cpu_ticks() { awk '/^cpu / {print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
stolen_share() { # "steal total" from cpu_ticks before -> percent stolen since
    local s0 t0 s1 t1
    read -r s0 t0 <<< "$1"
    read -r s1 t1 < <(cpu_ticks)
    echo "scale=1; 100 * ($s1 - $s0) / ($t1 - $t0 + 1)" | bc
}

machine_line() {
    echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg)"
}

column() { # csv header-name -> the last line's value of that column
    local col
    col=$(head -n 1 "$1" | tr ';' '\n' | grep -n "^$2\$" | cut -d: -f1)
    tail -n 1 "$1" | cut -d';' -f"$col"
}

# CALLS calls of HOLD_MS from SIPp's uac (127.0.0.2, the trunk; UAC: a scenario file
# instead of the built-in one) to NUMBER at TARGET,
# answered by a SIPp uas on $uas_port. Prints "successful failed retransmissions
# setup_p50 setup_p99" (retransmissions: both SIPps'; set-up: INVITE → 200 in ms). A
# call that waits 30 s for an answer has failed (past saturation some never get one).
run_sipp() { # target rate [number]
    local target=$1 rate=$2 number=${3:-15550100}
    local scenario=(-sn uac)
    [ -z "${UAC:-}" ] || scenario=(-sf "$UAC")
    sipp -sn uas -i 127.0.0.1 -p $uas_port -nostdin -bg -trace_stat -fd 1 -stf "$work/uas.csv" > /dev/null 2>&1 || true
    sleep 0.5
    (cd "$work" && sipp "${scenario[@]}" -i 127.0.0.2 -p 15080 -s "$number" "$target" -r "$rate" -m "$calls" -d "$hold" \
        -l $((rate * 10)) -nostdin -timeout $((calls / rate + 60)) -recv_timeout 30000 \
        -trace_stat -stf "$work/uac.csv" \
        -trace_rtt -rtt_freq 1 > /dev/null 2>&1 || true)
    sleep 1.5 # the UAS writes its counts each second (-fd 1)
    pkill -f "sipp -sn uas -i 127.0.0.1 -p $uas_port" || true
    sleep 0.5
    local retrans=$(( $(column "$work/uac.csv" 'Retransmissions(C)') + $(column "$work/uas.csv" 'Retransmissions(C)') ))
    local setup
    setup=$(tail -q -n +2 "$work"/uac_*_rtt.csv | cut -d';' -f2 | sort -n |
        awk '{v[NR] = $1} END {if (NR) printf "%d %d", v[int(NR * 0.5) + 1], v[int(NR * 0.99) + 1]; else print "- -"}')
    echo "$(column "$work/uac.csv" 'SuccessfulCall(C)') $(column "$work/uac.csv" 'FailedCall(C)') $retrans $setup"
    rm -f "$work"/uac.csv "$work"/uas.csv "$work"/uac_*_rtt.csv
}
