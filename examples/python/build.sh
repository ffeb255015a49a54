#!/usr/bin/env bash
# Build the Python front-door and flip-policy into components with componentize-py
# (PyPI, pinned in requirements.txt, installed into .venv here), against the repo's wit/.
#
#   examples/python/build.sh [OUT_DIR]     (default: examples/python/build)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "${1:-$here/build}" && cd "${1:-$here/build}" && pwd)
cd "$here"
if [ ! -x .venv/bin/componentize-py ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
fi
for script in front-door:front_door:routing-script flip-policy:flip_policy:flip-policy-script; do
    IFS=: read -r name module world <<< "$script"
    .venv/bin/componentize-py --wit-path ../../wit --world "$world" componentize \
        --python-path src "$module" -o "$out/.$name.wasm.tmp" > /dev/null
    mv "$out/.$name.wasm.tmp" "$out/$name.wasm"
    echo "built $out/$name.wasm ($(stat -c %s "$out/$name.wasm") bytes)"
done
