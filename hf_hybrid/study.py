"""Arms side by side on a k-fold split by article, resumable: an arm whose results exist is not run again.

Every arm trains with the same steps, seed and settings on the training articles of a fold and is evaluated on
that fold's test articles (or on a dev split of the training articles, for choosing settings); scores are averaged
over folds. With `flores`, every arm is also evaluated on the FLORES low-resource benchmark: on SIB-200's `train`
sentences when choosing (`eval_split: dev`), on its `dev` + `test` sentences for final numbers.

Arm names (`parse_arm`): `base`; a sampler (`hybrid`, `x-x`, ...) fine-tuned from the base; `dapt-merge` /
`dapt-route` (the --adapters merged into the base / routed by language) and `dapt-anchored-merge` /
`dapt-anchored-route` (the --anchored_adapters), alone or `+<sampler>` fine-tuned; a sampler may add `+anchor`
(the --anchor_text loss at --anchor_weight, or at W for `+anchor=W`; `+anchor-LANG`: only LANG's replay texts held
in place, --anchor_pivot LANG), `+relation` (the relational anchor on the same replay texts, at
--relation_weight or W; `+relation-unseen`, `+relation-mined`: with --relation_pairs unseen, mined;
`+relation[-mined]-LANG`: every relational pair with LANG on one side, --relation_pivot LANG) and `+mlm`
(the --mlm_text loss at --mlm_weight, or `+mlm=W`).
A fine-tuned arm may end in `@W`: its model interpolated with the fine-tuning's starting model at weight W
(`hf-hybrid interpolate`), and in `#SEED`: trained with another seed. `--interpolate 0.5 0.7` adds `arm@0.5`,
`arm@0.7` for every fine-tuned arm. With `--models_dir`, trained models are kept there and reused, so a dev study
and a test study train once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hf_hybrid.config import at_least, parse_config
from hf_hybrid.errors import ConfigError, UnknownLanguageError
from hf_hybrid.evaluation.run import EvalConfig, run_evaluation
from hf_hybrid.languages import normalize_lang
from hf_hybrid.models.encoder import Encoder
from hf_hybrid.sampling import SAMPLERS
from hf_hybrid.study_report import (
    intervals,
    study_figures,
    study_markdown,
    summarize,
    summarize_flores,
    target_check,
)
from hf_hybrid.tables import mean_over_folds
from hf_hybrid.training.auxiliary import RELATION_PAIRS
from hf_hybrid.training.dapt import DaptConfig, train_dapt
from hf_hybrid.training.hybrid import HybridTrainingConfig, train

logger = logging.getLogger(__name__)
FLORES_SPLITS = {"dev": ["train"], "test": ["dev", "test"], "all": ["train", "dev", "test"]}


@dataclass(frozen=True)
class Arm:
    name: str
    composition: str = "none"  # none, merge, route
    adapters: str | None = None  # None, "plain" (--adapters) or "anchored" (--anchored_adapters)
    sampler: str | None = None  # None: not fine-tuned
    anchor: bool = False
    mlm: bool = False
    relation: bool = False
    anchor_weight: float | None = None  # +anchor=W; None: the study's --anchor_weight
    anchor_pivot: str | None = None  # LANG for +anchor-LANG; None: the study's --anchor_pivot
    relation_weight: float | None = None  # +relation=W; None: the study's --relation_weight
    relation_pairs: str | None = None  # PAIRS of +relation-PAIRS; None: the study's --relation_pairs
    relation_pivot: str | None = None  # LANG of +relation[-PAIRS]-LANG; None: the study's --relation_pivot
    mlm_weight: float | None = None  # +mlm=W; None: the study's --mlm_weight
    weight: float | None = None  # interpolation weight with the starting model
    seed: int | None = None

    @property
    def model_key(self) -> str:
        """The trained model this arm evaluates (arms that differ only by interpolation weight share it)."""
        return re.sub(r"@[^#]*", "", self.name)


LOSSES_HELP = "[+anchor[-LANG][=W]][+relation[-unseen|-mined][-LANG][=W]][+mlm[=W]]"
ARM_HELP = (f"base, <sampler>{LOSSES_HELP}, dapt[-anchored]-(merge|route)[+<sampler>{LOSSES_HELP}], each "
            f"fine-tuned arm optionally followed by @W (interpolation weight in [0, 1]) and #SEED; samplers: "
            f"{', '.join(SAMPLERS)}")


def parse_arm(name: str) -> Arm:
    """An arm name -> what it trains and evaluates; a name that does not parse is one error naming the grammar."""
    def bad(why: str) -> ConfigError:
        return ConfigError(f"unknown arm {name!r}: {why} (expected {ARM_HELP})")

    body, _, seed = name.partition("#")
    body, _, weight = body.partition("@")
    parts = body.split("+")
    head, rest = parts[0], parts[1:]
    arm: dict = {"name": name}
    if head == "base":
        if rest:
            raise bad("base is the starting model, it takes no +")
    elif head in SAMPLERS:
        arm["sampler"], rest = head, rest
    else:
        match = re.fullmatch(r"dapt(-anchored)?-(merge|route)", head)
        if not match:
            raise bad(f"{head!r} is neither base, a sampler nor dapt[-anchored]-(merge|route)")
        arm.update(composition=match[2], adapters="anchored" if match[1] else "plain")
        if rest:
            if rest[0] not in SAMPLERS:
                raise bad(f"{rest[0]!r} is not a sampler")
            arm["sampler"], rest = rest[0], rest[1:]
    _losses(arm, rest, bad)
    _suffixes(arm, weight, seed, bad)
    return Arm(**arm)


def _losses(arm: dict, parts: list[str], bad) -> None:
    """An arm's +anchor[-LANG][=W], +relation[-unseen|-mined][-LANG][=W] and +mlm[=W], into `arm`."""
    losses = [part.partition("=") for part in parts]
    names = {re.sub(r"^(anchor|relation)(-[A-Za-z_]+)+$", lambda m: m[1], name) for name, _, _ in losses}
    if len(names) != len(losses) or not names <= {"anchor", "relation", "mlm"}:
        raise bad(f"after the sampler come the losses {LOSSES_HELP}, each at most once, got "
                  f"{'+'.join(parts)!r}")
    for loss, has_value, value in losses:
        loss, *options = loss.split("-")
        if loss == "relation" and options and options[0] in RELATION_PAIRS:
            arm["relation_pairs"] = options.pop(0)
        if len(options) > 1:
            raise bad(f"{loss} takes {'[-unseen|-mined]' if loss == 'relation' else ''}[-LANG], got "
                      f"{'-'.join([loss, *options])!r}")
        if options:
            try:  # canonical, as the training config records it, so a reused model's settings compare equal
                arm[f"{loss}_pivot"] = normalize_lang(options[0])
            except UnknownLanguageError as err:
                raise bad(f"{loss} pivot: {err}") from None
        arm[loss] = True
        if has_value:
            try:
                arm[f"{loss}_weight"] = float(value)
            except ValueError:
                raise bad(f"{loss} weight {value!r} is not a number") from None
            if arm[f"{loss}_weight"] < 0:
                raise bad(f"{loss} weight must be at least 0, got {value}")


