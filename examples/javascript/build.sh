#!/usr/bin/env bash
# Build the JavaScript front-door and flip-policy into components with componentize-js
# (npm, locked in package-lock.json), against the repo's wit/ package.
#
#   examples/javascript/build.sh [OUT_DIR]     (default: examples/javascript/build)
#
# Installs nothing outside this directory: if node_modules/ is missing or older than the
# lockfile, it runs `npm install` here (setup.sh installs Node.js and npm themselves).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "${1:-$here/build}" && cd "${1:-$here/build}" && pwd)
cd "$here"
if [ ! -x node_modules/.bin/componentize-js ] \
    || [ ! node_modules/.package-lock.json -nt package-lock.json ]; then
    # Exactly the locked versions (see setup.sh for why not `npm ci`).
    npm install --no-audit --no-fund --prefer-offline > /dev/null
fi
for script in front-door:routing-script flip-policy:flip-policy-script; do
    name=${script%%:*}
    world=${script#*:}
    # The world's imports plus stdio, so that an uncaught exception's message and stack
    # (written to stderr) reach the host's log line; no WASI HTTP, random or clocks.
    node_modules/.bin/componentize-js "src/$name.js" --wit ../../wit --world-name "$world" \
        -d http fetch-event random clocks -o "$out/.$name.wasm.tmp" > /dev/null
    mv "$out/.$name.wasm.tmp" "$out/$name.wasm"
    echo "built $out/$name.wasm ($(stat -c %s "$out/$name.wasm") bytes)"
done
