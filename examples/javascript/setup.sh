#!/usr/bin/env bash
# Install the JavaScript examples' toolchain on Debian: Node.js 20 or newer and npm (from
# apt, skipped when present), then componentize-js and its dependencies exactly as locked
# in package-lock.json, into node_modules/ here. (tests/run.sh installs Node.js itself;
# build.sh installs the npm packages when they are missing.)
set -euo pipefail
cd "$(dirname "$0")"

packages=()
command -v node > /dev/null || packages+=(nodejs)
command -v npm > /dev/null || packages+=(npm)
if [ ${#packages[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}"
fi
# componentize-js's parser (oxc-parser) and CLI (commander) need Node.js 20: Debian 13
# has it, Debian 12 has 18.
if [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
    echo "setup.sh: Node.js $(node --version) is too old: componentize-js needs 20 or newer" >&2
    exit 1
fi
# `npm install` with the lockfile installs exactly the locked versions. (`npm ci` refuses
# this lockfile: it holds only this platform's optional native binaries, not the other
# platforms' that the registry lists.)
npm install --no-audit --no-fund --prefer-offline > /dev/null
echo "componentize-js $(node_modules/.bin/componentize-js --version) with Node.js $(node --version)"