def _suffixes(arm: dict, weight: str, seed: str, bad) -> None:
    """An arm's @W (interpolation weight) and #SEED, into `arm`."""
    for text, key, convert in ((weight, "weight", float), (seed, "seed", int)):
        if not text:
            continue
        if not arm.get("sampler"):
            raise bad("only a fine-tuned arm takes @ or #")
        try:
            arm[key] = convert(text)
        except ValueError:
            raise bad(f"{text!r} is not {'a number' if key == 'weight' else 'a whole number'}") from None
    if arm.get("weight") is not None:
        if not 0.0 <= arm["weight"] <= 1.0:
            raise bad(f"the interpolation weight must be in [0, 1], got {arm['weight']}")
        if arm.get("composition") == "route":
            raise bad("a routed arm has no single model to interpolate")


@dataclass
class StudyConfig(HybridTrainingConfig):
    arms: list[str] = field(default_factory=lambda: ["base", "x-x", "x-y", "hybrid"], metadata={"help": ARM_HELP})
    folds: list[int] = field(default_factory=lambda: [0, 1], metadata={"help": "the test folds to run (of n_folds)"})
    eval_split: str = field(default="test", metadata={
        "help": "test (final numbers), or dev to choose settings (XQuAD-R dev articles, SIB-200 train)"})
    interpolate: list[float] | None = field(default=None, metadata={
        "help": "also evaluate every fine-tuned arm interpolated with its starting model at these weights"})
    eval_batch_size: int = field(default=128, metadata={"help": "texts per encoding batch in evaluation"})
    keep_models: bool = field(default=False, metadata={"help": "keep each arm's trained model"})
    models_dir: str | None = field(default=None, metadata={
        "help": "keep trained models here and reuse them (a dev study and a test study then train once)"})
    flores: str | None = field(default=None, metadata={"help": "also evaluate every arm on this SIB-200 folder"})
    flores_languages: list[str] | None = field(default=None, metadata={
        "help": "FLORES languages (default: the MasakhaNEWS low-resource set and high-resource ones)"})
    dapt_config: str | None = field(default=None, metadata={
        "help": "a `hf-hybrid dapt` YAML: run it first, into `adapters`, unless that folder has adapters already"})
    anchored_adapters: str | None = field(default=None, metadata={
        "help": "the dapt-anchored-* arms' adapters (a `hf-hybrid dapt --anchor_weight W` output folder)"})
    anchored_dapt_config: str | None = field(default=None, metadata={
        "help": "a `hf-hybrid dapt` YAML with anchor_weight: run it first, into `anchored_adapters`"})

    def __post_init__(self):
        super().__post_init__()
        at_least(self, 1, "eval_batch_size")
        if self.eval_split not in FLORES_SPLITS:
            raise ConfigError(f"eval_split must be test, dev or all, got {self.eval_split!r}")
        if self.eval_split == "dev" and not self.dev_fraction:
            raise ConfigError("eval_split dev needs --dev_fraction (the share of the training articles held out)")
        for weight in self.interpolate or []:
            if not 0.0 <= weight <= 1.0:
                raise ConfigError(f"interpolate: weights must be in [0, 1], got {weight}")
        arms = [parse_arm(arm) for arm in self.arms]
        for kind, source, config in (("plain", self.adapters, self.dapt_config),
                                     ("anchored", self.anchored_adapters, self.anchored_dapt_config)):
            if any(arm.adapters == kind for arm in arms) and not (source or config):
                flag = "adapters" if kind == "plain" else "anchored_adapters"
                raise ConfigError(f"the dapt-{'anchored-' if kind == 'anchored' else ''}* arms need --{flag} (a "
                                  f"`hf-hybrid dapt` output folder) or --{'anchored_' if kind == 'anchored' else ''}"
                                  "dapt_config")
        if any(arm.anchor or arm.relation for arm in arms) and not self.anchor_text:
            raise ConfigError("the +anchor and +relation arms need --anchor_text (their replay texts)")
        if any(arm.mlm for arm in arms) and not self.mlm_text:
            raise ConfigError("the +mlm arms need --mlm_text and --mlm_weight")

    def all_arms(self) -> list[Arm]:
        """The arms, each fine-tuned one followed by its --interpolate variants."""
        arms = []
        for arm in map(parse_arm, self.arms):
            arms.append(arm)
            if arm.sampler and arm.weight is None:
                body, hash_, seed = arm.name.partition("#")
                arms += [parse_arm(f"{body}@{w:g}{hash_}{seed}") for w in self.interpolate or []]
        return list({arm.name: arm for arm in arms}.values())


