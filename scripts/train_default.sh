#!/usr/bin/env bash
# Reproduces the bundled default model on a 2-core CPU (see docs/TRAINING.md for wall times).
# Every step resumes if rerun after a kill. Set THREADS to the cores you can spare.
set -euo pipefail
cd "$(dirname "$0")/.."
M=.venv/bin/musekit
RUNS=${RUNS:-runs}
THREADS=${THREADS:-2}

$M train-tokenizer --config configs/tokenizer-shapes.json --out "$RUNS/tok" --threads "$THREADS"
$M encode-shards --tokenizer "$RUNS/tok/final" --out "$RUNS/shards" --num 20000 --threads "$THREADS"
# The two transformer stages are independent given the shards (one after the other here, all threads each).
$M train --stage sr --config configs/sr-shapes.json --tokenizer "$RUNS/tok/final" --shards "$RUNS/shards" \
    --out "$RUNS/sr" --threads "$THREADS"
$M train --stage base --config configs/base-shapes-patch.json --tokenizer "$RUNS/tok/final" --shards "$RUNS/shards" \
    --out "$RUNS/base-patch" --threads "$THREADS"
# Version 3: continue the base from version 2's weights (fresh optimizer, lower peak lr, EMA, another data order).
$M train --stage base --config configs/base-shapes-patch-continue.json --init-from "$RUNS/base-patch/final" \
    --tokenizer "$RUNS/tok/final" --shards "$RUNS/shards" --out "$RUNS/base-patch2" --threads "$THREADS"
# Version 4: continue again, predicting a 128-code subset of the codebook, object tokens weighted 3x.
$M train --stage base --config configs/base-shapes-patch-codes.json --init-from "$RUNS/base-patch2/final" \
    --tokenizer "$RUNS/tok/final" --shards "$RUNS/shards" --out "$RUNS/base-codes" --threads "$THREADS"
# Version 5: a tokenizer of the base stage's own (each 4x4 patch coded alone), its shards, and the base on them,
# starting from version 4's body (init_partial), then continued once.
$M train-tokenizer --config configs/tokenizer-shapes-base.json --out "$RUNS/tok-base" --threads "$THREADS"
$M encode-shards --tokenizer "$RUNS/tok-base/final" --out "$RUNS/shards-base" --num 20000 --threads "$THREADS"
$M train --stage base --config configs/base-shapes-local.json --init-from "$RUNS/base-codes/final" \
    --tokenizer "$RUNS/tok-base/final" --shards "$RUNS/shards-base" --out "$RUNS/base-local" --threads "$THREADS"
$M train --stage base --config configs/base-shapes-local-continue.json --init-from "$RUNS/base-local/final" \
    --tokenizer "$RUNS/tok-base/final" --shards "$RUNS/shards-base" --out "$RUNS/base-local2" --threads "$THREADS"
# Version 6: the same scenes drawn exactly on their attributes (no colour, position, size or rotation noise), so each
# caption has one token pattern to learn; the base continues from version 5 on them, twice.
$M encode-shards --tokenizer "$RUNS/tok-base/final" --out "$RUNS/shards-clean" --num 20000 --jitter 0 \
    --threads "$THREADS"
$M train --stage base --config configs/base-shapes-exact.json --init-from "$RUNS/base-local2/final" \
    --tokenizer "$RUNS/tok-base/final" --shards "$RUNS/shards-clean" --out "$RUNS/base-exact" --threads "$THREADS"
$M train --stage base --config configs/base-shapes-exact-continue.json --init-from "$RUNS/base-exact/final" \
    --tokenizer "$RUNS/tok-base/final" --shards "$RUNS/shards-clean" --out "$RUNS/base-exact2" --threads "$THREADS"
# Version 7: the super-resolution stage on exact renders, conditioned on the base tokenizer's reconstructions (what
# it reads when sampling), then with the low-resolution tokens also added at the positions they cover.
$M encode-shards --tokenizer "$RUNS/tok/final" --lo-through "$RUNS/tok-base/final" --out "$RUNS/shards-sr-clean" \
    --num 20000 --jitter 0 --threads "$THREADS"
$M train --stage sr --config configs/sr-shapes-exact.json --init-from "$RUNS/sr/final" --tokenizer "$RUNS/tok/final" \
    --shards "$RUNS/shards-sr-clean" --out "$RUNS/sr-exact" --threads "$THREADS"
$M train --stage sr --config configs/sr-shapes-aligned.json --init-from "$RUNS/sr-exact/final" \
    --tokenizer "$RUNS/tok/final" --shards "$RUNS/shards-sr-clean" --out "$RUNS/sr-aligned" --threads "$THREADS"
$M build-pipeline --tokenizer "$RUNS/tok/final" --base-tokenizer "$RUNS/tok-base/final" \
    --base "$RUNS/base-exact2/final" --sr "$RUNS/sr-aligned/final" --out src/musekit/assets/default --fp16 \
    --steps 24 --sr-steps 4 --sr-strength 0.2 --guidance 2 --sr-guidance 1
