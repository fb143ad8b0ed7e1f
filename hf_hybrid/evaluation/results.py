"""The results a report reads: `results.json` files (written by `hf-hybrid eval`) and study folders
(a `study.json`, written by `hf_hybrid.study.run_study`), checked before use.

A study folder stands for one run per arm, each the mean over folds of that arm's
`fold<k>/<arm>/results.json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hf_hybrid.errors import ConfigError, DataError
from hf_hybrid.evaluation.retrieval import SETTINGS
from hf_hybrid.tables import mean_over_folds

# the measures of results["multilingual"]["bias"] that reports and cards show: (key, label, format)
BIAS_MEANS = (
    ("same_language_share_mean", "same-language share of the top-k (mean)", ".2f"),
    ("same_language_preference_mean", "same-language preference (mean; 1 = blind)", ".2f"),
    ("rank_distance_mean", "rank distance (mean)", ".1f"),
    ("rank_correlation_mean", "rank correlation (mean)", ".3f"),
)
BIAS_PER_LANGUAGE = (  # (key, title, format), each a dict by language
    ("mean_rank_by_candidate_language", "Mean rank of the relevant candidate, by candidate language", ".1f"),
    ("same_language_share", "Same-language share of the top-k, by query language", ".2f"),
    ("language_blind_share", "Language-blind share (the language's share of the pool)", ".2f"),
    ("same_language_preference", "Same-language preference (share / blind share), by query language", ".2f"),
    ("rank_distance", "Rank distance, by query language", ".1f"),
    ("rank_correlation", "Rank correlation, by query language", ".3f"),
)


@dataclass
class Run:
    name: str
    results: dict
    about: str  # where it comes from and what it is
    study_arm: bool = False
    folder: Path | None = None  # the folder of its results.json

    def training_folder(self) -> Path | None:
        """The folder of the training behind the run (its train_log.jsonl): the run's own folder, else the
        evaluated model's folder."""
        model = (self.results.get("config") or {}).get("model")
        for folder in (self.folder, Path(model) if isinstance(model, str) else None):
            if folder is not None and (folder / "train_log.jsonl").is_file():
                return folder
        return None


def load_runs(paths: list[Path], names: list[str] | None = None) -> list[Run]:
    """Runs from result folders and study folders, named by `names` or by their folders, made unique."""
    runs: list[Run] = []
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        if path.is_file():
            if path.name == "study.json":
                runs += _study_runs(path.parent)
            else:
                runs.append(Run(path.resolve().parent.name, _read_results(path), f"`{path}`", folder=path.parent))
        elif (path / "study.json").is_file():
            runs += _study_runs(path)
        elif (path / "results.json").is_file():
            runs.append(Run(path.resolve().name, _read_results(path / "results.json"), f"`{path / 'results.json'}`",
                            folder=path))
        else:
            raise FileNotFoundError(f"no results in {path} (expected results.json or study.json)")
    if names is not None:
        if len(names) != len(runs):
            raise ConfigError(f"--names gives {len(names)} name(s) for {len(runs)} run(s) "
                              f"({', '.join(run.name for run in runs)}; a study counts one run per arm)")
        if not all(n.strip() for n in names):
            raise ConfigError("--names: a run name is empty")
    for run, name in zip(runs, _unique(names if names is not None else [run.name for run in runs]), strict=True):
        run.name = name
    return runs


