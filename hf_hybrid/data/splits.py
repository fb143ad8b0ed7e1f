"""Leak-free splits of ParallelQA rows by article: folds for test, a held-out share of the rest for dev."""

from __future__ import annotations

import random

from datasets import Dataset

from hf_hybrid.errors import DataError


def split_by_article(ds: Dataset, n_folds: int = 2, fold: int = 0) -> tuple[Dataset, Dataset]:
    """(train, test) for one fold: the k-th article (in order of first appearance) is tested in
    fold k % n_folds, so with 2 folds fold 0 tests on the even articles and trains on the odd."""
    if not 0 <= fold < n_folds:
        raise DataError(f"fold {fold} does not exist with n_folds {n_folds}")
    articles = list(dict.fromkeys(ds["article_id"]))
    if len(articles) < n_folds:
        raise DataError(f"{len(articles)} article(s) cannot make {n_folds} folds")
    return _partition(ds, {a for k, a in enumerate(articles) if k % n_folds == fold})


def _partition(ds: Dataset, articles: set[str]) -> tuple[Dataset, Dataset]:
    """(rows outside `articles`, rows inside them)."""
    inside = [a in articles for a in ds["article_id"]]
    return (ds.select([i for i, f in enumerate(inside) if not f]), ds.select([i for i, f in enumerate(inside) if f]))


def holdout_articles(ds: Dataset, fraction: float, seed: int = 0) -> tuple[Dataset, Dataset]:
    """(rest, held-out) with about `fraction` of the articles held out, chosen with `seed`."""
    articles = list(dict.fromkeys(ds["article_id"]))
    k = max(1, round(len(articles) * fraction))
    if k >= len(articles):
        raise DataError(f"holding out {fraction} of {len(articles)} article(s) leaves none to train on")
    return _partition(ds, set(random.Random(seed).sample(articles, k)))


SPLITS = ("all", "train", "dev", "test")


def select_split(ds: Dataset, split: str = "all", n_folds: int = 0, fold: int = 0,
                 dev_fraction: float = 0.0, seed: int = 0) -> Dataset:
    """The rows of one part of a leak-free split by article.

    test: the articles of fold `fold` (of `n_folds`); train/dev: the other articles, with
    `dev_fraction` of them held out as dev (for choosing settings without touching test)."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    rows = _select(ds, split, n_folds, fold, dev_fraction, seed)
    if len(rows) == 0:
        raise DataError(f"split {split!r} is empty")
    return rows


def _select(ds, split, n_folds, fold, dev_fraction, seed):
    if split == "all":
        return ds
    if n_folds:
        rest, test = split_by_article(ds, n_folds, fold)
    elif split == "test":
        raise DataError("split 'test' needs n_folds > 0")
    else:
        rest, test = ds, None
    if split == "test":
        return test
    if not dev_fraction:
        if split == "dev":
            raise DataError("split 'dev' needs dev_fraction > 0")
        return rest
    train, dev = holdout_articles(rest, dev_fraction, seed)
    return train if split == "train" else dev
