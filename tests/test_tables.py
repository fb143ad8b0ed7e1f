import pytest

from hf_hybrid.errors import DataError
from hf_hybrid.tables import markdown_table, mean_over_folds


def test_markdown_table_escapes_pipes():
    table = markdown_table(["run", "mAP"], [["a|b", 0.5], ["c", ""]])
    assert table.splitlines() == ["| run | mAP |", "|---|---|", "| a\\|b | 0.5 |", "| c |  |"]
    assert markdown_table(["x|y"], []) == "| x\\|y |\n|---|"


def test_mean_over_folds():
    folds = [{"languages": ["de", "en"], "map": 0.5, "bias": {"top_k": 2, "share": 0.25}, "only_here": 1},
             {"languages": ["de", "en"], "map": 0.7, "bias": {"top_k": 2, "share": 0.75}}]
    assert mean_over_folds(folds) == {"languages": ["de", "en"], "map": pytest.approx(0.6),
                                      "bias": {"top_k": 2, "share": 0.5}}
    assert mean_over_folds([0.1, 0.1, 0.1]) == 0.1  # equal leaves stay exactly as they are


def test_folds_that_disagree():
    with pytest.raises(DataError, match="folds disagree"):
        mean_over_folds([{"languages": ["de"]}, {"languages": ["en"]}])
    with pytest.raises(DataError):
        mean_over_folds([{"model": "a"}, {"model": 1}])
