import pytest
import torch
from conftest import shared_data
from test_evaluation import LookupEncoder

from hf_hybrid.data.parallel_qa import load_parallel_qa
from hf_hybrid.errors import DataError
from hf_hybrid.evaluation.retrieval import ParallelBenchmark, evaluate_parallel

SENTENCES = {
    "eng_Latn": ["The river floods every spring.", "Bread is baked at dawn.", "The team won the cup."],
    "hau_Latn": ["Kogin yana ambaliya kowace bazara.", "Ana gasa burodi da asuba.", "Kungiyar ta ci kofin."],
    "swh_Latn": ["Mto hufurika kila masika.", "Mkate huokwa alfajiri.", "Timu ilishinda kombe."],
}


# The tiny random model scores many candidates within float noise of each other, and the two routes' encoders
# batch (and pad) differently, so a few near-ties can swap places. With multilingual-e5-small the routes agree
# to 1.2e-9 on XQuAD-R (benchmarks/eval_speed.py).
TIE_NOISE = 2e-3

def write_sib(root, sentences=SENTENCES):
    for code, texts in sentences.items():
        folder = root / "data" / "annotated" / code
        folder.mkdir(parents=True)
        for split, rows in (("train", texts[:2]), ("dev", texts[2:]), ("test", [])):
            lines = ["index_id\tcategory\ttext"] + [f"{10 + texts.index(t)}\tnews\t{t}" for t in rows]
            (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def test_sib200_folder_loads_as_parallel_sentences(tmp_path):
    rows = load_parallel_qa(str(write_sib(tmp_path / "sib")), ["en", "ha", "sw"])
    assert len(rows) == 9 and sorted(set(rows["lang"])) == ["en", "ha", "sw"]
    assert rows.filter(lambda r: r["group_id"] == "flores-11")["query"] == [
        "Bread is baked at dawn.", "Ana gasa burodi da asuba.",
        "Mkate huokwa alfajiri."]
    assert all(q == p for q, p in zip(rows["query"], rows["passage"], strict=True))
    with pytest.raises(DataError, match="no FLORES/SIB-200 folder for language 'yo'"):
        load_parallel_qa(str(tmp_path / "sib"), ["en", "yo"])
    (tmp_path / "sib" / "data" / "annotated" / "hau_Latn" / "dev.tsv").write_text("id\tsentence\n1\tx\n")
    with pytest.raises(DataError, match="expected the columns index_id and text"):
        load_parallel_qa(str(tmp_path / "sib"), ["en", "ha"])


def test_sentences_retrieve_translations_not_themselves(tmp_path):
    rows = load_parallel_qa(str(write_sib(tmp_path / "sib")), ["en", "ha", "sw"])
    bench = ParallelBenchmark.from_rows(rows)
    assert bench.self_retrieval and bench.pivot == "en"
    torch.manual_seed(0)
    topics = torch.eye(8)[:3]  # one direction per sentence group
    vectors = {t: torch.nn.functional.normalize(topics[i] + 0.05 * torch.randn(8), dim=0)
               for texts in SENTENCES.values() for i, t in enumerate(texts)}
    r = evaluate_parallel(LookupEncoder(vectors), bench, progress=False)
    assert "monolingual" not in r
    assert sorted(r["cross-lingual"]["per_setting"]) == ["en-ha", "en-sw", "ha-en", "sw-en"]
    multi = r["multilingual"]
    # each sentence's two translations come first in a pool without its own language: mAP 1, rank distance 1
    assert multi["average"]["map"] == pytest.approx(1.0)
    assert multi["bias"]["rank_distance_mean"] == pytest.approx(1.0)
    assert set(multi["bias"]["mean_rank"]["en"]) == {"ha", "sw"}
    assert "same_language_share" not in multi["bias"] and "rank_correlation" not in multi["bias"]


def test_flores_task_gives_the_toolkit_scores(tiny_model_dir, tmp_path):
    mteb = pytest.importorskip("mteb")
    from sentence_transformers import SentenceTransformer

    from hf_hybrid.evaluation.mteb_tasks import FloresLowResourceRetrieval
    from hf_hybrid.evaluation.run import EvalConfig, run_evaluation

    data, langs = str(shared_data("sib-200")), ["en", "ha", "sw"]
    ours = run_evaluation(EvalConfig(model=str(tiny_model_dir), data=data, languages=langs))
    assert ours["sizes"]["ha"]["queries"] == 1004
    task = FloresLowResourceRetrieval(data=data, languages=langs)
    result = mteb.evaluate(SentenceTransformer(str(tiny_model_dir), device="cpu"), task,
                           cache=mteb.ResultCache(tmp_path / "cache"), show_progress_bar=False)
    scores = {s["hf_subset"]: s for s in result.task_results[0].scores["test"]}
    assert sorted(scores) == ["en-ha", "en-sw", "ha-en", "multilingual", "sw-en"]
    for pair, metrics in ours["cross-lingual"]["per_setting"].items():
        assert scores[pair]["map"] == pytest.approx(metrics["map"], abs=TIE_NOISE)
    assert scores["multilingual"]["map"] == pytest.approx(ours["multilingual"]["average"]["map"], abs=TIE_NOISE)
