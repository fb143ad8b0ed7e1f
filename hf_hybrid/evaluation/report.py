"""Several evaluation runs on one markdown page: `report.md` with tables, and PNG plots beside it.

A run is a folder holding `results.json` (written by `hf-hybrid eval`); a study folder (holding
`study.json`, written by `hf_hybrid.study.run_study`) stands for one run per arm, each the mean
over folds of that arm's `fold<k>/<arm>/results.json`. Every number on the page is read from
those files (or is a mean over a study's folds); a setting or metric a run does not have is left
out, never shown as 0. Metric definitions: docs/metrics.md.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from hf_hybrid.errors import ConfigError, DataError
from hf_hybrid.evaluation.retrieval import SETTINGS

BIAS_MEANS = (  # key in results["multilingual"]["bias"], label, format
    ("same_language_share_mean", "same-language share of the top-k (mean)", ".2f"),
    ("same_language_preference_mean", "same-language preference (mean; 1 = blind)", ".2f"),
    ("rank_distance_mean", "rank distance (mean)", ".1f"),
    ("rank_correlation_mean", "rank correlation (mean)", ".3f"),
)
BIAS_PER_LANGUAGE = (  # key, title, format
    ("mean_rank_by_candidate_language", "Mean rank of the relevant candidate, by candidate language", ".1f"),
    ("same_language_share", "Same-language share of the top-k, by query language", ".2f"),
    ("language_blind_share", "Language-blind share (the language's share of the pool)", ".2f"),
    ("same_language_preference", "Same-language preference (share / blind share), by query language", ".2f"),
    ("rank_distance", "Rank distance, by query language", ".1f"),
    ("rank_correlation", "Rank correlation, by query language", ".3f"),
)
METRIC_FORMAT = ".3f"


@dataclass
class Run:
    name: str
    results: dict
    about: str  # where it comes from and what it is
    study_arm: bool = False


# ---------------------------------------------------------------- loading


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
                runs.append(Run(path.resolve().parent.name, _read_results(path), f"`{path}`"))
        elif (path / "study.json").is_file():
            runs += _study_runs(path)
        elif (path / "results.json").is_file():
            runs.append(Run(path.resolve().name, _read_results(path / "results.json"), f"`{path / 'results.json'}`"))
        else:
            raise FileNotFoundError(f"no results in {path} (expected results.json or study.json)")
    if names is not None:
        if len(names) != len(runs):
            raise ConfigError(f"--names gives {len(names)} name(s) for {len(runs)} run(s) "
                             f"({', '.join(run.name for run in runs)}; a study counts one run per arm)")
        if not all(n.strip() for n in names):
            raise ConfigError("--names: a run name is empty")
    for run, name in zip(runs, _unique(names if names is not None else [run.name for run in runs])):
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


def _read_results(path: Path) -> dict:
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"malformed results file {path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    except UnicodeDecodeError:
        raise DataError(f"malformed results file {path}: not UTF-8 text") from None
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
    if not (isinstance(langs, list) and langs and all(isinstance(l, str) for l in langs)):
        return "no 'languages' list"
    if not any(s in results for s in SETTINGS):
        return f"none of the settings {', '.join(SETTINGS)}"
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
    bias = results.get("multilingual", {}).get("bias")
    if bias is not None:
        if not isinstance(bias, dict):
            return "'multilingual.bias' is not a dict"
        for key, _, _ in BIAS_MEANS:
            if key in bias and not _is_number(bias[key]):
                return f"'multilingual.bias.{key}' is not a number"
        for key, _, _ in BIAS_PER_LANGUAGE:
            if key in bias and not _numbers(bias[key]):
                return f"'multilingual.bias.{key}' is not a dict of numbers"
    sizes = results.get("sizes")
    if sizes is not None and not (isinstance(sizes, dict) and all(
            isinstance(s, dict) and _is_number(s.get("queries")) and _is_number(s.get("candidates"))
            for s in sizes.values())):
        return "'sizes' needs queries and candidates per language"
    if results.get("config") is not None and not isinstance(results["config"], dict):
        return "'config' is not a dict"
    return None


def _study_runs(root: Path) -> list[Run]:
    """One run per arm of the study in `root`, its results averaged over the folds."""
    try:
        study = json.loads((root / "study.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"malformed study file {root / 'study.json'}: not valid JSON ({err.msg}, line {err.lineno})") from None
    config = study.get("config") if isinstance(study, dict) else None
    config = config if isinstance(config, dict) else {}
    if not config:
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
    runs = []
    for arm in arms:
        paths = [root / f"fold{fold}" / arm / "results.json" for fold in folds]
        missing = [str(p.relative_to(root)) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"study {root}: missing {', '.join(missing)}")
        per_fold = [_read_results(p) for p in paths]
        languages = {fold: r["languages"] for fold, r in zip(folds, per_fold)}
        if len({tuple(l) for l in languages.values()}) > 1:
            raise DataError(f"study {root}, arm {arm}: folds have different languages ("
                             + "; ".join(f"fold{f}: {' '.join(l)}" for f, l in languages.items()) + ")")
        results = _mean_over_folds([{k: v for k, v in r.items() if k not in ("config", "sizes", "seconds")}
                                    for r in per_fold])
        if all("sizes" in r for r in per_fold):
            results["sizes"] = {l: {k: sum(r["sizes"][l][k] for r in per_fold) for k in ("queries", "candidates")}
                                for l in results["languages"] if all(l in r["sizes"] for r in per_fold)}
        model = f"`{config.get('model', '?')}`" + ("" if arm == "base" else f" fine-tuned with the `{arm}` sampler")
        split = config.get("eval_split", "test")
        about = (f"arm `{arm}` of the study in `{root}`: {model}, data `{config.get('data', '?')}`, "
                 f"{split} split, mean over folds {', '.join(map(str, folds))}")
        runs.append(Run(arm, results, about, study_arm=True))
    return runs


def _mean_over_folds(trees: list):
    """Equal leaves stay as they are; numbers are averaged; a key missing from a fold is dropped."""
    first = trees[0]
    if isinstance(first, dict):
        keys = [k for k in first if all(isinstance(t, dict) and k in t for t in trees)]
        return {k: _mean_over_folds([t[k] for t in trees]) for k in keys}
    if all(t == first for t in trees):
        return first
    if all(_is_number(t) for t in trees):
        return sum(trees) / len(trees)
    raise DataError(f"study folds disagree: {first!r} vs {trees[1:]!r}")


# ---------------------------------------------------------------- page


def metric_label(metric: str) -> str:
    if metric == "map":
        return "mAP"
    if metric.startswith("ndcg@"):
        return "nDCG@" + metric[5:]
    if metric.startswith("recall@"):
        return "Recall@" + metric[7:]
    return metric


def _fmt(value, fmt: str) -> str:
    return "–" if value is None else f"{value:{fmt}}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(map(_cell, header)) + " |", "|---" * len(header) + "|"] + \
           ["| " + " | ".join(map(_cell, row)) + " |" for row in rows]


def _average(results: dict, setting: str, metric: str):
    return results.get(setting, {}).get("average", {}).get(metric)


def _bias(results: dict) -> dict:
    return results.get("multilingual", {}).get("bias") or {}


def _languages(runs: list[Run]) -> list[str]:
    return sorted({l for run in runs for l in run.results["languages"]})


def _describe(run: Run) -> str:
    r = run.results
    parts = [f"- **{run.name}**: {run.about}"]
    cfg = r.get("config")
    if cfg and "model" in cfg and not run.study_arm:
        split = cfg.get("split", "all")
        if split == "test":
            split = f"test fold {cfg.get('fold')} of {cfg.get('n_folds')}"
        elif split == "dev":
            split = f"dev split ({cfg.get('dev_fraction')} of the training articles)"
        parts.append(f"model `{cfg['model']}`, data `{cfg.get('data', '?')}`" + ("" if split == "all" else f", {split}"))
    parts.append(f"settings {', '.join(s for s in SETTINGS if s in r)}; languages {' '.join(r['languages'])}")
    sizes = r.get("sizes")
    if sizes:
        summed = " (summed over folds)" if run.study_arm else ""
        pairs = {(s["queries"], s["candidates"]) for s in sizes.values()}
        if len(pairs) == 1:
            q, c = pairs.pop()
            parts.append(f"{q} queries and {c} candidates per language{summed}")
        else:
            parts.append(f"queries/candidates{summed} " + ", ".join(
                f"{l} {s['queries']}/{s['candidates']}" for l, s in sizes.items()))
    if "seconds" in r:
        parts.append(f"evaluated in {r['seconds']:.1f} s")
    return "; ".join(parts) + "."


def _summary(runs: list[Run], metric: str) -> list[str]:
    metrics = list(dict.fromkeys([metric, "map", "ndcg@10", "recall@1"]))
    rows = []
    for setting in SETTINGS:
        for m in metrics:
            values = [_average(run.results, setting, m) for run in runs]
            if any(v is not None for v in values):
                rows.append([f"{setting} {metric_label(m)}"] + [_fmt(v, METRIC_FORMAT) for v in values])
    for key, label, fmt in BIAS_MEANS:
        values = [_bias(run.results).get(key) for run in runs]
        if any(v is not None for v in values):
            rows.append([f"multilingual {label}"] + [_fmt(v, fmt) for v in values])
    return _table(["average"] + [run.name for run in runs], rows)


def _per_language(runs: list[Run], langs: list[str], values_of, fmt: str, first: str = "language") -> list[str]:
    """A language x run table of `values_of(results)` (a dict by language, or None); [] if no run has one."""
    values = [values_of(run.results) or {} for run in runs]
    rows = [[l] + [_fmt(v.get(l), fmt) for v in values] for l in langs if any(l in v for v in values)]
    return _table([first] + [run.name for run in runs], rows) if rows else []


def cross_lingual_matrix(results: dict, metric: str) -> dict[str, dict[str, float]] | None:
    """matrix[x][y]: `metric` for queries in x and candidates in y; the diagonal is monolingual where present."""
    if "cross-lingual" not in results:
        return None
    langs = results["languages"]
    cross = results["cross-lingual"]["per_setting"]
    mono = results.get("monolingual", {}).get("per_setting", {})
    matrix = {x: {} for x in langs}
    for x in langs:
        for y in langs:
            m = mono.get(x) if x == y else cross.get(f"{x}-{y}")
            if m is not None and metric in m:
                matrix[x][y] = m[metric]
    return matrix if any(matrix.values()) else None


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_.") or "run"


def _image(alt: str, file: str) -> str:
    return f"![{re.sub(r'[][]', '', alt)}]({file})"


def build_report(paths: list[Path], out: Path, metric: str = "map", names: list[str] | None = None) -> Path:
    """Write `out/report.md` and its PNG plots for the runs in `paths`; return the page's path."""
    runs = load_runs(paths, names)
    available = sorted({m for run in runs for s in SETTINGS if s in run.results for m in run.results[s]["average"]})
    if metric not in available:
        raise ConfigError(f"metric '{metric}' is in none of the results (available: {', '.join(available)})")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    label = metric_label(metric)
    langs = _languages(runs)
    lines = [f"# Retrieval report: {', '.join(run.name for run in runs)}", "",
             ("Written by `hf-hybrid report`. Every number is read from the runs' results files (a study arm's is "
              "the mean over its folds); a dash marks a value the run does not have. The metrics are defined in "
              "`docs/metrics.md` of hf_hybrid."), "",
             "## Runs", ""] + [_describe(run) for run in runs] + [""]
    if any(run.study_arm for run in runs):
        lines += [("A study arm's numbers are the unweighted means over its folds of each number in the folds' "
                   "results.json; all folds of an arm have the same languages."), ""]
    by_languages: dict[str, list[str]] = {}
    for run in runs:
        by_languages.setdefault(" ".join(run.results["languages"]), []).append(run.name)
    if len(by_languages) > 1:
        lines += ["Runs differ in languages: " + "; ".join(f"{', '.join(names)}: {l}" for l, names in by_languages.items())
                  + ". Per-language tables and plots show each run's own languages; averages are over each run's "
                    "own languages, so they are not strictly comparable.", ""]

    lines += ["## Averages per setting", ""] + _summary(runs, metric) + [""]
    if _plot_settings(runs, metric, out / f"settings_{_slug(metric)}.png"):
        lines += [_image(f"average {label} per setting", f"settings_{_slug(metric)}.png"), ""]

    lines += [f"## {label} per language", ""]
    for setting, title in (("monolingual", "Monolingual"), ("multilingual", "Multilingual pool, by query language")):
        table = _per_language(runs, langs, lambda r, s=setting: {l: m[metric] for l, m in r.get(s, {}).get(
            "per_setting", {}).items() if metric in m}, METRIC_FORMAT)
        if table:
            lines += [f"### {title}", ""] + table + [""]
    matrices = {run.name: cross_lingual_matrix(run.results, metric) for run in runs}
    matrices = {name: m for name, m in matrices.items() if m}
    if matrices:
        values = [v for m in matrices.values() for row in m.values() for v in row.values()]
        vmin, vmax = min(values), max(values)
        lines += ["### Cross-lingual, query language (rows) to candidate language (columns)", "",
                  ("The diagonal is the monolingual setting where the run has it. The heatmaps share one colour "
                   f"scale, {vmin:{METRIC_FORMAT}} to {vmax:{METRIC_FORMAT}}."), ""]
        for i, run in enumerate(runs, 1):
            matrix = matrices.get(run.name)
            if not matrix:
                continue
            run_langs = run.results["languages"]
            rows = [[x] + [_fmt(matrix[x].get(y), METRIC_FORMAT) for y in run_langs] for x in run_langs]
            file = f"cross_lingual_{i}_{_slug(run.name)}.png"
            _plot_heatmap(run.name, run_langs, matrix, label, vmin, vmax, out / file)
            lines += [f"#### {run.name}", ""] + _table(["query \\ candidate"] + run_langs, rows) + [""] + \
                     [_image(f"{run.name}: cross-lingual {label}", file), ""]

    bias_tables = []
    for key, title, fmt in BIAS_PER_LANGUAGE:
        table = _per_language(runs, langs, lambda r, k=key: _bias(r).get(k), fmt)
        if table:
            bias_tables += [f"### {title}", ""] + table + [""]
    if bias_tables:
        lines += ["## Language bias in the multilingual pool", "",
                  "k is the number of languages of the run (a query's number of relevant candidates).", ""]
        lines += bias_tables
        if _plot_bias(runs, langs, out / "bias_profile.png"):
            lines += [_image("language-bias profile per language", "bias_profile.png"), ""]

    page = out / "report.md"
    page.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return page


