#!/usr/bin/env bash
# Generates the default voice prompts of wasmpbx into this folder (host/prompts/):
# one WAV per prompt, 8000 Hz, mono, 16-bit signed PCM little endian, leading and
# trailing silence trimmed (about 50 ms left at each end), normalised to -3 dBFS peak.
#
# Needs: espeak-ng (speech synthesis, fixed voice en-us at 160 wpm) and sox
# (resampling, trimming, normalising; run without dither so the output is
# byte-for-byte reproducible).
#
# The generated WAVs are committed, so the server works without these tools;
# run this script only to change or add a prompt:
#     host/prompts/generate.sh
set -euo pipefail

export LC_ALL=C

for tool in espeak-ng sox; do
    command -v "$tool" >/dev/null 2>&1 || { echo "generate.sh: $tool is required" >&2; exit 1; }
done

out_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tmp_dir="$(mktemp -d)"
trap 'rm -rf "$tmp_dir"' EXIT

# file name (without .wav) | text
prompts=(
    "welcome|Welcome. Thank you for calling."
    "menu|For sales, press 1. For billing, press 2. For the operator, press 0."
    "closed|We are closed right now. Please call again during business hours."
    "transferring|Please hold while we connect you."
    "goodbye|Goodbye."
    "enter-pin|Please enter your PIN, followed by the hash key."
    "invalid-choice|Sorry, that is not a valid choice."
)

for entry in "${prompts[@]}"; do
    name="${entry%%|*}"
    text="${entry#*|}"
    raw="$tmp_dir/$name.raw.wav"
    out="$out_dir/$name.wav"

    espeak-ng -v en-us -s 160 -w "$raw" -- "$text"

    # -D: no dither (deterministic). Effects: trim leading silence, trim trailing
    # silence (via reverse), resample to 8 kHz mono, pad 50 ms each end, normalise.
    sox -D "$raw" \
        -r 8000 -c 1 -b 16 -e signed-integer -L -t wav "$out" \
        silence 1 0.01 0.1% \
        reverse silence 1 0.01 0.1% reverse \
        rate -h 8000 channels 1 \
        pad 0.05 0.05 \
        norm -3

    echo "$out"
done
