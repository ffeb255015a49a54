#!/usr/bin/env bash
# Build {{name}}.wasm (a component for wasm32-wasip2) here.
set -euo pipefail
cd "$(dirname "$0")"
if command -v rustup > /dev/null && ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
cargo build --quiet --release --target wasm32-wasip2
target=${CARGO_TARGET_DIR:-target}
cp "$target/wasm32-wasip2/release/{{ident}}.wasm" {{name}}.wasm
echo "built {{name}}.wasm ($(stat -c %s {{name}}.wasm) bytes)"
