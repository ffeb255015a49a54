#!/usr/bin/env bash
# A short run of every fuzz target from its seed corpus (fuzz/corpus/): a regression
# check that the seeds and a few thousand mutations of them still go through without a
# crash, in seconds. Long runs: fuzz/README.md.
#
#   tests/fuzz.sh [RUNS]   (default 20000 inputs per target)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
runs=${1:-20000}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
# The stable toolchain takes cargo-fuzz's sanitizer flags this way (no nightly here).
export RUSTC_BOOTSTRAP=1
targets=$(cargo fuzz list)
cargo fuzz build > /dev/null 2>&1 || cargo fuzz build
for target in $targets; do
    # A copy: libFuzzer adds what it finds to the corpus folder it is given.
    scratch=$(mktemp -d)
    cp -r "corpus/$target/." "$scratch/"
    # A fixed seed: the same inputs every run, so a failure here is reproducible.
    if ! cargo fuzz run "$target" "$scratch" -- -runs="$runs" -seed=1 \
        -max_len=65536 -print_final_stats=1 > "$scratch.log" 2>&1; then
        tail -n 40 "$scratch.log" >&2
        echo "fuzz target $target crashed: its input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
    echo "fuzz $target: $(grep -o 'stat::number_of_executed_units: *[0-9]*' "$scratch.log" | grep -o '[0-9]*$') inputs, no crash"
    rm -rf "$scratch" "$scratch.log"
done
