"""The PNG figures of `hf-hybrid report`, drawn from plain dicts of numbers by run name.

Each run keeps one colour in every figure: its place in the report's list of runs. Figures are
matplotlib `Figure`s, without pyplot's global state.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=110, format="png")


def run_colors(names: list[str]) -> dict[str, str]:
    """One colour per run, the same in every plot: matplotlib's 10 default colours, or tab20's 20 past 10 runs."""
    if len(names) <= 10:
        return {name: f"C{i}" for i, name in enumerate(names)}
    palette = matplotlib.colormaps["tab20"]
    return {name: matplotlib.colors.to_hex(palette(i % 20)) for i, name in enumerate(names)}


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
        drawn += [(p, width, name, groups[g]) for p, g in zip(pos, xs, strict=True)]
    ax.set_xticks(range(len(groups)), groups)
    return drawn


def plot_settings(settings: list[str], series: dict[str, dict[str, float]], label: str, fmt: str, path: Path) -> None:
    """Average `label` per setting: series[run][setting], one entry per run of the report; bars labelled with `fmt`."""
    fig = _figure(max(4.5, 1.2 + len(settings) * (0.5 + 0.45 * len(series))), 3.6)
    ax = fig.add_subplot()
    _grouped_bars(ax, settings, series, run_colors(list(series)), fmt)
    ax.set_ylabel(f"average {label}")
    ax.set_title(f"Average {label} per setting")
    ax.margins(y=0.15)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, path)


def plot_heatmap(name: str, langs: list[str], matrix: dict, label: str, vmin: float, vmax: float, path: Path) -> None:
    """matrix[x][y] (query language x, candidate language y) on the colour scale vmin..vmax."""
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


def plot_bias(names: list[str], langs: list[str], ranks: dict, shares: dict, blind: dict, path: Path) -> None:
    """Mean rank by candidate language and same-language share by query language, each by run name
    (runs without the measure left out; at least one of the two given); `blind[run]`: the
    language-blind share by language, drawn as a dashed mark on that run's share bars."""
    colors = run_colors(names)
    panels = [p for p in (ranks, shares) if p]
    n_runs = len(set(ranks) | set(shares))
    fig = _figure(max(5.0, 1.5 + len(langs) * (0.35 + 0.3 * n_runs)), 3.2 * len(panels) + 0.4)
    axes = list(fig.subplots(len(panels), 1, squeeze=False)[:, 0])
    if ranks:
        ax = axes.pop(0)
        _grouped_bars(ax, [lang for lang in langs if any(lang in v for v in ranks.values())], ranks, colors)
        ax.set_ylabel("mean rank (lower is better)")
        ax.set_xlabel("candidate language")
        ax.set_title("Mean rank of the relevant candidate in each language (multilingual pool)", fontsize=10)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if shares:
        ax = axes.pop(0)
        drawn = _grouped_bars(ax, [lang for lang in langs if any(lang in v for v in shares.values())], shares, colors)
        marked = False
        for x, width, name, lang in drawn:
            if lang in blind.get(name, {}):
                ax.hlines(blind[name][lang], x - width / 2, x + width / 2, colors="black", linestyles="--",
                          linewidth=1.2, label=None if marked else "language-blind share")
                marked = True
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("share of the top-k")
        ax.set_xlabel("query language")
        ax.set_title("Same-language share of the top-k (dashed: language-blind share)", fontsize=10)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, path)



