"""Evaluation on the dev split during hybrid training (`--eval_steps`), and the best model kept.

Every `eval_steps` steps and at the last one, the main process scores the model on the dev split (the
`dev_fraction` of the training articles held out, `data/splits.py`) with the toolkit's encoder and scorer, as
`hf-hybrid eval --split dev` would, and logs the settings' mAP and the bias means as one `eval_*` record of the step.
The trainable weights of the best evaluation by `--metric_for_best_model` are kept in `checkpoints/best/` (with
best.json: step, metric, score), so a resumed run knows them too; the final model saved is the best one, as
transformers' `load_best_model_at_end` does, and train_summary.json names its step and score.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from safetensors.torch import load_file, save_file

from hf_hybrid.config import Args, at_least
from hf_hybrid.data.benchmark import load_benchmark
from hf_hybrid.errors import ConfigError
from hf_hybrid.evaluation.retrieval import MAP_METRICS, evaluate_parallel, headline_metrics
from hf_hybrid.training.checkpoint import trainable_weights

EVAL_PREFIX = "eval_"  # of the metrics in train_log.jsonl
BEST_DIR = "best"  # under output_dir/checkpoints/
BEST_FILE = "best.json"


@dataclass
class DevEvalArgs(Args):
    """Evaluation during training; mixed in with DataArgs, whose dev_fraction makes the dev split."""

    eval_steps: int = field(default=0, metadata={
        "help": "evaluate on the dev split (--dev_fraction of the training articles) every N steps and at the end; "
                "the final model saved is the best one by --metric_for_best_model (0: no evaluation)"})
    metric_for_best_model: str = field(default="multilingual_map", metadata={
        "help": f"the dev metric that picks the best model: {', '.join(MAP_METRICS)}"})

    def __post_init__(self):
        super().__post_init__()
        at_least(self, 0, "eval_steps")
        if self.metric_for_best_model not in MAP_METRICS:
            raise ConfigError(f"metric_for_best_model {self.metric_for_best_model!r} is not a dev metric "
                              f"(expected one of {', '.join(MAP_METRICS)})")
        if self.eval_steps and not getattr(self, "dev_fraction", 0.0):
            raise ConfigError(f"eval_steps {self.eval_steps} needs a dev split: give --dev_fraction too (e.g. 0.1, "
                              "the share of the training articles held out for evaluation)")


class DevEvaluation:
    """The `--eval_steps` evaluations of one run from step `start` (a resumed run's): `after_step(step)` from the
    loop's hook, `restore_best()` before the final save. `log` receives each evaluation's record."""

    def __init__(self, cfg, accelerator, model, output_dir: Path, log, start: int = 0):
        self.every, self.last, self.metric = cfg.eval_steps, cfg.max_steps, cfg.metric_for_best_model
        self.accelerator, self.model, self.log = accelerator, model, log
        self.folder = output_dir / "checkpoints" / BEST_DIR
        self.bench = load_benchmark(cfg.data, cfg.languages, "dev", cfg.n_folds, cfg.fold, cfg.dev_fraction)
        setting = MAP_METRICS[self.metric]
        if (setting == "monolingual" and self.bench.self_retrieval) or \
                (setting == "cross-lingual" and not self.bench.cross_lingual_pairs()):
            raise ConfigError(f"metric_for_best_model {self.metric}: the dev split of {cfg.data} has no {setting} "
                              f"setting (choose {' or '.join(m for m in MAP_METRICS if m != self.metric)})")
        self.best: dict | None = None  # step, metric, score
        self._start(start)

    def _start(self, step: int) -> None:
        """A fresh run forgets an earlier run's best; a resumed one keeps the best of the steps it resumes after."""
        saved = json.loads((self.folder / BEST_FILE).read_text()) if (self.folder / BEST_FILE).is_file() else None
        if step and saved and saved["step"] <= step and saved["metric"] == self.metric:
            self.best = saved
        elif self.accelerator.is_main_process:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.accelerator.wait_for_everyone()

    def after_step(self, step: int) -> None:
        if step % self.every and step != self.last:
            return
        if self.accelerator.is_main_process:
            encoder = self.accelerator.unwrap_model(self.model)
            metrics = headline_metrics(evaluate_parallel(encoder, self.bench, progress=False))
            self.log({"step": step, **{EVAL_PREFIX + name: value for name, value in metrics.items()}})
            score = metrics[self.metric]
            if self.best is None or score > self.best["score"]:
                self._keep(encoder, {"step": step, "metric": self.metric, "score": score})
        self.accelerator.wait_for_everyone()

    def _keep(self, encoder, best: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        save_file(trainable_weights(encoder), str(self.folder / "trainable.safetensors"))
        (self.folder / BEST_FILE).write_text(json.dumps(best) + "\n")
        self.best = best

    def restore_best(self) -> dict:
        """Put the best evaluation's weights back into the model (main process); returns what train_summary.json
        records about it."""
        if self.best is None:
            return {}
        encoder = self.accelerator.unwrap_model(self.model)
        encoder.load_state_dict(load_file(str(self.folder / "trainable.safetensors")), strict=False)
        return {"best_step": self.best["step"], "best_metric": self.best["metric"], "best_score": self.best["score"]}
