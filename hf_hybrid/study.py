"""Arms side by side on a k-fold split by article: base, fine-tuning runs per sampler, and DAPT
language adapters composed with them.

Every arm trains with the same steps, seed and settings on the training articles of a fold and
is evaluated on that fold's test articles (or on a dev split of the training articles, for
choosing settings); scores are averaged over folds. With `flores`, every arm is also evaluated on
the FLORES low-resource benchmark (all its sentences: DAPT text never overlaps them).

Arms: `base`; a sampler name (`hybrid`, `x-x`, ...): fine-tuned from the base; `dapt-merge` /
`dapt-route`: the base with the DAPT adapters merged into it / routed by language, not fine-tuned;
`dapt-merge+<sampler>` / `dapt-route+<sampler>`: those, then fine-tuned.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from hf_hybrid.config import at_least, parse_config
from hf_hybrid.data.parallel_qa import FLORES_LOW_RESOURCE
from hf_hybrid.errors import ConfigError
from hf_hybrid.evaluation.retrieval import SETTINGS
from hf_hybrid.evaluation.run import EvalConfig, run_evaluation
from hf_hybrid.languages import normalize_lang
from hf_hybrid.models.adapters import available_adapters
from hf_hybrid.sampling import SAMPLERS
from hf_hybrid.tables import markdown_table, mean_over_folds
from hf_hybrid.training.dapt import DaptConfig, dapt_table, train_dapt
from hf_hybrid.training.hybrid import HybridTrainingConfig, train


def parse_arm(arm: str) -> tuple[str, str | None]:
    """An arm name -> (composition of the DAPT adapters, sampler or None for no fine-tuning)."""
    if arm == "base":
        return "none", None
    if arm in SAMPLERS:
        return "none", arm
    match = re.fullmatch(r"dapt-(merge|route)(?:\+(.+))?", arm)
    if match and (match[2] is None or match[2] in SAMPLERS):
        return match[1], match[2]
    raise ConfigError(f"unknown arm {arm!r} (expected base, a sampler ({', '.join(SAMPLERS)}), dapt-merge, "
                     "dapt-route, or dapt-merge+<sampler> / dapt-route+<sampler>)")


@dataclass
class StudyConfig(HybridTrainingConfig):
    arms: list[str] = field(default_factory=lambda: ["base", "x-x", "x-y", "hybrid"],
                            metadata={"help": "base, sampler names, dapt-merge[+sampler], dapt-route[+sampler]"})
    folds: list[int] = field(default_factory=lambda: [0, 1], metadata={"help": "the test folds to run (of n_folds)"})
    eval_split: str = field(default="test", metadata={"help": "test, or dev to choose settings"})
    eval_batch_size: int = field(default=128, metadata={"help": "texts per encoding batch in evaluation"})
    keep_models: bool = field(default=False, metadata={"help": "keep each arm's trained model"})
    flores: str | None = field(default=None, metadata={"help": "also evaluate every arm on this SIB-200 folder"})
    flores_languages: list[str] | None = field(default=None, metadata={
        "help": "FLORES languages (default: the MasakhaNEWS low-resource set and high-resource ones)"})
    dapt_config: str | None = field(default=None, metadata={
        "help": "a `hf-hybrid dapt` YAML: run it first, into `adapters`, unless that folder has adapters already"})

    def __post_init__(self):
        super().__post_init__()
        at_least(self, 1, "eval_batch_size")
        compositions = [parse_arm(arm)[0] for arm in self.arms]
        if any(c != "none" for c in compositions) and not (self.adapters or self.dapt_config):
            raise ConfigError("the dapt-* arms need --adapters (a `hf-hybrid dapt` output folder) or --dapt_config")


def summarize(results: dict) -> dict:
    out = {s: results[s]["average"]["map"] for s in SETTINGS if s in results}
    if "multilingual" in results:
        out["same_language_share"] = results["multilingual"]["bias"]["same_language_share_mean"]
    return out


LOW_RESOURCE = {normalize_lang(lang) for lang in FLORES_LOW_RESOURCE}
FLORES_KEYS = ("x-en", "en-x", "multilingual")  # X->pivot, pivot->X, the multilingual pool


def summarize_flores(results: dict, pivot: str = "en") -> dict:
    """mAP per language other than the pivot (X->en, en->X, multilingual pool) and the averages of the
    low-resource and high-resource languages."""
    per_language = {}
    for lang in results["languages"]:
        if lang == pivot:
            continue
        per_language[lang] = {
            "x-en": results["cross-lingual"]["per_setting"][f"{lang}-{pivot}"]["map"],
            "en-x": results["cross-lingual"]["per_setting"][f"{pivot}-{lang}"]["map"],
            "multilingual": results["multilingual"]["per_setting"][lang]["map"]}
    out = {"per_language": per_language}
    for group, members in (("low", [lang for lang in per_language if lang in LOW_RESOURCE]),
                           ("high", [lang for lang in per_language if lang not in LOW_RESOURCE])):
        for key in FLORES_KEYS:
            if members:
                out[f"{group}_{key}"] = sum(per_language[lang][key] for lang in members) / len(members)
    return out


def run_study(cfg: StudyConfig) -> dict:
    root = Path(cfg.output_dir)
    if cfg.dapt_config:
        _run_dapt(cfg)
    per_fold: dict[str, list[dict]] = {arm: [] for arm in cfg.arms}
    flores_per_fold: dict[str, list[dict]] = {arm: [] for arm in cfg.arms}
    for fold in cfg.folds:
        for arm in cfg.arms:
            composition, sampler = parse_arm(arm)
            arm_dir = root / f"fold{fold}" / arm
            model, eval_composition = cfg.model, composition
            if sampler:
                train_cfg = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(HybridTrainingConfig)}
                # arms are pushed, if at all, one by one with `hf-hybrid push`
                train_cfg.update(sampler=sampler, fold=fold, output_dir=str(arm_dir / "model"), push_to_hub=None,
                                 composition=composition)
                model = str(train(HybridTrainingConfig(**train_cfg)))
                eval_composition = "none"  # a merged model is plain; a routed one brings its adapters
            common = dict(model=model, batch_size=cfg.eval_batch_size, composition=eval_composition,
                          adapters=cfg.adapters, adapter_languages=cfg.adapter_languages,
                          adapter_weights=cfg.adapter_weights)
            results = run_evaluation(EvalConfig(
                data=cfg.data, languages=cfg.languages, split=cfg.eval_split, n_folds=cfg.n_folds, fold=fold,
                dev_fraction=cfg.dev_fraction, output_dir=str(arm_dir), **common))
            per_fold[arm].append(summarize(results))
            if cfg.flores:
                if not sampler and flores_per_fold[arm]:  # an untrained arm is the same model in every fold
                    flores_per_fold[arm].append(flores_per_fold[arm][0])
                else:
                    flores = run_evaluation(EvalConfig(data=cfg.flores, languages=cfg.flores_languages,
                                                       output_dir=str(arm_dir / "flores"), **common))
                    flores_per_fold[arm].append(summarize_flores(flores))
            if sampler and not cfg.keep_models:
                shutil.rmtree(arm_dir / "model", ignore_errors=True)
    table = {arm: mean_over_folds(rows) for arm, rows in per_fold.items()}
    study = {"config": dataclasses.asdict(cfg), "command": _command(), "n_languages": len(results["languages"]),
             "per_fold": per_fold, "mean_over_folds": table}
    if cfg.flores:
        study["flores_per_fold"] = flores_per_fold
        study["flores_mean_over_folds"] = {arm: mean_over_folds(rows) for arm, rows in flores_per_fold.items()}
    dapt_results = Path(cfg.adapters or "") / "dapt_results.json"
    if cfg.adapters and dapt_results.is_file():
        study["dapt"] = json.loads(dapt_results.read_text())
    root.mkdir(parents=True, exist_ok=True)
    (root / "study.json").write_text(json.dumps(study, indent=2) + "\n")
    (root / "study.md").write_text(study_markdown(study) + "\n")
    return study


def _run_dapt(cfg: StudyConfig) -> None:
    dapt = parse_config(DaptConfig, ["--config", cfg.dapt_config])
    cfg.adapters = cfg.adapters or dapt.output_dir
    if Path(cfg.adapters).is_dir() and available_adapters(cfg.adapters):
        return
    dapt.output_dir, dapt.model = cfg.adapters, cfg.model
    train_dapt(dapt)


def _command() -> str:
    return " ".join(shlex.quote(a) for a in ["python", *sys.argv])


def study_markdown(study: dict) -> str:
    parts = [study_table(study["mean_over_folds"], study["n_languages"])]
    if "flores_mean_over_folds" in study:
        parts.append(flores_table(study["flores_mean_over_folds"]))
    if "dapt" in study:
        parts.append("DAPT adapters (held-out MLM loss on the adapter's language):\n\n" + dapt_table(study["dapt"]))
    parts.append(f"Rerun with:\n\n```bash\n{study['command']}\n```")
    return "\n\n".join(parts)


def flores_table(table: dict) -> str:
    """FLORES mAP per arm: the low- and high-resource averages, then X->en per language."""
    labels = {"x-en": "X->en", "en-x": "en->X", "multilingual": "multilingual"}
    groups = [(group, key) for group in ("low", "high") for key in FLORES_KEYS]
    averages = markdown_table(
        ["arm"] + [f"{group} {labels[key]}" for group, key in groups],
        [[arm] + [f"{m[f'{group}_{key}']:.3f}" if f"{group}_{key}" in m else "" for group, key in groups]
         for arm, m in table.items()])
    langs = list(next(iter(table.values()))["per_language"])
    per_language = markdown_table(["arm", *langs], [
        [arm] + [f"{m['per_language'][lang]['x-en']:.3f}" for lang in langs] for arm, m in table.items()])
    return "\n\n".join(["FLORES mAP, low-resource and high-resource averages (languages other than English):",
                        averages, "FLORES X->en mAP per language:", per_language])


def study_table(table: dict, n_languages: int) -> str:
    """Mean mAP per setting and the same-language share per arm (a missing value is nan)."""
    nan = float("nan")
    return markdown_table(
        ["arm"] + [f"{setting} mAP" for setting in SETTINGS] + [f"same-language share of top-{n_languages}"],
        [[arm] + [f"{m.get(setting, nan):.3f}" for setting in SETTINGS] + [f"{m.get('same_language_share', nan):.2f}"]
         for arm, m in table.items()])
