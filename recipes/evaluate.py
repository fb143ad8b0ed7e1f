"""Evaluate a model on a parallel retrieval benchmark (monolingual, cross-lingual, multilingual).

    python recipes/evaluate.py --model outputs/demo --data demo --output_dir outputs/demo/eval
"""

import sys

from hf_hybrid.cli import eval_command

if __name__ == "__main__":
    sys.exit(eval_command(sys.argv[1:]))
