# Sourced by the benchmark scripts: a release wasmpbx on loopback with one location.
#
#   start_server SCRIPT VARS [TRUNK]
#                               sets $work (a temp folder, removed at exit unless KEEP
#                               is set), $server (the pid), $host_port and $uas_port
#                               (where the location's trunk, a SIPp UAS, listens).
#                               TRUNK: the [[trunks]] keys after its name, instead of
#                               uri = the UAS.
#                               With STREAM_URL set, a second location on 15550102
#                               streams every call's audio there.
# Also cpu_of PID (CPU ticks used), rss_of PID (KiB), $ticks, and machine_line.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# WASMPBX_BIN: another build to measure (e.g. an older commit's, side by side).
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
    "$root/scripts/build.sh" "$work/scripts" > /dev/null
    cat > "$work/wasmpbx.toml" <<TOML
[sip]
listen = ["udp:127.0.0.1:$host_port"]
[http]
listen = "127.0.0.1:0"
[media]
rtp_ports = "20000-59999"
[scripts]
dir = "$work/scripts"
[store]
path = "$work/bench.db"
[[trunks]]
name = "pstn"
$trunk
inbound = ["127.0.0.2"]
[[locations]]
name = "bench"
flip_number = "15550100"
script = "$1"
fallback_number = "15550199"
[locations.vars]
$2
TOML
    if [ -n "${STREAM_URL:-}" ]; then
        # The same location again on 15550102, streaming every call's audio.
        cat >> "$work/wasmpbx.toml" <<TOML
[[locations]]
name = "bench-streamed"
flip_number = "15550102"
script = "$1"
fallback_number = "15550199"
stream_url = "$STREAM_URL"
[locations.vars]
$2
TOML
    fi
    RUST_LOG=warn "$bin" run --config "$work/wasmpbx.toml" > "$work/server.out" 2> "$work/server.err" &
    server=$!
    sleep 2
}

cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_of() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

machine_line() {
    echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg)"
}
