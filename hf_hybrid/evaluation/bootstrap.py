"""Paired bootstrap intervals for the difference between two models on the same queries.

Queries are resampled by group (a question or a FLORES sentence and its translations), the same resample for every
language and setting, so the interval of a mean over languages keeps the pairing across languages too. The inputs
are `per_query.json` files of `hf-hybrid eval --per_query true` (a study writes them for every arm).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hf_hybrid.errors import DataError


def ap_tables(files: list[Path]) -> dict[str, dict[str, float]]:
    """Each query's AP by "setting key" ("cross-lingual de-en") and group, from per_query.json files; a group in
    several files (the same FLORES sentence under each fold's model) gets the mean of its APs."""
    collected: dict[str, dict[str, list[float]]] = {}
    for path in files:
        per_query = json.loads(Path(path).read_text())
        for setting, by_key in per_query["ap"].items():
            for key, aps in by_key.items():
                groups = per_query["groups"][key.split("-")[0]]  # the key's query language comes first
                table = collected.setdefault(f"{setting} {key}", {})
                for group, ap in zip(groups, aps, strict=True):
                    table.setdefault(group, []).append(ap)
    return {label: {g: sum(aps) / len(aps) for g, aps in table.items()} for label, table in collected.items()}


def paired_bootstrap(tuned: dict[str, dict[str, float]], reference: dict[str, dict[str, float]],
                     labels: list[str], n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """The mean AP difference tuned - reference for each label (an `ap_tables` key) and for their mean, with
    percentile intervals over `n_resamples` resamples of the groups both answered under every label."""
    missing = [label for label in labels if label not in tuned or label not in reference]
    if missing:
        raise DataError(f"no per-query AP for {missing[0]!r} in both evaluations")
    groups = sorted(set.intersection(*(set(table[label]) for table in (tuned, reference) for label in labels)))
    if not groups:
        raise DataError("the two evaluations share no query groups: were they run on the same data?")
    diff = np.array([[tuned[label][g] - reference[label][g] for label in labels] for g in groups])
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, len(groups), len(groups)), minlength=len(groups))
                       for _ in range(n_resamples)])  # [resamples, groups]: how often each group was drawn
    resampled = counts @ diff / len(groups)  # [resamples, labels]
    tail = (1 - level) / 2 * 100

    def interval(point: float, samples: np.ndarray) -> dict:
        low, high = np.percentile(samples, [tail, 100 - tail])
        return {"diff": float(point), "low": float(low), "high": float(high)}

    out = {label: interval(diff[:, j].mean(), resampled[:, j]) for j, label in enumerate(labels)}
    out["mean"] = interval(diff.mean(), resampled.mean(1))
    out["groups"] = len(groups)
    return out