def _unique(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        candidate, i = name, 2
        while candidate in out:
            candidate, i = f"{name}-{i}", i + 1
        out.append(candidate)
    return out


def _read_json(path: Path, kind: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"malformed {kind} file {path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    except UnicodeDecodeError:
        raise DataError(f"malformed {kind} file {path}: not UTF-8 text") from None


def _read_results(path: Path) -> dict:
    results = _read_json(path, "results")
    problem = _problem(results)
    if problem:
        raise DataError(f"unsupported results file {path}: {problem}")
    return results


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _numbers(d) -> bool:
    return isinstance(d, dict) and all(_is_number(v) for v in d.values())


def _problem(results) -> str | None:
    """Why `results` is not a results.json this page can read, or None."""
    if not isinstance(results, dict):
        return "not a JSON object"
    langs = results.get("languages")
    if not (isinstance(langs, list) and langs and all(isinstance(lang, str) for lang in langs)):
        return "no 'languages' list"
    if not any(s in results for s in SETTINGS):
        return f"none of the settings {', '.join(SETTINGS)}"
    problem = _settings_problem(results, langs) or _bias_problem(results.get("multilingual", {}).get("bias"))
    if problem:
        return problem
    sizes = results.get("sizes")
    if sizes is not None and not (isinstance(sizes, dict) and all(
            isinstance(s, dict) and _is_number(s.get("queries")) and _is_number(s.get("candidates"))
            for s in sizes.values())):
        return "'sizes' needs queries and candidates per language"
    if results.get("config") is not None and not isinstance(results["config"], dict):
        return "'config' is not a dict"
    return None


def _settings_problem(results: dict, langs: list[str]) -> str | None:
    for setting in SETTINGS:
        if setting not in results:
            continue
        block = results[setting]
        if not (isinstance(block, dict) and _numbers(block.get("average"))
                and isinstance(block.get("per_setting"), dict) and block["per_setting"]
                and all(_numbers(m) for m in block["per_setting"].values())):
            return f"'{setting}' needs 'per_setting' and 'average' dicts of numbers"
        expected = ({f"{x}-{y}" for x in langs for y in langs if x != y} if setting == "cross-lingual" else set(langs))
        extra = sorted(set(block["per_setting"]) - expected)
        if extra:
            return f"'{setting}' has results for {', '.join(extra)}, outside the languages {' '.join(langs)}"
    return None


def _bias_problem(bias) -> str | None:
    if bias is None:
        return None
    if not isinstance(bias, dict):
        return "'multilingual.bias' is not a dict"
    for key, _, _ in BIAS_MEANS:
        if key in bias and not _is_number(bias[key]):
            return f"'multilingual.bias.{key}' is not a number"
    for key, _, _ in BIAS_PER_LANGUAGE:
        if key in bias and not _numbers(bias[key]):
            return f"'multilingual.bias.{key}' is not a dict of numbers"
    return None


def _study_runs(root: Path) -> list[Run]:
    """One run per arm of the study in `root`, its results averaged over the folds."""
    config, arms, folds = _study_layout(root)
    runs = []
    for arm in arms:
        model = f"`{config.get('model', '?')}`" + ("" if arm == "base" else f" fine-tuned with the `{arm}` sampler")
        split = config.get("eval_split", "test")
        about = (f"arm `{arm}` of the study in `{root}`: {model}, data `{config.get('data', '?')}`, "
                 f"{split} split, mean over folds {', '.join(map(str, folds))}")
        runs.append(Run(arm, _arm_results(root, arm, folds), about, study_arm=True))
    return runs


def _study_layout(root: Path) -> tuple[dict, list[str], list]:
    """The study's config, its arms and its folds (from study.json, else from the fold folders)."""
    study = _read_json(root / "study.json", "study")
    config = study.get("config") if isinstance(study, dict) else None
    if not isinstance(config, dict) or not config:
        raise DataError(f"unsupported study file {root / 'study.json'}: no 'config' dict")
    found = sorted(root.glob("fold*/*/results.json"))
    arms = config.get("arms") or sorted({p.parent.name for p in found})
    folds = config.get("folds")
    if folds is None:
        folds = sorted({int(p.parent.parent.name[4:]) for p in found if p.parent.parent.name[4:].isdigit()})
    if not (isinstance(arms, list) and all(isinstance(a, str) for a in arms)
            and isinstance(folds, list) and all(_is_number(f) for f in folds)):
        raise DataError(f"unsupported study file {root / 'study.json'}: 'arms' and 'folds' must be lists")
    if not arms or not folds:
        raise FileNotFoundError(f"no results in {root} (study.json but no fold<k>/<arm>/results.json)")
    return config, arms, folds


def _arm_results(root: Path, arm: str, folds: list) -> dict:
    """The mean over folds of an arm's results; its sizes are summed over the folds."""
    paths = [root / f"fold{fold}" / arm / "results.json" for fold in folds]
    missing = [str(p.relative_to(root)) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"study {root}: missing {', '.join(missing)}")
    per_fold = [_read_results(p) for p in paths]
    languages = {fold: r["languages"] for fold, r in zip(folds, per_fold, strict=True)}
    if len({tuple(langs) for langs in languages.values()}) > 1:
        raise DataError(f"study {root}, arm {arm}: folds have different languages ("
                        + "; ".join(f"fold{f}: {' '.join(langs)}" for f, langs in languages.items()) + ")")
    try:
        results = mean_over_folds([{k: v for k, v in r.items() if k not in ("config", "sizes", "seconds")}
                                   for r in per_fold])
    except DataError as err:
        raise DataError(f"study {err}") from None
    if all("sizes" in r for r in per_fold):
        results["sizes"] = {lang: {k: sum(r["sizes"][lang][k] for r in per_fold) for k in ("queries", "candidates")}
                            for lang in results["languages"] if all(lang in r["sizes"] for r in per_fold)}
    return results
