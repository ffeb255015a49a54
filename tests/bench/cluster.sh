#!/usr/bin/env bash
# Several nodes against one: two wasmpbx nodes (127.0.0.11, 127.0.0.12) on one
# PostgreSQL (Debian's, a throw-away cluster with its default durability: fsync and
# synchronous commit on) behind the shipped edge (examples/deploy/kamailio/kamailio.cfg,
# Kamailio from Debian, 2 workers), against node a alone, driven directly — in one run,
# at each rate. Every call is a listen-mode call of HOLD_MS (default 1000) from SIPp's uac
# (127.0.0.2, the carrier) to a SIPp uas (the return number). Reports successful, failed,
# retransmissions, set-up p50/p99, and the CPU per call of the nodes, the edge and
# PostgreSQL. Markdown for BENCHMARKS.md.
#
#   tests/bench/cluster.sh [RATES...]        (default: 500 1000 1500)
#
# Needs a release build (cargo build --release -p wasmpbx), kamailio and postgresql.
set -euo pipefail
. "$(dirname "$0")/server.sh"
calls=${CALLS:-10000}
hold=${HOLD_MS:-1000}
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(500 1000 1500)
# A caller that follows the edge's Record-Route (SIPp's built-in uac sends every request
# to where it sent the INVITE), for both paths alike.
export UAC="$root/tests/bench/uac_routes.xml"
[ -x "$bin" ] || { echo "build first: cargo build --release -p wasmpbx" >&2; exit 1; }
edge_port=15095
pg_port=15432

work=$(mktemp -d)
chmod 755 "$work"
pids=()
pg=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
as_postgres() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
    kill -9 "${pids[@]}" 2>/dev/null || true
    [ -z "${kamailio:-}" ] || kill -9 -- -"$kamailio" 2>/dev/null || true
    as_postgres "$pg/pg_ctl" stop -m immediate -D "$work/pg/data" > /dev/null 2>&1 || true
    [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

mkdir "$work/pg"
[ "$(id -u)" -ne 0 ] || chown postgres: "$work/pg"
as_postgres "$pg/initdb" -A trust -U wasmpbx -E UTF8 --locale=C -D "$work/pg/data" > /dev/null
as_postgres "$pg/pg_ctl" start -w -D "$work/pg/data" -l "$work/pg/log" \
    -o "-p $pg_port -c listen_addresses=127.0.0.1 -k $work/pg" > /dev/null
psql -q -h 127.0.0.1 -p $pg_port -U wasmpbx -d postgres -c "CREATE DATABASE wasmpbx"
url="postgres://wasmpbx@127.0.0.1:$pg_port/wasmpbx"

mkdir -p "$work/scripts"
"$root/scripts/build.sh" "$work/scripts" > /dev/null
start_node() { # name ip
    cat > "$work/$1.toml" <<TOML
[sip]
listen = ["udp:$2:$host_port"]
[http]
listen = "127.0.0.1:0"
[media]
rtp_ports = "$([ "$1" = a ] && echo 20000-39999 || echo 40000-59999)"
[scripts]
dir = "$work/scripts"
cache_dir = "$work/cache-$1"
[store]
url = "$url"
[cluster]
node = "$1"
[[trunks]]
name = "pstn"
uri = "sip:127.0.0.1:$uas_port"
inbound = ["127.0.0.1", "127.0.0.2"]
[[locations]]
name = "bench"
flip_number = "15550100"
script = "listen"
fallback_number = "15550199"
[locations.vars]
return_number = "15550101"
TOML
    RUST_LOG=warn "$bin" run --config "$work/$1.toml" > "$work/$1.out" 2> "$work/$1.err" &
    pids+=($!)
}
start_node a 127.0.0.11
node_a=${pids[-1]}
start_node b 127.0.0.12
node_b=${pids[-1]}
sleep 2

printf '1 sip:127.0.0.11:%s\n1 sip:127.0.0.12:%s\n' $host_port $host_port > "$work/dispatcher.list"
setsid /usr/sbin/kamailio -f "$root/examples/deploy/kamailio/kamailio.cfg" -l "udp:127.0.0.1:$edge_port" \
    -A 'CARRIER="127.0.0.2"' -A "DISPATCHER_LIST=\"$work/dispatcher.list\"" -A PROBE_EVERY=1 \
    -DD -E -m 512 -M 16 -Y "$work" -P "$work/kamailio.pid" -w "$work" >> "$work/kamailio.log" 2>&1 &
kamailio=$!
sleep 3

group_cpu() { pgrep -g "$1" | xargs -I{} awk '{print $14 + $15}' /proc/{}/stat | paste -sd+ | bc; }
postmaster=$(head -n 1 "$work/pg/data/postmaster.pid")
pg_cpu() { # the postmaster and its backends
    { echo "$postmaster"; pgrep -P "$postmaster"; } | xargs -I{} awk '{print $14 + $15}' /proc/{}/stat | paste -sd+ | bc
}
# CPU ticks so far of the nodes, the edge and PostgreSQL.
cpu_now() { echo "$(( $(cpu_of $node_a) + $(cpu_of $node_b) )) $(group_cpu $kamailio) $(pg_cpu)"; }
per_call() { # ticks before, after -> ms per call
    echo "scale=3; 1000 * ($2 - $1) / $ticks / $calls" | bc
}

machine_line
echo "$(kamailio -v 2>/dev/null | head -n 1); $("$pg/postgres" --version)"
echo
echo "| rate (calls/s) | path | successful | failed | retransmissions | set-up p50 / p99 | CPU per call: nodes · edge · PostgreSQL |"
echo "|---|---|---|---|---|---|---|"
for rate in "${rates[@]}"; do
    for path in "node a alone" "edge + 2 nodes"; do
        target=127.0.0.11:$host_port
        [ "$path" = "node a alone" ] || target=127.0.0.1:$edge_port
        read -r nodes0 edge0 pg0 < <(cpu_now)
        read -r ok failed retrans p50 p99 < <(run_sipp "$target" "$rate")
        read -r nodes1 edge1 pg1 < <(cpu_now)
        echo "| $rate | $path | $ok | $failed | $retrans | $p50 / $p99 ms | $(per_call "$nodes0" "$nodes1") · $(per_call "$edge0" "$edge1") · $(per_call "$pg0" "$pg1") ms |"
        sleep 3 # the last calls' records settle
    done
done
echo
echo "Records in PostgreSQL by node: $(psql -tA -h 127.0.0.1 -p $pg_port -U wasmpbx -d wasmpbx \
    -c "SELECT string_agg(node || ' ' || n, ', ') FROM (SELECT node, COUNT(*) AS n FROM cdrs GROUP BY node ORDER BY node) c")"