# ---------------------------------------------------------------- plots (matplotlib Figure, no pyplot state)


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=110, format="png")


def _grouped_bars(ax, groups: list[str], series: dict[str, dict[str, float]], colors: dict[str, str],
                  fmt: str | None = None) -> list:
    """Bars for series[run][group], runs side by side within each group; missing values get no bar.
    Returns (x, width, run, group) per drawn bar, for reference marks."""
    n = max(1, len(series))
    width = 0.8 / n
    drawn = []
    for i, (name, values) in enumerate(series.items()):
        xs = [g for g, group in enumerate(groups) if group in values]
        heights = [values[groups[g]] for g in xs]
        pos = [x - 0.4 + width * (i + 0.5) for x in xs]
        bars = ax.bar(pos, heights, width, label=name, color=colors[name])
        if fmt:
            ax.bar_label(bars, labels=[f"{h:{fmt}}" for h in heights], fontsize=7, padding=1)
        drawn += [(p, width, name, groups[g]) for p, g in zip(pos, xs)]
    ax.set_xticks(range(len(groups)), groups)
    return drawn


def _colors(runs: list[Run]) -> dict[str, str]:
    """One colour per run, the same in every plot."""
    return {run.name: f"C{i % 10}" for i, run in enumerate(runs)}


def _plot_settings(runs: list[Run], metric: str, path: Path) -> bool:
    settings = [s for s in SETTINGS if any(_average(run.results, s, metric) is not None for run in runs)]
    series = {run.name: {s: _average(run.results, s, metric) for s in settings
                         if _average(run.results, s, metric) is not None} for run in runs}
    if not settings:
        return False
    fig = _figure(max(4.5, 1.2 + len(settings) * (0.5 + 0.45 * len(runs))), 3.6)
    ax = fig.add_subplot()
    _grouped_bars(ax, settings, series, _colors(runs), METRIC_FORMAT)
    ax.set_ylabel(f"average {metric_label(metric)}")
    ax.set_title(f"Average {metric_label(metric)} per setting")
    ax.margins(y=0.15)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, path)
    return True


