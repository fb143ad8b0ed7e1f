import math

import pytest
import torch

from hf_hybrid.evaluation.retrieval import (
    ParallelBenchmark,
    evaluate_parallel,
    markdown_table,
)


class LookupEncoder:
    """Embeds each text with a fixed vector."""

    device = torch.device("cpu")

    def __init__(self, vectors):
        self.vectors = vectors

    def encode(self, texts, kind, batch_size=64, progress=False, lang=None):
        return torch.stack([torch.as_tensor(self.vectors[t], dtype=torch.float32) for t in texts])


def bench(langs, n_groups):
    return ParallelBenchmark(
        languages=langs,
        queries={lang: [(f"g{g}", f"q{g}{lang}") for g in range(n_groups)] for lang in langs},
        candidates={lang: [f"p{g}{lang}" for g in range(n_groups)] for lang in langs},
        relevant={lang: {f"g{g}": g for g in range(n_groups)} for lang in langs},
    )


def topic_vectors(langs, n_groups, seed):
    """Queries q<g><lang> and passages p<g><lang>: one random topic per group plus noise."""
    torch.manual_seed(seed)
    vectors = {}
    for g in range(n_groups):
        topic = torch.randn(8)
        for lang in langs:
            vectors[f"q{g}{lang}"] = topic + torch.randn(8)
            vectors[f"p{g}{lang}"] = topic + torch.randn(8)
    return vectors


def test_hand_computed_map():
    vectors = {
        "q0en": [1, 0], "q1en": [0, 1], "q0de": [1, 0], "q1de": [0, 1],
        "p0en": [0.9, 0.1], "p1en": [0.8, 0.9], "p0de": [0.7, 0.2], "p1de": [0.1, 0.8],
    }
    r = evaluate_parallel(LookupEncoder(vectors), bench(["de", "en"], 2), progress=False)
    # q0en in the pool: p0en (0.9) first, p1en (0.8) second, p0de (0.7) third -> AP = (1/1 + 2/3) / 2
    # q1en: p1en (0.9), p1de (0.8) -> AP = 1
    assert r["multilingual"]["per_setting"]["en"]["map"] == pytest.approx((5 / 6 + 1) / 2)
    # monolingual en: q0en ranks p0en first; q1en ranks p1en first
    assert r["monolingual"]["per_setting"]["en"]["map"] == pytest.approx(1.0)
    # en->de: q0en scores p0de .7 > p1de .1 (rank 1); q1en: p1de .8 > p0de .2 (rank 1)
    assert r["cross-lingual"]["per_setting"]["en-de"]["map"] == pytest.approx(1.0)
    # top-2 of q0en is (p0en, p1en): both English; of q1en (p1en, p1de): one of two
    bias = r["multilingual"]["bias"]
    assert bias["same_language_share"]["en"] == pytest.approx(0.75)
    assert bias["same_language_preference"]["en"] == pytest.approx(0.75 / 0.5)
    # ranks of the relevant (de, en) candidates: q0en (3, 1), q1en (2, 1); the de queries embed like
    # the en ones, so the same. English answers always come first: German ones are pushed down.
    assert bias["rank_distance"]["en"] == pytest.approx((2 + 1) / 2)
    assert bias["mean_rank"]["en"] == {"de": pytest.approx(2.5), "en": pytest.approx(1.0)}
    assert bias["mean_rank_by_candidate_language"] == {"de": pytest.approx(2.5), "en": pytest.approx(1.0)}
    assert "| multilingual |" in markdown_table(r)


def naive_metrics(query, pool, relevant):
    scores = pool @ query
    order = sorted(range(len(pool)), key=lambda i: -scores[i])
    ranks = sorted(order.index(i) + 1 for i in relevant)
    ap = sum((k + 1) / r for k, r in enumerate(ranks)) / len(ranks)
    dcg = sum(1 / math.log2(r + 1) for r in ranks if r <= 10)
    idcg = sum(1 / math.log2(i + 1) for i in range(1, min(len(ranks), 10) + 1))
    return ap, dcg / idcg, sum(r <= 5 for r in ranks) / len(ranks)


def test_matches_a_naive_implementation():
    langs, n = ["ar", "en", "sw"], 30
    vectors = topic_vectors(langs, n, seed=0)
    r = evaluate_parallel(LookupEncoder(vectors), bench(langs, n), progress=False, query_chunk=7)
    pool = torch.stack([vectors[f"p{g}{lang}"] for lang in langs for g in range(n)])
    for ql in langs:
        expected = [naive_metrics(vectors[f"q{g}{ql}"], pool, [li * n + g for li in range(len(langs))])
                    for g in range(n)]
        got = r["multilingual"]["per_setting"][ql]
        assert got["map"] == pytest.approx(sum(e[0] for e in expected) / n)
        assert got["ndcg@10"] == pytest.approx(sum(e[1] for e in expected) / n)
        assert got["recall@5"] == pytest.approx(sum(e[2] for e in expected) / n)
        for cl in langs:
            if cl == ql:
                continue
            cands = torch.stack([vectors[f"p{g}{cl}"] for g in range(n)])
            exp = [naive_metrics(vectors[f"q{g}{ql}"], cands, [g]) for g in range(n)]
            assert r["cross-lingual"]["per_setting"][f"{ql}-{cl}"]["map"] == pytest.approx(sum(e[0] for e in exp) / n)
    assert len(r["cross-lingual"]["per_setting"]) == 6


def test_rank_correlation_matches_scipy():
    from scipy.stats import spearmanr

    langs, n = ["de", "en", "sw"], 12
    vectors = topic_vectors(langs, n, seed=1)
    r = evaluate_parallel(LookupEncoder(vectors), bench(langs, n), settings=["multilingual"], progress=False,
                          query_chunk=5)
    pool = torch.stack([vectors[f"p{g}{lang}"] for lang in langs for g in range(n)]).numpy()
    for a in langs:
        expected = [sum(spearmanr(pool @ vectors[f"q{g}{a}"].numpy(), pool @ vectors[f"q{g}{b}"].numpy()).statistic
                        for b in langs if b != a) / (len(langs) - 1) for g in range(n)]
        assert r["multilingual"]["bias"]["rank_correlation"][a] == pytest.approx(sum(expected) / n)
    # a language-blind ranker (every query of a group embeds alike) ranks the pool identically
    same = {k: (vectors[f"q{k[1:-2]}en"] if k.startswith("q") else v) for k, v in vectors.items()}
    blind = evaluate_parallel(LookupEncoder(same), bench(langs, n), settings=["multilingual"], progress=False)
    assert blind["multilingual"]["bias"]["rank_correlation_mean"] == pytest.approx(1.0)


def test_extra_candidates_join_the_pool():
    from datasets import Dataset

    rows = Dataset.from_list([{"group_id": "g", "lang": "en", "query": "q", "passage": "p"}])
    b = ParallelBenchmark.from_rows(rows, {"en": ["x", "p", "y"]})
    assert b.candidates["en"] == ["p", "x", "y"] and b.relevant["en"]["g"] == 0


def test_nan_embeddings_are_one_clear_error():
    with pytest.raises(ValueError, match="candidates in en to NaN"):
        evaluate_parallel(LookupEncoder({"q0en": [1.0, 0.0], "p0en": [float("nan"), 0.0]}), bench(["en"], 1),
                          progress=False)


def test_unknown_setting():
    with pytest.raises(ValueError, match="unknown setting"):
        evaluate_parallel(LookupEncoder({}), bench(["en"], 1), settings=["bilingual"])
