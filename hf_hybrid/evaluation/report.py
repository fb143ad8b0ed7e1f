"""Several evaluation runs on one markdown page: `report.md` with tables, and PNG plots beside it.

A run is a folder holding `results.json` (written by `hf-hybrid eval`) or one arm of a study
folder (`hf_hybrid.evaluation.results` reads both). Every number on the page is read from those
files (or is a mean over a study's folds); a setting or metric a run does not have is left out,
never shown as 0. Metric definitions: docs/metrics.md.
"""

from __future__ import annotations

import re
from pathlib import Path

from hf_hybrid.errors import ConfigError
from hf_hybrid.evaluation.plots import plot_bias, plot_heatmap, plot_settings, training_curve
from hf_hybrid.evaluation.results import BIAS_MEANS, BIAS_PER_LANGUAGE, Run, load_runs
from hf_hybrid.evaluation.retrieval import SETTINGS
from hf_hybrid.tables import markdown_table

METRIC_FORMAT = ".3f"


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


def _average(results: dict, setting: str, metric: str):
    return results.get(setting, {}).get("average", {}).get(metric)


def _bias(results: dict) -> dict:
    return results.get("multilingual", {}).get("bias") or {}


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
        parts.append(f"model `{cfg['model']}`, data `{cfg.get('data', '?')}`"
                     + ("" if split == "all" else f", {split}"))
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
                f"{lang} {s['queries']}/{s['candidates']}" for lang, s in sizes.items()))
    if "seconds" in r:
        parts.append(f"evaluated in {r['seconds']:.1f} s")
    return "; ".join(parts) + "."


def _per_language(runs: list[Run], langs: list[str], values_of, fmt: str) -> str:
    """A language x run table of `values_of(results)` (a dict by language, or None); "" if no run has one."""
    values = [values_of(run.results) or {} for run in runs]
    rows = [[lang] + [_fmt(v.get(lang), fmt) for v in values] for lang in langs if any(lang in v for v in values)]
    return markdown_table(["language"] + [run.name for run in runs], rows) if rows else ""


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
    langs = sorted({lang for run in runs for lang in run.results["languages"]})
    lines = (_runs_section(runs) + _averages_section(runs, metric, out) + _per_language_section(runs, langs, metric)
             + _cross_lingual_section(runs, metric, out) + _bias_section(runs, langs, out)
             + _training_section(runs, out))
    page = out / "report.md"
    page.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return page


def _runs_section(runs: list[Run]) -> list[str]:
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
        lines += ["Runs differ in languages: "
                  + "; ".join(f"{', '.join(names)}: {langs}" for langs, names in by_languages.items())
                  + ". Per-language tables and plots show each run's own languages; averages are over each run's "
                    "own languages, so they are not strictly comparable.", ""]
    return lines


def _averages_section(runs: list[Run], metric: str, out: Path) -> list[str]:
    """The summary table (the metric, mAP, nDCG@10 and Recall@1 per setting, the bias means) and its plot."""
    rows = []
    for setting in SETTINGS:
        for m in dict.fromkeys([metric, "map", "ndcg@10", "recall@1"]):
            values = [_average(run.results, setting, m) for run in runs]
            if any(v is not None for v in values):
                rows.append([f"{setting} {metric_label(m)}"] + [_fmt(v, METRIC_FORMAT) for v in values])
    for key, label, fmt in BIAS_MEANS:
        values = [_bias(run.results).get(key) for run in runs]
        if any(v is not None for v in values):
            rows.append([f"multilingual {label}"] + [_fmt(v, fmt) for v in values])
    lines = ["## Averages per setting", "", markdown_table(["average"] + [run.name for run in runs], rows), ""]
    series = {run.name: {s: _average(run.results, s, metric) for s in SETTINGS
                         if _average(run.results, s, metric) is not None} for run in runs}
    settings = [s for s in SETTINGS if any(s in values for values in series.values())]
    if settings:
        file = f"settings_{_slug(metric)}.png"
        plot_settings(settings, series, metric_label(metric), METRIC_FORMAT, out / file)
        lines += [_image(f"average {metric_label(metric)} per setting", file), ""]
    return lines


