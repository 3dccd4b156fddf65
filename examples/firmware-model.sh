#!/usr/bin/env bash
# Regenerates the firmware's bundled model, fixtures/src/model.rs, from the bundled example data:
# the ankle accelerometer's three axes (the first three columns of the Daphnet recording, in mg,
# like the LIS3DH the firmware reads) → train → calibrate on the held-out test rows at 1 % false
# alarms → export. Deterministic for the seed below: re-running it gives the same file.
set -euo pipefail
cd "$(dirname "$0")/.."
work=out/firmware-model
mkdir -p "$work"
cut -d, -f1-3 examples/data/daphnet_gait.train.csv > "$work/ankle.train.csv"
cut -d, -f1-3 examples/data/daphnet_gait.test.csv > "$work/ankle.test.csv"
flowmote() { cargo run --quiet --release -p flowmote-tools --bin flowmote -- "$@"; }
# Every setting pinned (no search): the settings the bundled model was made with before the
# trainer's defaults gained the noise/size search, the whitening layer and the last-rows split.
flowmote train --data "$work/ankle.train.csv" --out "$work/model.json" --flow maf --layers 3 --hidden 16 \
    --noise 0 --no-whiten --val-split random --seed 1 -q
flowmote calibrate --model "$work/model.json" --data "$work/ankle.test.csv" --false-alarm-rate 0.01
flowmote export --model "$work/model.json" --out fixtures/src/model.rs
flowmote eval --model "$work/model.json" --data "$work/ankle.test.csv"
