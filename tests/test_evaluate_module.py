from pathlib import Path

import pytest
import torch

evaluate = pytest.importorskip("evaluate")

from test_evaluation import LookupEncoder, bench, topic_vectors  # noqa: E402 (needs `evaluate`)

from hf_hybrid.evaluation.retrieval import evaluate_parallel  # noqa: E402

MODULE = str(Path(__file__).resolve().parents[1] / "metrics" / "parallel_retrieval")


@pytest.fixture(scope="module")
def metric():
    return evaluate.load(MODULE)


def test_small_example(metric):
    out = metric.compute(predictions=[["a", "b"], ["b", "a"]], references=[["a"], ["a"]])
    assert out["map"] == pytest.approx(0.75) and out["recall@1"] == pytest.approx(0.5)
    # a relevant candidate the ranking never reaches counts as not retrieved
    out = metric.compute(predictions=[["x", "a"]], references=[["a", "b"]])
    assert out["map"] == pytest.approx((1 / 2) / 2) and out["recall@10"] == pytest.approx(0.5)


def test_same_numbers_as_the_toolkit(metric):
    langs, n = ["de", "en", "sw"], 10
    vectors = topic_vectors(langs, n, seed=3)
    ours = evaluate_parallel(LookupEncoder(vectors), bench(langs, n), settings=["multilingual"], progress=False)
    pool = [f"p{g}{lang}" for lang in langs for g in range(n)]
    pool_vectors = torch.stack([vectors[c] for c in pool])
    predictions, references, query_langs, groups = [], [], [], []
    for lang in langs:
        for g in range(n):
            order = (pool_vectors @ vectors[f"q{g}{lang}"]).argsort(descending=True)
            predictions.append([pool[i] for i in order])
            references.append([f"p{g}{c}" for c in langs])
            query_langs.append(lang)
            groups.append(str(g))
    out = metric.compute(predictions=predictions, references=references, query_languages=query_langs,
                         candidate_languages={c: c[-2:] for c in pool}, query_groups=groups)
    multi = ours["multilingual"]
    for key in ("map", "ndcg@10", "recall@1", "recall@10"):
        assert out[key] == pytest.approx(multi["average"][key])
    bias = multi["bias"]
    assert out["same_language_share"] == pytest.approx(bias["same_language_share_mean"])
    assert out["same_language_preference"] == pytest.approx(bias["same_language_preference_mean"])
    assert out["rank_distance"] == pytest.approx(bias["rank_distance_mean"])
    assert out["rank_correlation"] == pytest.approx(bias["rank_correlation_mean"])
    assert out["mean_rank_by_candidate_language"] == pytest.approx(bias["mean_rank_by_candidate_language"])


def test_bad_input(metric):
    with pytest.raises(ValueError, match="at least one relevant"):
        metric.compute(predictions=[["a"]], references=[[]])
    with pytest.raises(ValueError, match="full rankings"):
        metric.compute(predictions=[["a", "b"], ["a"]], references=[["a"], ["a"]], query_groups=["g", "g"])
