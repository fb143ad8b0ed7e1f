"""hf-hybrid's retrieval and language-bias metrics as a Hugging Face `evaluate` module.

    import evaluate
    metric = evaluate.load("metrics/parallel_retrieval")   # or the Hub id it is published under
    metric.compute(predictions=[["p3", "p1", ...], ...], references=[["p1", "p1_de"], ...],
                   query_languages=["en", ...], candidate_languages={"p1": "en", "p1_de": "de", ...},
                   query_groups=["q1", ...])

The numbers come from the same functions as `hf-hybrid eval` (hf_hybrid.evaluation); see
docs/metrics.md for the definitions and sources.
"""

from __future__ import annotations

import datasets
import evaluate
import torch

from hf_hybrid.evaluation.bias import rank_correlations, rank_distance
from hf_hybrid.evaluation.retrieval import metrics_from_ranks

_DESCRIPTION = """\
Retrieval metrics over ranked lists: LAReQA's mAP (every relevant candidate counts), nDCG@10,
Recall@1/5/10/100. With `query_languages` and `candidate_languages` (a multilingual pool whose
relevant candidates are parallel answers in several languages) it adds the language-bias profile:
same-language share of the top-k against a language-blind ranker's, rank distance between a
query's best- and worst-ranked relevant candidates, mean rank of the relevant candidates by
candidate language, and, with `query_groups` (parallel queries share a group), the mean Spearman
rank correlation between the rankings of parallel queries (MRC, Yang et al. 2024).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of str): per query, candidate ids ranked best first. A relevant id
        missing from the list counts as not retrieved. Rank correlation needs full rankings.
    references (list of list of str): per query, the ids of its relevant candidates (at least one).
    query_languages (list of str, optional): the language of each query.
    candidate_languages (dict of str to str, optional): the language of every candidate of the pool.
    query_groups (list of str, optional): parallel queries (one question in several languages) share a group.
Returns:
    map, ndcg@10, recall@1, recall@5, recall@10, recall@100; with languages also
    same_language_share, language_blind_share, same_language_preference, rank_distance,
    mean_rank_by_candidate_language (dict); with groups also rank_correlation.
Examples:
    >>> metric = evaluate.load("metrics/parallel_retrieval")
    >>> metric.compute(predictions=[["a", "b"], ["b", "a"]], references=[["a"], ["a"]])["map"]
    0.75
"""

_CITATION = """\
@inproceedings{roy-etal-2020-lareqa,
  title = {{LAReQA}: Language-Agnostic Answer Retrieval from a Multilingual Pool},
  author = {Roy, Uma and Constant, Noah and Al-Rfou, Rami and Barua, Aditya and Phillips, Aaron and Yang, Yinfei},
  booktitle = {Proceedings of EMNLP 2020}, year = {2020}, pages = {5919--5930},
}
@article{elmahdy2024synergistic,
  title = {A Synergistic Approach for Simultaneous Optimization of Monolingual, Cross-lingual, and Multilingual
           Information Retrieval},
  author = {Elmahdy, Adel and others}, journal = {arXiv:2408.10536}, year = {2024},
}
@inproceedings{yang2024languagebias,
  title = {Language Bias in Multilingual Information Retrieval: The Nature of the Beast and Mitigation Methods},
  author = {Yang, Jinrui and Jiang, Fan and Baldwin, Timothy},
  booktitle = {Proceedings of the Fourth Workshop on Multilingual Representation Learning (MRL)},
  year = {2024},
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ParallelRetrieval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "predictions": datasets.Sequence(datasets.Value("string")),
                "references": datasets.Sequence(datasets.Value("string")),
            }),
            reference_urls=["https://arxiv.org/abs/2408.10536", "https://aclanthology.org/2020.emnlp-main.477"],
        )

    def _compute(self, predictions, references, query_languages=None, candidate_languages=None, query_groups=None):
        if len(predictions) != len(references) or not references:
            raise ValueError("predictions and references need one entry per query, and at least one query")
        if any(len(r) == 0 for r in references):
            raise ValueError("every query needs at least one relevant candidate in references")
        positions = [{c: i + 1 for i, c in enumerate(ranking)} for ranking in predictions]
        width = max(len(r) for r in references)
        ranks = torch.full((len(references), width), float("inf"), dtype=torch.double)
        for q, relevant in enumerate(references):
            for j, c in enumerate(relevant):
                ranks[q, j] = positions[q].get(c, float("inf"))
        n_relevant = torch.tensor([len(r) for r in references], dtype=torch.double)
        out = metrics_from_ranks(ranks, n_relevant)
        if query_languages is not None and candidate_languages is not None:
            out.update(_language_bias(predictions, references, ranks, query_languages, candidate_languages))
        if query_groups is not None:
            out["rank_correlation"] = _rank_correlation(predictions, query_groups)
        return out


def _language_bias(predictions, references, ranks, query_languages, candidate_languages) -> dict:
    if len(query_languages) != len(predictions):
        raise ValueError("query_languages needs one language per query")
    unknown = sorted({c for r in references for c in r} - set(candidate_languages))
    if unknown:
        raise ValueError(f"candidate_languages lacks relevant candidate(s) {', '.join(unknown[:5])}")
    pool = list(candidate_languages.values())
    share, blind, distance, answer_ranks = [], [], [], {}
    for q, (ranking, relevant, lang) in enumerate(zip(predictions, references, query_languages, strict=True)):
        top = ranking[: len(relevant)]
        share.append(sum(candidate_languages.get(c) == lang for c in top) / len(relevant))
        blind.append(pool.count(lang) / len(pool))
        found = ranks[q][torch.isfinite(ranks[q])]
        if len(found):
            distance.append(rank_distance(found[None]).item())
        for j, c in enumerate(relevant):
            if torch.isfinite(ranks[q, j]):
                answer_ranks.setdefault(candidate_languages[c], []).append(ranks[q, j].item())
    mean_share, mean_blind = sum(share) / len(share), sum(blind) / len(blind)
    return {
        "same_language_share": mean_share,
        "language_blind_share": mean_blind,
        "same_language_preference": mean_share / mean_blind if mean_blind else float("nan"),
        "rank_distance": sum(distance) / len(distance) if distance else float("nan"),
        "mean_rank_by_candidate_language": {lang: sum(v) / len(v) for lang, v in sorted(answer_ranks.items())},
    }


def _rank_correlation(predictions, query_groups) -> float:
    if len(query_groups) != len(predictions):
        raise ValueError("query_groups needs one group per query")
    groups: dict[str, list[int]] = {}
    for q, g in enumerate(query_groups):
        groups.setdefault(g, []).append(q)
    pool = sorted(set(predictions[0]))
    index = {c: i for i, c in enumerate(pool)}
    per_query = []
    for members in groups.values():
        if len(members) < 2:
            continue
        scores = torch.empty(1, len(members), len(pool), dtype=torch.double)
        for m, q in enumerate(members):
            if len(predictions[q]) != len(pool) or set(predictions[q]) != set(pool):
                raise ValueError("rank correlation needs every query to rank the whole pool (full rankings)")
            for position, c in enumerate(predictions[q]):
                scores[0, m, index[c]] = -position
        per_query += rank_correlations(scores)[0].tolist()
    if not per_query:
        raise ValueError("rank correlation needs groups with queries in at least 2 languages")
    return sum(per_query) / len(per_query)
