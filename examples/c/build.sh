#!/usr/bin/env bash
# Build the C front-door and flip-policy into components: bindings generated from the
# repo's wit/ at every build (wit-bindgen's C generator, through this workspace's
# wasmpbx-c-componentize tool), compiled with clang for wasm32-wasi against wasi-libc
# (Debian), and turned into components by the same tool (what `wasm-tools component
# new` does). The modules import nothing from WASI, so no adapter is needed.
#
#   examples/c/build.sh [OUT_DIR]     (default: examples/c/build)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$(mkdir -p "${1:-$here/build}" && cd "${1:-$here/build}" && pwd)
clang=$(command -v clang-14 || command -v clang)
(cd "$root" && cargo build --quiet -p wasmpbx-c-componentize)
tool="$root/target/debug/wasmpbx-c-componentize"
gen=$(mktemp -d)
trap 'rm -rf "$gen"' EXIT
for script in front-door:routing-script:front_door.c:schedule.c flip-policy:flip-policy-script:flip_policy.c; do
    IFS=: read -r name world sources <<< "$script"
    bindings=${world//-/_}
    "$tool" bindgen "$root/wit" "$world" "$gen/$name"
    "$clang" --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -Werror -I "$gen/$name" \
        $(for s in ${sources//:/ }; do echo "$here/src/$s"; done) \
        "$gen/$name/$bindings.c" "$gen/$name/${bindings}_component_type.o" -o "$gen/$name.core.wasm"
    "$tool" component "$gen/$name.core.wasm" "$out/.$name.wasm.tmp"
    mv "$out/.$name.wasm.tmp" "$out/$name.wasm"
    echo "built $out/$name.wasm ($(stat -c %s "$out/$name.wasm") bytes)"
done