def _plot_heatmap(name: str, langs: list[str], matrix: dict, label: str, vmin: float, vmax: float, path: Path) -> None:
    import matplotlib
    import numpy as np

    grid = np.ma.masked_invalid([[matrix[x].get(y, math.nan) for y in langs] for x in langs])
    if vmax <= vmin:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#dddddd")
    n = len(langs)
    fig = _figure(1.8 + 0.55 * n, 1.2 + 0.5 * n)
    ax = fig.add_subplot()
    image = ax.imshow(grid, cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_xticks(range(n), langs)
    ax.set_yticks(range(n), langs)
    ax.set_xlabel("candidate language")
    ax.set_ylabel("query language")
    ax.set_title(f"{name}: {label}", fontsize=10)
    for i, x in enumerate(langs):
        for j, y in enumerate(langs):
            if y in matrix[x]:
                value = matrix[x][y]
                dark = (value - vmin) / (vmax - vmin) < 0.6
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7 if n > 6 else 9,
                        color="white" if dark else "black")
    fig.colorbar(image, ax=ax, shrink=0.8, label=label)
    _save(fig, path)


def _plot_bias(runs: list[Run], langs: list[str], path: Path) -> bool:
    ranks = {run.name: _bias(run.results).get("mean_rank_by_candidate_language") for run in runs}
    shares = {run.name: _bias(run.results).get("same_language_share") for run in runs}
    blind = {run.name: _bias(run.results).get("language_blind_share") or {} for run in runs}
    ranks = {n: v for n, v in ranks.items() if v}
    shares = {n: v for n, v in shares.items() if v}
    if not ranks and not shares:
        return False
    panels = [p for p in (ranks, shares) if p]
    n_runs = len(set(ranks) | set(shares))
    fig = _figure(max(5.0, 1.5 + len(langs) * (0.35 + 0.3 * n_runs)), 3.2 * len(panels) + 0.4)
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    k = 0
    if ranks:
        ax = axes[k]
        _grouped_bars(ax, [l for l in langs if any(l in v for v in ranks.values())], ranks, _colors(runs))
        ax.set_ylabel("mean rank (lower is better)")
        ax.set_xlabel("candidate language")
        ax.set_title("Mean rank of the relevant candidate in each language (multilingual pool)", fontsize=10)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        k += 1
    if shares:
        ax = axes[k]
        drawn = _grouped_bars(ax, [l for l in langs if any(l in v for v in shares.values())], shares, _colors(runs))
        marked = False
        for x, width, name, lang in drawn:
            if lang in blind[name]:
                ax.hlines(blind[name][lang], x - width / 2, x + width / 2, colors="black", linestyles="--",
                          linewidth=1.2, label=None if marked else "language-blind share")
                marked = True
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("share of the top-k")
        ax.set_xlabel("query language")
        ax.set_title("Same-language share of the top-k (dashed: language-blind share)", fontsize=10)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, path)
    return True
