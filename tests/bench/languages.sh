#!/usr/bin/env bash
# The front-door in Rust, C, JavaScript and Python side by side (host/server/benches/languages.rs),
# including the reload of a one-line change: each example is built, and the JavaScript and
# Python ones again with one line of the source changed, as front-door-changed.wasm.
#
#   tests/bench/languages.sh        (after tests/run.sh, or with the toolchains installed)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
for language in c javascript python; do
    "examples/$language/build.sh" "target/examples/$language" > /dev/null
done
changed=$(mktemp -d)
trap 'rm -rf "$changed"' EXIT
# JavaScript and Python once more with one line of the front-door changed (their
# components embed the source; a C or Rust script compiles in milliseconds anyway).
mkdir -p "$changed/examples"
ln -s "$root/wit" "$changed/wit"
for language in javascript python; do
    cp -r "examples/$language" "$changed/examples/"
done
sed -i 's/^const MENU_TIMEOUT_MS = 5000;/const MENU_TIMEOUT_MS = 5001;/' "$changed/examples/javascript/src/front-door.js"
sed -i 's/^MENU_TIMEOUT_MS = 5_000/MENU_TIMEOUT_MS = 5_001/' "$changed/examples/python/src/front_door.py"
for language in javascript python; do
    "$changed/examples/$language/build.sh" "$changed/out/$language" > /dev/null
    cp "$changed/out/$language/front-door.wasm" "target/examples/$language/front-door-changed.wasm"
done
cargo bench -p wasmpbx --bench languages
