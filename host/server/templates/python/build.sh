#!/usr/bin/env bash
# Build {{name}}.wasm here with componentize-py (installed into .venv/ on first use; needs
# Python 3 with venv).
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/componentize-py ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
fi
.venv/bin/componentize-py --wit-path wit --world {{world}} componentize \
    --python-path src {{ident}} -o .{{name}}.wasm.tmp > /dev/null
mv .{{name}}.wasm.tmp {{name}}.wasm
echo "built {{name}}.wasm ($(stat -c %s {{name}}.wasm) bytes)"
