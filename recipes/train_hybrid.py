"""Hybrid-batch fine-tuning of a multilingual encoder.

    accelerate launch recipes/train_hybrid.py --config recipes/hybrid/demo.yaml [--option value ...]
"""

import sys

from hf_hybrid.cli import train_command

if __name__ == "__main__":
    sys.exit(train_command(sys.argv[1:]))
