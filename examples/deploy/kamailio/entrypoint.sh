#!/usr/bin/env bash
# Start the edge: create Kamailio's tables in the nodes' database if they are not there
# yet (the nodes create their own), then run Kamailio in the foreground with the settings
# from the environment (see kamailio.cfg's header for what each one means):
#   LISTEN           where to listen, e.g. udp:10.0.0.10:5060
#   CARRIER          the carrier's source address
#   CARRIER_OUT      where the nodes' calls out go (sip:host:port)
#   DISPATCHER_LIST  the nodes' list file
#   DB_URL           the shared PostgreSQL (postgres://user:password@host/db); unset:
#                    carrier calls only, no phones
#   REALM            the nodes' [sip] domain
# Extra arguments go to Kamailio as they are (e.g. -c to check the config and exit).
set -euo pipefail

defines=(-A "CARRIER=\"${CARRIER:?}\"" -A "DISPATCHER_LIST=\"${DISPATCHER_LIST:?}\"")
[ -n "${CARRIER_OUT:-}" ] && defines+=(-A "CARRIER_OUT=\"$CARRIER_OUT\"")
if [ -n "${DB_URL:-}" ]; then
    defines+=(-A "DB_URL=\"$DB_URL\"" -A "REALM=\"${REALM:?set REALM to the [sip] domain of the nodes}\"")
    # Wait for the database (it may start with us), then create the tables once.
    for _ in $(seq 60); do
        psql "$DB_URL" -qAtc 'SELECT 1' >/dev/null 2>&1 && break
        sleep 1
    done
    if [ "$(psql "$DB_URL" -qAtc "SELECT to_regclass('location') IS NOT NULL")" != "t" ]; then
        for schema in standard usrloc; do
            psql "$DB_URL" -q -v ON_ERROR_STOP=1 -f "/usr/share/kamailio/postgres/$schema-create.sql"
        done
        echo "wasmpbx-edge: created Kamailio's tables"
    fi
fi
exec kamailio -f /etc/kamailio/kamailio.cfg -DD -E -l "${LISTEN:?}" "${defines[@]}" "$@"
