#!/usr/bin/env bash
# Build the JavaScript front-door and flip-policy into components with componentize-js
# (npm, locked in package-lock.json), against the repo's wit/ package.
#
#   examples/javascript/build.sh [OUT_DIR]     (default: examples/javascript/build)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "${1:-$here/build}" && cd "${1:-$here/build}" && pwd)
cd "$here"
# `npm install` with the lockfile installs exactly the locked versions. (`npm ci` refuses
# this lockfile: the registry mirror lists no other platforms' optional binaries, so the
# lock has no entries for them.)
[ -x node_modules/.bin/componentize-js ] || npm install --no-audit --no-fund --prefer-offline > /dev/null
for script in front-door:routing-script flip-policy:flip-policy-script; do
    name=${script%%:*}
    world=${script#*:}
    # The world's imports and stdio (an uncaught exception's message and stack go to
    # stderr, which the host puts in its log line); no WASI HTTP, random or clocks.
    node_modules/.bin/componentize-js "src/$name.js" --wit ../../wit --world-name "$world" \
        -d http fetch-event random clocks -o "$out/.$name.wasm.tmp" > /dev/null
    mv "$out/.$name.wasm.tmp" "$out/$name.wasm"
    echo "built $out/$name.wasm ($(stat -c %s "$out/$name.wasm") bytes)"
done
