"""Arms side by side on a k-fold split by article: base, and one fine-tuning run per sampler.

Every arm trains with the same steps, seed and settings on the training articles of a fold and
is evaluated on that fold's test articles (or on a dev split of the training articles, for
choosing settings); scores are averaged over folds.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from hf_hybrid.evaluation.retrieval import SETTINGS
from hf_hybrid.evaluation.run import EvalConfig, run_evaluation
from hf_hybrid.training.hybrid import HybridTrainingConfig, train


@dataclass
class StudyConfig(HybridTrainingConfig):
    arms: list[str] = field(default_factory=lambda: ["base", "x-x", "x-y", "hybrid"],
                            metadata={"help": "'base' (no training) and sampler names"})
    folds: list[int] = field(default_factory=lambda: [0, 1])
    eval_split: str = field(default="test", metadata={"help": "test, or dev to choose settings"})
    eval_batch_size: int = 128
    keep_models: bool = field(default=False, metadata={"help": "keep each arm's trained model"})


def summarize(results: dict) -> dict:
    out = {s: results[s]["average"]["map"] for s in SETTINGS if s in results}
    if "multilingual" in results:
        out["same_language_share"] = results["multilingual"]["bias"]["same_language_share_mean"]
    return out


def run_study(cfg: StudyConfig) -> dict:
    root = Path(cfg.output_dir)
    per_fold: dict[str, list[dict]] = {arm: [] for arm in cfg.arms}
    for fold in cfg.folds:
        for arm in cfg.arms:
            arm_dir = root / f"fold{fold}" / arm
            model = cfg.model
            if arm != "base":
                train_cfg = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(HybridTrainingConfig)}
                # arms are pushed, if at all, one by one with `hf-hybrid push`
                train_cfg.update(sampler=arm, fold=fold, output_dir=str(arm_dir / "model"), push_to_hub=None)
                model = str(train(HybridTrainingConfig(**train_cfg)))
            results = run_evaluation(EvalConfig(
                model=model, data=cfg.data, languages=cfg.languages, split=cfg.eval_split, n_folds=cfg.n_folds,
                fold=fold, dev_fraction=cfg.dev_fraction, batch_size=cfg.eval_batch_size, output_dir=str(arm_dir)))
            per_fold[arm].append(summarize(results))
            if arm != "base" and not cfg.keep_models:
                shutil.rmtree(arm_dir / "model", ignore_errors=True)
    table = {arm: {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]} for arm, rows in per_fold.items()}
    study = {"config": dataclasses.asdict(cfg), "n_languages": len(results["languages"]), "per_fold": per_fold,
             "mean_over_folds": table}
    root.mkdir(parents=True, exist_ok=True)
    (root / "study.json").write_text(json.dumps(study, indent=2) + "\n")
    (root / "study.md").write_text(study_table(table, study["n_languages"]) + "\n")
    return study


def study_table(table: dict, n_languages: int) -> str:
    lines = [f"| arm | monolingual mAP | cross-lingual mAP | multilingual mAP | same-language share of top-{n_languages} |",
             "|---|---|---|---|---|"]
    for arm, m in table.items():
        lines.append(f"| {arm} | {m.get('monolingual', float('nan')):.3f} | {m.get('cross-lingual', float('nan')):.3f} | "
                     f"{m.get('multilingual', float('nan')):.3f} | {m.get('same_language_share', float('nan')):.2f} |")
    return "\n".join(lines)
