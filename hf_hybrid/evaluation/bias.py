"""Language-bias metrics for a multilingual pool of parallel candidates (definitions: docs/metrics.md).

All take ranks or scores already computed by the evaluator, so they cost no extra encoding.
"""

from __future__ import annotations

import torch

from hf_hybrid.errors import DataError


def rank_distance(ranks: torch.Tensor) -> torch.Tensor:
    """Per query, worst minus best rank of its parallel relevant candidates. ranks: [queries, languages]."""
    return (ranks.max(dim=1).values - ranks.min(dim=1).values).double()


def same_language_share(top_languages: torch.Tensor, query_language: int) -> torch.Tensor:
    """Per query, the share of its top-k candidates in its own language. top_languages: [queries, k]."""
    return (top_languages == query_language).double().mean(dim=1)


def rank_correlations(scores: torch.Tensor) -> torch.Tensor:
    """Spearman correlation between the pool rankings of parallel queries.

    scores: [groups, languages, pool] (query of group g in language a against every candidate).
    Returns [groups, languages]: for each query, its mean correlation with the same group's queries
    in the other languages (RC_i(a) of Yang et al. 2024; their MRC is the mean of this).
    """
    n_langs, pool = scores.shape[1], scores.shape[2]
    if n_langs < 2:
        raise DataError("rank correlation needs queries in at least 2 languages")
    ranks = scores.argsort(dim=-1).argsort(dim=-1).double()
    ranks -= (pool - 1) / 2
    # Spearman without ties: the Pearson correlation of ranks, whose variance is (n^2 - 1) / 12
    corr = ranks @ ranks.transpose(1, 2) / (pool * (pool**2 - 1) / 12)
    return (corr.sum(dim=2) - 1) / (n_langs - 1)
