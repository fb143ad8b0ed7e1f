"""Batch samplers over ParallelQA rows: the hybrid-batch sampler and its baselines.

Each yields, per step, a list of (query_row, passage_row) index pairs for this process.
Every process draws the same global batch for a step (same batch type and languages, same
groups) from (seed, epoch) and takes its own slice, so no group appears twice in a step.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from hf_hybrid.errors import ConfigError, DataError


class HybridBatchSampler:
    """Monolingual batch (one language for every pair) with probability `alpha`, else
    cross-lingual (each pair its own ordered language pair, query language != passage language)."""

    name = "hybrid"
    fixed_alpha: float | None = None  # baselines fix the share of monolingual batches

    def __init__(self, dataset, batch_size: int, alpha: float = 0.5, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0):
        if self.fixed_alpha is not None:
            alpha = self.fixed_alpha
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {alpha}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        self.alpha = alpha
        self.batch_size = batch_size
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.start_batch = 0
        rows = defaultdict(dict)
        for i, (group, lang) in enumerate(zip(dataset["group_id"], dataset["lang"], strict=True)):
            rows[group][lang] = i
        self.groups = list(rows)
        self.languages = sorted({lang for per_lang in rows.values() for lang in per_lang})
        missing = [(g, lang) for g in self.groups for lang in self.languages if lang not in rows[g]]
        if missing:
            raise DataError(f"group {missing[0][0]!r} has no row in language {missing[0][1]!r}")
        # row_of[g, l] is the dataset row of group g in language l
        self.row_of = np.array([[rows[g][lang] for lang in self.languages] for g in self.groups], dtype=np.int64)
        self.global_batch = batch_size * num_replicas
        if self.global_batch > len(self.groups):
            raise DataError(
                f"batch size {batch_size} x {num_replicas} process(es) is larger than the number of groups "
                f"({len(self.groups)}): a batch may not hold two rows of one group"
            )
        self._check_languages()

    def _check_languages(self) -> None:
        if self.alpha < 1.0 and len(self.languages) < 2:
            raise DataError(f"cross-lingual batches need at least 2 languages, the data has {self.languages}")

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch; `start_batch` skips the batches already trained (resume)."""
        self.epoch = epoch
        self.start_batch = start_batch

    def __len__(self) -> int:
        return len(self.groups) // self.global_batch

    def draw_languages(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(query language index, passage language index) for each of the n pairs of one global batch."""
        n_lang = len(self.languages)
        if rng.random() < self.alpha:
            lang = rng.integers(n_lang)
            return np.full(n, lang), np.full(n, lang)
        return self._cross_pairs(rng, n)

    def _cross_pairs(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        n_lang = len(self.languages)
        query = rng.integers(n_lang, size=n)
        passage = (query + rng.integers(1, n_lang, size=n)) % n_lang  # uniform over the other languages
        return query, passage

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.groups))
        for b in range(len(self)):
            groups = order[b * self.global_batch : (b + 1) * self.global_batch]
            q_lang, p_lang = self.draw_languages(rng, len(groups))
            if b < self.start_batch:
                continue
            mine = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
            q_rows = self.row_of[groups[mine], q_lang[mine]]
            p_rows = self.row_of[groups[mine], p_lang[mine]]
            yield list(zip(q_rows.tolist(), p_rows.tolist(), strict=True))


class MonolingualBatchSampler(HybridBatchSampler):
    """X-X: every batch monolingual, its language drawn per batch."""

    name = "x-x"
    fixed_alpha = 1.0


class CrossLingualBatchSampler(HybridBatchSampler):
    """X-Y: every batch cross-lingual."""

    name = "x-y"
    fixed_alpha = 0.0


class EnglishOnlyBatchSampler(HybridBatchSampler):
    """En-En: English queries and passages only."""

    name = "en-en"
    fixed_alpha = 1.0

    def _check_languages(self) -> None:
        if "en" not in self.languages:
            raise DataError(f"the en-en sampler needs English rows; the data has {', '.join(self.languages)}")

    def draw_languages(self, rng, n):
        en = self.languages.index("en")
        return np.full(n, en), np.full(n, en)


class RandomPairBatchSampler(HybridBatchSampler):
    """Unconstrained: each pair's query and passage languages drawn independently (may be equal)."""

    name = "random"
    fixed_alpha = 0.0

    def draw_languages(self, rng, n):
        n_lang = len(self.languages)
        return rng.integers(n_lang, size=n), rng.integers(n_lang, size=n)


SAMPLERS = {cls.name: cls for cls in (HybridBatchSampler, MonolingualBatchSampler, CrossLingualBatchSampler,
                                      EnglishOnlyBatchSampler, RandomPairBatchSampler)}


def make_sampler(name: str, dataset, batch_size: int, alpha: float = 0.5, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0) -> HybridBatchSampler:
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r} (expected one of {', '.join(SAMPLERS)})")
    return SAMPLERS[name](dataset, batch_size, alpha=alpha, seed=seed, num_replicas=num_replicas, rank=rank)
