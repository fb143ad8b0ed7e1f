#!/usr/bin/env bash
# Create .venv with a CPU build of PyTorch and hf-hybrid (editable) with its test, faiss and Space extras.
# On a GPU machine, install the torch build you need first, or skip the pin: TORCH_SPEC=torch bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e ".[test,faiss,space,tensorboard]"
echo "ready: $(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
