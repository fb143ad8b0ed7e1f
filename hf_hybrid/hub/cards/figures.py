"""The figures a model card draws: from its evaluations (`hf-hybrid eval`'s results.json), per evaluation the
cross-lingual heatmap (query language x candidate language, the diagonal monolingual) and the language-bias profile
of the multilingual pool, the plots `hf-hybrid report` draws for a run, and a few lines that sum the heatmap up;
from the model folder's train_log.jsonl, the training curve (loss and dev mAP by step)."""

from __future__ import annotations

import re
from pathlib import Path

from hf_hybrid.hub.cards.evaluations import Evaluation

FIGURES = "figures"  # where a card's images go, relative to README.md
HEATMAP = "cross_lingual_map.png"
BIAS = "bias_profile.png"
TRAINING = "training_curve.png"


def _folder_names(evaluations: list[Evaluation]) -> list[str]:
    """A folder per evaluation under figures/: its folder's name, numbered where two share one."""
    names = [re.sub(r"[^A-Za-z0-9._-]+", "_", ev.path.parent.name).strip("_.") or "eval" for ev in evaluations]
    return [name if names.count(name) == 1 else f"{name}-{i}" for i, name in enumerate(names, 1)]


def cross_lingual_summary(matrix: dict[str, dict[str, float]], label: str, fmt: str) -> str:
    """The heatmap in a sentence: the mean of the pairs and of the diagonal, the best and the worst pair."""
    pairs = {(x, y): v for x, row in matrix.items() for y, v in row.items() if x != y}
    diagonal = [row[x] for x, row in matrix.items() if x in row]
    if not pairs:
        return ""
    (bx, by), (wx, wy) = max(pairs, key=pairs.get), min(pairs, key=pairs.get)
    text = f"Cross-lingual {label}: mean {sum(pairs.values()) / len(pairs):{fmt}} over {len(pairs)} ordered pairs"
    if diagonal:
        text += f" (monolingual, the diagonal: mean {sum(diagonal) / len(diagonal):{fmt}})"
    return text + (f"; highest {bx}→{by} {pairs[bx, by]:{fmt}}, lowest {wx}→{wy} {pairs[wx, wy]:{fmt}}.")


def draw_evaluation_figures(evaluations: list[Evaluation], out: Path) -> list[dict]:
    """For each toolkit evaluation, in order: {"heatmap", "bias"}, each None or {"file": path under figures/,
    "caption", "source": the PNG drawn under `out`}."""
    from hf_hybrid.evaluation.plots import plot_bias, plot_heatmap  # imports matplotlib
    from hf_hybrid.evaluation.report import cross_lingual_matrix, metric_label  # imports torch

    drawn = []
    for ev, name in zip(evaluations, _folder_names(evaluations), strict=True):
        r, figures = ev.data, {"heatmap": None, "bias": None}
        (out / name).mkdir(parents=True, exist_ok=True)
        matrix = cross_lingual_matrix(r, "map")
        if matrix:
            values = [v for row in matrix.values() for v in row.values()]
            plot_heatmap(name, r["languages"], matrix, metric_label("map"), min(values), max(values),
                         out / name / HEATMAP)
            figures["heatmap"] = {"file": f"{FIGURES}/{name}/{HEATMAP}", "source": out / name / HEATMAP,
                                  "caption": f"{name}: cross-lingual mAP, query language (rows) to candidate language"}
        bias = (r.get("multilingual") or {}).get("bias") or {}
        ranks, shares = bias.get("mean_rank_by_candidate_language"), bias.get("same_language_share")
        if isinstance(ranks, dict) or isinstance(shares, dict):
            plot_bias([name], r["languages"], {name: ranks} if isinstance(ranks, dict) else {},
                      {name: shares} if isinstance(shares, dict) else {},
                      {name: bias.get("language_blind_share") or {}}, out / name / BIAS)
            figures["bias"] = {"file": f"{FIGURES}/{name}/{BIAS}", "source": out / name / BIAS,
                               "caption": f"{name}: language-bias profile of the multilingual pool"}
        drawn.append(figures)
    return drawn


def draw_training_figure(model_dir: Path, out: Path) -> dict | None:
    """The model's training curve from its train_log.jsonl (the best dev step marked), drawn under `out`, as
    {"file", "caption", "source"}; None when the folder logged no loss."""
    from hf_hybrid.evaluation.plots import training_curve  # imports matplotlib

    out.mkdir(parents=True, exist_ok=True)
    if not training_curve(model_dir, out / TRAINING, "Training"):
        return None
    return {"file": f"{FIGURES}/{TRAINING}", "source": out / TRAINING,
            "caption": "training loss and dev mAP by step (train_log.jsonl)"}
