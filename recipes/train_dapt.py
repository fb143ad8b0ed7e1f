"""Domain-adaptive pretraining: one LoRA adapter per language, trained as a masked LM.

    accelerate launch recipes/train_dapt.py --config recipes/dapt/masakhanews.yaml [--option value ...]
"""

import sys

from hf_hybrid.cli import dapt_command

if __name__ == "__main__":
    sys.exit(dapt_command(sys.argv[1:]))