def plot_training_curve(records: list[dict], path: Path, title: str = "Training",
                        best_step: int | None = None) -> None:
    """The loss by step of train_log.jsonl's records and, when the run evaluated on its dev split, each setting's
    dev mAP by step (its `eval_*_map` records), with the best evaluation's step marked."""
    train = [r for r in records if "loss" in r]
    names = sorted({k for r in records for k in r if k.startswith("eval_") and k.endswith("_map")})
    fig = _figure(6.5, 2.8 * (1 + bool(names)))
    axes = list(fig.subplots(1 + bool(names), 1, squeeze=False, sharex=True)[:, 0])
    axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], marker=".", color="C0")
    axes[0].set_ylabel("training loss")
    axes[0].set_title(title, fontsize=10)
    if names:
        ax = axes[1]
        for i, name in enumerate(names):
            steps, values = zip(*[(r["step"], r[name]) for r in records if name in r], strict=True)
            ax.plot(steps, values, marker="o", color=f"C{i + 1}", label=name[5:-4].replace("_", "-") + " mAP")
        if best_step is not None:
            ax.axvline(best_step, color="black", linestyle="--", linewidth=1, label=f"best (step {best_step})")
        ax.set_ylabel("dev mAP")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes[-1].set_xlabel("step")
    _save(fig, path)


def training_curve(run_dir: Path, path: Path, title: str = "Training") -> bool:
    """Draw the curve of a training folder's train_log.jsonl (the best step from its train_summary.json) into
    `path`; False, and nothing drawn, when the folder has no logged loss."""
    log, summary = run_dir / "train_log.jsonl", run_dir / "train_summary.json"
    if not log.is_file():
        return False
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not any("loss" in r for r in records):
        return False
    best = json.loads(summary.read_text(encoding="utf-8")).get("best_step") if summary.is_file() else None
    plot_training_curve(records, path, title, best)
    return True


def plot_differences_with_intervals(intervals: dict[str, dict[str, dict]], keys: list[str], titles: list[str],
                                    path: Path, ylabel: str) -> Path:
    """One panel per key: intervals[run][key][language] = {diff, low, high}, languages on the x axis, each run
    a colour, a dot at the difference and a bar over its interval; a line at 0 (no change)."""
    runs = list(intervals)
    colors = run_colors(runs)
    langs = [lang for lang in next(iter(intervals.values()))[keys[0]] if lang != "low-resource mean"]
    fig = _figure(max(6.0, 0.5 * len(langs) * max(1, len(runs)) ** 0.5), 3.2 * len(keys))
    axes = fig.subplots(len(keys), 1, squeeze=False)[:, 0]
    width = 0.8 / max(1, len(runs))
    for ax, key, title in zip(axes, keys, titles, strict=True):
        for i, run in enumerate(runs):
            xs = np.arange(len(langs)) - 0.4 + width * (i + 0.5)
            cells = [intervals[run][key][lang] for lang in langs]
            diffs = np.array([c["diff"] for c in cells])
            errors = np.array([[c["diff"] - c["low"] for c in cells], [c["high"] - c["diff"] for c in cells]])
            ax.errorbar(xs, diffs, yerr=errors, fmt="o", ms=3, color=colors[run], label=run, capsize=2)
        ax.axhline(0, color="0.4", lw=0.8)
        ax.set_xticks(range(len(langs)), langs)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=8)
    axes[0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, path)
    return path


def plot_tradeoff(points: dict[str, tuple[float, float]], path: Path, xlabel: str, ylabel: str,
                  target: tuple[float, float] | None = None) -> Path:
    """A numbered point per run at (x, y), named in a legend beside the axes (run names written at close points
    overlap), with lines at 0 on both axes and, given a `target` (x, y), the region at and above both shaded."""
    fig = _figure(9.5, 4.5)
    ax = fig.add_subplot()
    colors = run_colors(list(points))
    for number, (run, (x, y)) in enumerate(points.items(), start=1):
        ax.scatter([x], [y], color=colors[run], s=18, label=f"{number}  {run}")
        ax.annotate(str(number), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False, handletextpad=0.3)
    ax.axhline(0, color="0.6", lw=0.8)
    ax.axvline(0, color="0.6", lw=0.8)
    if target is not None:
        ax.axvline(target[0], color="0.4", lw=0.8, ls="--")
        ax.axhline(target[1], color="0.4", lw=0.8, ls="--")
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        ax.fill_between([target[0], x1], target[1], y1, color="0.5", alpha=0.12, lw=0)
        ax.text(x1, y1, "target ", ha="right", va="top", fontsize=8, color="0.3")
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    _save(fig, path)
    return path