def _per_language_section(runs: list[Run], langs: list[str], metric: str) -> list[str]:
    lines = [f"## {metric_label(metric)} per language", ""]
    for setting, title in (("monolingual", "Monolingual"), ("multilingual", "Multilingual pool, by query language")):
        table = _per_language(runs, langs, lambda r, s=setting: {lang: m[metric] for lang, m in r.get(s, {}).get(
            "per_setting", {}).items() if metric in m}, METRIC_FORMAT)
        if table:
            lines += [f"### {title}", "", table, ""]
    return lines


def _cross_lingual_section(runs: list[Run], metric: str, out: Path) -> list[str]:
    """One query x candidate language table and heatmap per run with cross-lingual results, on one colour scale."""
    matrices = {run.name: cross_lingual_matrix(run.results, metric) for run in runs}
    matrices = {name: m for name, m in matrices.items() if m}
    if not matrices:
        return []
    label = metric_label(metric)
    values = [v for m in matrices.values() for row in m.values() for v in row.values()]
    vmin, vmax = min(values), max(values)
    lines = ["### Cross-lingual, query language (rows) to candidate language (columns)", "",
             ("The diagonal is the monolingual setting where the run has it. The heatmaps share one colour "
              f"scale, {vmin:{METRIC_FORMAT}} to {vmax:{METRIC_FORMAT}}."), ""]
    for i, run in enumerate(runs, 1):
        matrix = matrices.get(run.name)
        if not matrix:
            continue
        run_langs = run.results["languages"]
        rows = [[x] + [_fmt(matrix[x].get(y), METRIC_FORMAT) for y in run_langs] for x in run_langs]
        file = f"cross_lingual_{i}_{_slug(run.name)}.png"
        plot_heatmap(run.name, run_langs, matrix, label, vmin, vmax, out / file)
        lines += [f"#### {run.name}", "", markdown_table(["query \\ candidate"] + run_langs, rows), "",
                  _image(f"{run.name}: cross-lingual {label}", file), ""]
    return lines


def _bias_section(runs: list[Run], langs: list[str], out: Path) -> list[str]:
    tables = []
    for key, title, fmt in BIAS_PER_LANGUAGE:
        table = _per_language(runs, langs, lambda r, k=key: _bias(r).get(k), fmt)
        if table:
            tables += [f"### {title}", "", table, ""]
    if not tables:
        return []
    lines = ["## Language bias in the multilingual pool", "",
             "k is the number of languages of the run (a query's number of relevant candidates).", ""] + tables
    measures = {key: {run.name: _bias(run.results).get(key) for run in runs}
                for key in ("mean_rank_by_candidate_language", "same_language_share")}
    ranks, shares = ({name: v for name, v in by_run.items() if v} for by_run in measures.values())
    if ranks or shares:
        blind = {run.name: _bias(run.results).get("language_blind_share") or {} for run in runs}
        plot_bias([run.name for run in runs], langs, ranks, shares, blind, out / "bias_profile.png")
        lines += [_image("language-bias profile per language", "bias_profile.png"), ""]
    return lines


def _training_section(runs: list[Run], out: Path) -> list[str]:
    """The loss (and dev metric) curve of each run whose folder, or evaluated model's folder, has a train_log.jsonl."""
    lines = []
    for i, run in enumerate(runs, 1):
        folder = run.training_folder()
        file = f"training_{i}_{_slug(run.name)}.png"
        if folder is not None and training_curve(folder, out / file, f"{run.name}: training"):
            lines += [f"### {run.name}", "", f"From `{folder / 'train_log.jsonl'}`.", "",
                      _image(f"{run.name}: training loss and dev mAP by step", file), ""]
    return ["## Training", ""] + lines if lines else []
