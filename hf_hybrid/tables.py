"""Result tables: the one markdown table writer and the one average over folds, for every page,
card and summary the toolkit writes."""

from __future__ import annotations

from hf_hybrid.errors import DataError


def markdown_table(header: list, rows: list[list]) -> str:
    """A markdown table; cells are written with str() and their `|` escaped."""
    def line(cells) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|---" * len(header) + "|", *map(line, rows)])


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def mean_over_folds(trees: list):
    """The mean of several folds' nested results: numbers are averaged, equal leaves stay as they
    are, and a key missing from any fold is dropped."""
    first = trees[0]
    if isinstance(first, dict):
        keys = [k for k in first if all(isinstance(t, dict) and k in t for t in trees)]
        return {k: mean_over_folds([t[k] for t in trees]) for k in keys}
    if all(t == first for t in trees):
        return first
    if all(_is_number(t) for t in trees):
        return sum(trees) / len(trees)
    raise DataError(f"folds disagree: {first!r} vs {trees[1:]!r}")
