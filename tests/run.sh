#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine, then run the whole test suite.
# This is the README's test command and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi

# Real SIP clients for the end-to-end tests, from Debian.
packages=()
command -v sipp >/dev/null || packages+=(sip-tester)
command -v baresip >/dev/null || packages+=(baresip baresip-core)
command -v sox >/dev/null || packages+=(sox)
# Text-to-speech for `say` (the host runs espeak-ng; the tests check what it said).
command -v espeak-ng >/dev/null || packages+=(espeak-ng)
command -v ip >/dev/null || packages+=(iproute2)
# The deployment files' checks (examples/deploy/wasmpbx.service).
command -v systemd-analyze >/dev/null || packages+=(systemd)
command -v python3 >/dev/null || packages+=(python3)
python3 -c 'import ensurepip' 2>/dev/null || packages+=(python3-venv)
# The C example scripts' compiler and libc for wasm32-wasi.
command -v clang-14 >/dev/null || packages+=(clang-14 lld-14)
[ -f /usr/lib/wasm32-wasi/libc.a ] || packages+=(wasi-libc libclang-rt-14-dev-wasm32)
# A real browser for the WebSocket/WebRTC tests, driven from Node.
command -v chromium >/dev/null || packages+=(chromium fonts-liberation)
# A carrier for the trunk tests: Kamailio as an ITSP edge, dnsmasq for its SRV records.
[ -x /usr/sbin/kamailio ] || packages+=(kamailio)
# Its TLS module (a TLS carrier), and OpenSSL's client (a TLS client the host must refuse).
compgen -G "/usr/lib/*/kamailio/modules/tls.so" >/dev/null || packages+=(kamailio-tls-modules)
# Its PostgreSQL module and schema: the edge keeps registrations in the nodes' database.
compgen -G "/usr/lib/*/kamailio/modules/db_postgres.so" >/dev/null || packages+=(kamailio-postgres-modules)
command -v openssl >/dev/null || packages+=(openssl)
[ -x /usr/sbin/dnsmasq ] || packages+=(dnsmasq-base)
command -v npm >/dev/null || packages+=(nodejs npm)
# The PostgreSQL store's tests run a throw-away cluster of Debian's PostgreSQL.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || packages+=(postgresql)
if [ ${#packages[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}"
fi

# The browser tests' packages (playwright-core, JsSIP, esbuild), exactly as locked.
(cd tests/browser && npm ci --no-audit --no-fund --prefer-offline > /dev/null)

# The example scripts in other languages, each built with its own toolchain, for the
# behaviour table (host/server/tests/integration/languages.rs) and the hot-reload test.
examples/javascript/build.sh target/examples/javascript
examples/python/build.sh target/examples/python
examples/c/build.sh target/examples/c

# Unit tests, scenario tests and the runtime's integration tests (the guests they need
# are built by tests/components/build.rs).
cargo test --locked

# Every fuzz target for a few seconds from its seed corpus (fuzz/README.md).
tests/fuzz.sh