class StudyRun:
    """One study: its config, where its models live, and the arms' results fold by fold."""

    def __init__(self, cfg: StudyConfig):
        self.cfg, self.root = cfg, Path(cfg.output_dir)

    def adapters(self, arm: Arm) -> str | None:
        return {"plain": self.cfg.adapters, "anchored": self.cfg.anchored_adapters}.get(arm.adapters)

    def model_dir(self, fold: int, arm: Arm) -> Path:
        if self.cfg.models_dir:
            return Path(self.cfg.models_dir) / f"fold{fold}" / arm.model_key
        return self.root / f"fold{fold}" / arm.model_key / "model"

    def training_values(self, fold: int, arm: Arm) -> dict:
        """The HybridTrainingConfig values of an arm's fine-tuning (without where it is written)."""
        cfg = self.cfg
        values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(HybridTrainingConfig)}
        # arms are pushed, if at all, one by one with `hf-hybrid push`
        values.update(sampler=arm.sampler, fold=fold, push_to_hub=None, composition=arm.composition,
                      adapters=self.adapters(arm),
                      anchor_weight=(cfg.anchor_weight if arm.anchor_weight is None else arm.anchor_weight)
                      if arm.anchor else 0.0, anchor_pivot=[arm.anchor_pivot] if arm.anchor_pivot else
                      cfg.anchor_pivot if arm.anchor else None,
                      mlm_weight=(cfg.mlm_weight if arm.mlm_weight is None else arm.mlm_weight) if arm.mlm else 0.0,
                      relation_weight=(cfg.relation_weight if arm.relation_weight is None else arm.relation_weight)
                      if arm.relation else 0.0, relation_pairs=arm.relation_pairs or cfg.relation_pairs,
                      relation_pivot=[arm.relation_pivot] if arm.relation_pivot else cfg.relation_pivot,
                      seed=cfg.seed if arm.seed is None else arm.seed)
        # the settings of a loss that is off change nothing: left out (the relational anchor uses the anchor's texts)
        for loss, used in (("anchor", arm.anchor or arm.relation), ("relation", arm.relation), ("mlm", arm.mlm)):
            if not used:
                values = {k: v for k, v in values.items() if not k.startswith(f"{loss}_") or k == f"{loss}_weight"}
        return values

    def trained(self, fold: int, arm: Arm) -> Path:
        """The arm's fine-tuned model: reused when a finished one exists (trained with the same settings), else
        trained (resuming its checkpoints)."""
        out = self.model_dir(fold, arm)
        values = self.training_values(fold, arm)
        if (out / "train_summary.json").is_file():
            _check_same(yaml.safe_load((out / "training_config.yaml").read_text()), values, out, "models_dir")
            return out
        resume = (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir())
        return train(HybridTrainingConfig(**{**values, "output_dir": str(out), "resume": resume}))

    def start_model(self, arm: Arm) -> str:
        """The model fine-tuning started from: the base, or the base with the DAPT adapters merged (saved once)."""
        if arm.composition == "none":
            return self.cfg.model
        out = (Path(self.cfg.models_dir) if self.cfg.models_dir else self.root) / f"start-{arm.adapters}-merge"
        if not (out / "config.json").is_file():
            encoder = Encoder.from_pretrained(self.cfg.model)
            EvalConfig(model=self.cfg.model, composition="merge", adapters=self.adapters(arm)).compose(encoder)
            encoder.save_pretrained(out)
        return str(out)

    def model(self, fold: int, arm: Arm, arm_dir: Path) -> tuple[str, str]:
        """The model an arm evaluates and the composition to evaluate it with."""
        if not arm.sampler:
            return self.cfg.model, arm.composition
        tuned = self.trained(fold, arm)
        if arm.weight is None:
            return str(tuned), "none"  # a merged model is plain; a routed one brings its adapters
        from hf_hybrid.models.interpolate import interpolate  # loads transformers' models

        out = arm_dir / "interpolated"
        shutil.rmtree(out, ignore_errors=True)
        return str(interpolate(self.start_model(arm), str(tuned), arm.weight, out)), "none"

    def evaluate(self, fold: int, arm: Arm, earlier_flores: dict | None) -> tuple[dict, dict | None]:
        """The arm's XQuAD-R and FLORES summaries on this fold, from its results files if they exist."""
        cfg, arm_dir = self.cfg, self.root / f"fold{fold}" / arm.name
        flores_dir = arm_dir / "flores"
        need_flores = cfg.flores and not (not arm.sampler and earlier_flores)  # an untrained arm: same every fold
        done = (arm_dir / SETTINGS_FILE).is_file() and (arm_dir / "per_query.json").is_file() and \
            (not need_flores or (flores_dir / "per_query.json").is_file())
        settings = self.training_values(fold, arm) if arm.sampler else {"model": cfg.model, "arm": arm.name}
        if done:
            _check_same(json.loads((arm_dir / SETTINGS_FILE).read_text()), settings, arm_dir, "output_dir")
            logger.info("fold %d %s: results exist, not run again", fold, arm.name)
            results = json.loads((arm_dir / "results.json").read_text())
            flores = json.loads((flores_dir / "results.json").read_text()) if need_flores else None
        else:
            model, composition = self.model(fold, arm, arm_dir)
            common = dict(model=model, batch_size=cfg.eval_batch_size, composition=composition,
                          adapters=self.adapters(arm) if composition != "none" else None,
                          adapter_languages=cfg.adapter_languages, adapter_weights=cfg.adapter_weights, per_query=True)
            results = run_evaluation(EvalConfig(
                data=cfg.data, languages=cfg.languages, split=cfg.eval_split, n_folds=cfg.n_folds, fold=fold,
                dev_fraction=cfg.dev_fraction, output_dir=str(arm_dir), **common))
            flores = run_evaluation(EvalConfig(
                data=cfg.flores, languages=cfg.flores_languages, flores_splits=FLORES_SPLITS[cfg.eval_split],
                output_dir=str(flores_dir), **common)) if need_flores else None
            shutil.rmtree(arm_dir / "interpolated", ignore_errors=True)
            recorded = {k: v for k, v in settings.items() if k not in UNRECORDED}
            (arm_dir / SETTINGS_FILE).write_text(json.dumps(recorded, indent=2) + "\n")
        return summarize(results), summarize_flores(flores) if flores else earlier_flores

    def run(self) -> dict:
        cfg = self.cfg
        _run_dapt(cfg)
        arms = cfg.all_arms()
        per_fold: dict[str, list[dict]] = {arm.name: [] for arm in arms}
        flores_per_fold: dict[str, list[dict]] = {arm.name: [] for arm in arms}
        for fold in cfg.folds:
            for arm in arms:
                earlier = flores_per_fold[arm.name][0] if flores_per_fold[arm.name] else None
                summary, flores = self.evaluate(fold, arm, earlier)
                per_fold[arm.name].append(summary)
                if flores is not None:
                    flores_per_fold[arm.name].append(flores)
            if not cfg.keep_models and not cfg.models_dir:
                for arm in arms:
                    if arm.sampler:
                        shutil.rmtree(self.model_dir(fold, arm), ignore_errors=True)
        study = {"config": dataclasses.asdict(cfg), "command": _command(), "eval_split": cfg.eval_split,
                 "per_fold": per_fold, "mean_over_folds": {a: mean_over_folds(r) for a, r in per_fold.items()},
                 "n_languages": per_fold[arms[0].name][0]["n_languages"]}
        if cfg.flores:
            study["flores_per_fold"] = flores_per_fold
            study["flores_mean_over_folds"] = {arm: mean_over_folds(rows) for arm, rows in flores_per_fold.items()}
        if "base" in per_fold:
            study["target"] = target_check(study["mean_over_folds"], study.get("flores_mean_over_folds"))
        study["intervals"] = intervals(self.root, [arm.name for arm in arms], cfg.folds, bool(cfg.flores))
        for kind, source in (("dapt", cfg.adapters), ("anchored_dapt", cfg.anchored_adapters)):
            results = Path(source or "") / "dapt_results.json"
            if source and results.is_file():
                study[kind] = json.loads(results.read_text())
        self.root.mkdir(parents=True, exist_ok=True)
        study["figures"] = study_figures(study, self.root)
        (self.root / "study.json").write_text(json.dumps(study, indent=2) + "\n")
        (self.root / "study.md").write_text(study_markdown(study) + "\n")
        return study


