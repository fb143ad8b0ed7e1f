"""Experiment tracking through accelerate's trackers (`--report_to tensorboard|wandb`): every record of
train_log.jsonl (loss, learning rate, throughput; the `--eval_steps` metrics) also goes to the tracker, at its step.

TensorBoard writes its event files under output_dir/runs/, which `hf-hybrid push` uploads with the model, so the
Hub's training-metrics tab shows the curves. W&B logs to the project `hf-hybrid`, the run named after output_dir.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from accelerate.utils import is_tensorboard_available, is_wandb_available

from hf_hybrid.config import Args
from hf_hybrid.errors import ConfigError
from hf_hybrid.training.dev_eval import EVAL_PREFIX

RUNS_DIR = "runs"  # TensorBoard's folder under output_dir, as transformers' Trainer names it
WANDB_PROJECT = "hf-hybrid"
TRACKERS = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available}


@dataclass
class ReportArgs(Args):
    report_to: str = field(default="none", metadata={
        "help": f"also log the loss, learning rate, throughput and dev metrics to tensorboard "
                f"(output_dir/{RUNS_DIR}/) or wandb, through accelerate's trackers (none: only train_log.jsonl)"})

    def __post_init__(self):
        super().__post_init__()
        if self.report_to != "none" and self.report_to not in TRACKERS:
            raise ConfigError(f"report_to {self.report_to!r} is not a tracker (expected none, "
                              f"{', '.join(TRACKERS)})")
        if self.report_to in TRACKERS and not TRACKERS[self.report_to]():
            raise ConfigError(f"report_to {self.report_to}: {self.report_to} is not installed "
                              f"(pip install 'hf-hybrid[{self.report_to}]')")


def accelerator_kwargs(cfg: ReportArgs) -> dict:
    """What `Accelerator` needs to log to the chosen tracker (nothing for none)."""
    if cfg.report_to == "none":
        return {}
    return {"log_with": cfg.report_to, "project_dir": cfg.output_dir}


def start_trackers(accelerator, cfg) -> None:
    """Start the chosen tracker with the run's options as its hyperparameters."""
    if cfg.report_to == "none":
        return
    hparams = {key: ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else value
               for key, value in vars(cfg).items() if value is not None}
    if cfg.report_to == "tensorboard":
        accelerator.init_trackers(RUNS_DIR, config=hparams)
    else:
        accelerator.init_trackers(WANDB_PROJECT, config=hparams,
                                  init_kwargs={"wandb": {"name": Path(cfg.output_dir).name, "dir": cfg.output_dir}})


def tracker_values(record: dict) -> dict[str, float]:
    """A train_log.jsonl record as tracker scalars: `eval/<metric>` for evaluation metrics, `train/<name>` for the
    rest (loss, lr, throughput, the auxiliary losses)."""
    values = {}
    for key, value in record.items():
        if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        name = f"eval/{key[len(EVAL_PREFIX):]}" if key.startswith(EVAL_PREFIX) else f"train/{key}"
        values[name] = value
    return values


def tracked(accelerator, log: Callable[[dict], None]) -> Callable[[dict], None]:
    """`log`, then the same record to the accelerator's trackers (none started: nothing more)."""

    def log_both(record: dict) -> None:
        log(record)
        accelerator.log(tracker_values(record), step=record["step"])

    return log_both
