#!/usr/bin/env bash
# Build the default scripts (Rust, on the guest SDK) for wasm32-wasip2 and put them in
# the watched folder — this folder by default, or the one given — by rename, so a
# running server picks each up whole.
#
#   scripts/build.sh [DEST_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$root/scripts}
scripts=(listen front-door flip-policy)

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
packages=()
for s in "${scripts[@]}"; do packages+=(-p "$s"); done
(cd "$root" && cargo build --release --target wasm32-wasip2 --target-dir "$root/target/guests" "${packages[@]}")

mkdir -p "$dest"
for s in "${scripts[@]}"; do
    built="$root/target/guests/wasm32-wasip2/release/${s//-/_}.wasm"
    cp "$built" "$dest/.$s.wasm.tmp"
    mv "$dest/.$s.wasm.tmp" "$dest/$s.wasm"
    echo "built $dest/$s.wasm ($(stat -c %s "$dest/$s.wasm") bytes)"
done