UNRECORDED = ("output_dir", "resume", "save_steps", "save_total_limit", "logging_steps", "num_workers",
              "log_batches")  # how a run is written, not what it learns
SETTINGS_FILE = "arm_settings.json"
# what a setting newer than a saved record meant before it existed: runs trained on padded chunks before --packing
BEFORE_IT_EXISTED = {"packing": False}


def _check_same(saved: dict, values: dict, folder: Path, option: str) -> None:
    """Results or a model are reused only if they were made with these settings (a setting newer than them
    counts as what it meant before it existed, else as its default)."""
    defaults = {f.name: f.default for f in dataclasses.fields(HybridTrainingConfig)} | BEFORE_IT_EXISTED
    differ = [key for key in values if key not in UNRECORDED and saved.get(key, defaults.get(key)) != values[key]]
    if differ:
        key = differ[0]
        raise ConfigError(f"{folder} was made with other settings ({key}: {saved.get(key)!r}, now {values[key]!r}): "
                          f"give another --{option}, or delete it to run the arm again")


def run_study(cfg: StudyConfig) -> dict:
    return StudyRun(cfg).run()


def _run_dapt(cfg: StudyConfig) -> None:
    """The DAPT runs the config names, into their adapter folders, unless those hold adapters already."""
    for config, attr in ((cfg.dapt_config, "adapters"), (cfg.anchored_dapt_config, "anchored_adapters")):
        if not config:
            continue
        dapt = parse_config(DaptConfig, ["--config", config])
        setattr(cfg, attr, getattr(cfg, attr) or dapt.output_dir)
        # languages whose adapter exists are kept, so an interrupted DAPT run goes on where it stopped
        dapt.output_dir, dapt.model, dapt.resume = getattr(cfg, attr), cfg.model, True
        train_dapt(dapt)


def _command() -> str:
    return " ".join(shlex.quote(a) for a in ["python", *sys.argv])
