#!/usr/bin/env bash
# Build {{name}}.wasm here with componentize-js (installed into node_modules/ on first use;
# needs Node.js 20 or newer and npm).
set -euo pipefail
cd "$(dirname "$0")"
[ -x node_modules/.bin/componentize-js ] || npm install --no-audit --no-fund --prefer-offline > /dev/null
# The world's imports plus stdio (an uncaught exception's message reaches the host's log);
# no WASI HTTP, random or clocks: the host's clock is wasmpbx:script/clock.
node_modules/.bin/componentize-js src/{{name}}.js --wit wit --world-name {{world}} \
    -d http fetch-event random clocks -o .{{name}}.wasm.tmp > /dev/null
mv .{{name}}.wasm.tmp {{name}}.wasm
echo "built {{name}}.wasm ($(stat -c %s {{name}}.wasm) bytes)"
