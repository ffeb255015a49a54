#!/usr/bin/env bash
# Build {{name}}.wasm here: C bindings generated from wit/, compiled with clang for
# wasm32-wasi against wasi-libc, then made a component. Needs clang and lld with the
# wasm32 target and wasi-libc (Debian: clang lld wasi-libc libclang-rt-dev-wasm32), and
# the wasmpbx-c-componentize tool (`cargo install --path examples/c/componentize` in a
# wasmpbx checkout; or point WASMPBX_C_COMPONENTIZE at it).
set -euo pipefail
cd "$(dirname "$0")"
tool=${WASMPBX_C_COMPONENTIZE:-wasmpbx-c-componentize}
clang=${CC:-$(command -v clang-14 || command -v clang)}
gen=$(mktemp -d)
trap 'rm -rf "$gen"' EXIT
bindings=$(echo {{world}} | tr - _)
"$tool" bindgen wit {{world}} "$gen"
"$clang" --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -Werror -I "$gen" \
    src/{{ident}}.c "$gen/$bindings.c" "$gen/${bindings}_component_type.o" -o "$gen/core.wasm"
"$tool" component "$gen/core.wasm" .{{name}}.wasm.tmp
mv .{{name}}.wasm.tmp {{name}}.wasm
echo "built {{name}}.wasm ($(stat -c %s {{name}}.wasm) bytes)"
