"""`hf-hybrid data export xquad-retrieval`: MTEB's XQuADRetrieval, built from the XQuAD files,
loaded offline by MTEB's unmodified task and scored as the toolkit scores it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import shared_data

from hf_hybrid.cli import main
from hf_hybrid.data.export import PARTS, export_xquad_retrieval

ROOT = Path(__file__).resolve().parents[1]
LANGS = ["de", "en"]


def write_xquad(folder: Path, languages=("de", "en")) -> Path:
    """A small XQuAD folder: 2 articles x 2 paragraphs x 2 questions, parallel across languages."""
    folder.mkdir(parents=True, exist_ok=True)
    for lang in languages:
        articles = [{"title": f"Article {a}", "paragraphs": [
            {"context": f"{lang} paragraph {a}.{p} about topic {a * 2 + p}.",
             "qas": [{"id": f"q{a}{p}{k}", "question": f"{lang} question {k} on topic {a * 2 + p}?",
                      "answers": [{"text": "topic", "answer_start": 0}]} for k in range(2)]}
            for p in range(2)]} for a in range(2)]
        (folder / f"xquad.{lang}.json").write_text(json.dumps({"version": "1.1", "data": articles}), encoding="utf-8")
    return folder


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main(["data", "export", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(result, *fragments):
    code, _, err = result
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


def test_layout_loads_with_datasets(tmp_path):
    from datasets import get_dataset_config_names, get_dataset_split_names, load_dataset

    from hf_hybrid.data.parallel_qa import load_xquad

    source = write_xquad(tmp_path / "xquad")
    out = export_xquad_retrieval(source, tmp_path / "out")
    configs = sorted(f"{lang}-{p}" for lang in LANGS for p in PARTS)
    assert sorted(get_dataset_config_names(str(out))) == configs
    assert get_dataset_split_names(str(out), "de-qrels") == ["validation"]
    rows = load_xquad(source).to_list()
    for lang in LANGS:
        corpus = load_dataset(str(out), f"{lang}-corpus", split="validation")
        queries = load_dataset(str(out), f"{lang}-queries", split="validation")
        qrels = load_dataset(str(out), f"{lang}-qrels", split="validation")
        assert corpus.column_names == ["id", "title", "text"] and set(corpus["title"]) == {""}
        assert queries.column_names == ["id", "text"] and qrels.column_names == ["query-id", "corpus-id", "score"]
        mine = [r for r in rows if r["lang"] == lang]
        assert corpus["text"] == list(dict.fromkeys(r["passage"] for r in mine))
        assert len(set(corpus["id"])) == len(corpus)
        assert list(zip(queries["id"], queries["text"], strict=True)) == [(r["group_id"], r["query"]) for r in mine]
        text_of = dict(zip(corpus["id"], corpus["text"], strict=True))
        assert [text_of[d] for d in qrels["corpus-id"]] == [r["passage"] for r in mine]
        assert qrels["query-id"] == queries["id"] and set(qrels["score"]) == {1}


def test_bad_input_is_one_error_line(tmp_path, capsys):
    source = write_xquad(tmp_path / "xquad")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "en.json").write_text("{}")
    out = tmp_path / "out"
    assert_one_line_error(cli(capsys, "xquad-retrieval", "--source", tmp_path / "nowhere", "--out", out),
                          "directory not found", "nowhere")
    assert_one_line_error(cli(capsys, "xquad-retrieval", "--source", tmp_path / "other", "--out", out),
                          "no files named xquad.{lang}.json")
    assert_one_line_error(cli(capsys, "xquad-retrieval", "--source", source, "--out", out, "--languages", "de", "xx"),
                          "unknown language code 'xx'")
    assert_one_line_error(cli(capsys, "xquad-retrieval", "--source", source, "--out", out, "--languages", "fr"),
                          "no xquad.{lang}.json file for language(s) fr")
    assert_one_line_error(cli(capsys, "mlqa-retrieval", "--source", source, "--out", out),
                          "unknown export 'mlqa-retrieval'", "xquad-retrieval")
    assert_one_line_error(cli(capsys, "xquad-retrieval", "--source", source, "--out", source, "--overwrite"),
                          "is the source folder")
    assert not out.exists()  # nothing written on bad input
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert_one_line_error(cli(capsys, "xquad-retrieval", "--source", source, "--out", out),
                          "is not empty", "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_overwrite_replaces_an_earlier_export(tmp_path, capsys):
    from datasets import get_dataset_config_names

    source = write_xquad(tmp_path / "xquad")
    out, cache = tmp_path / "out", tmp_path / "cache"
    code, printed, err = cli(capsys, "xquad-retrieval", "--source", source, "--out", out, "--datasets-cache", cache)
    assert code == 0, err
    assert printed.strip() == str(out)
    (out / "notes.txt").write_text("mine")
    assert_one_line_error(cli(capsys, "xquad-retrieval", "--source", source, "--out", out, "--languages", "en"),
                          "is not empty")
    # the output is free but the cache already holds these configs
    assert_one_line_error(cli(capsys, "xquad-retrieval", "--source", source, "--out", tmp_path / "out2",
                              "--datasets-cache", cache), "already holds mteb/XQuADRetrieval de-corpus")
    code, _, err = cli(capsys, "xquad-retrieval", "--source", source, "--out", out, "--languages", "en",
                       "--datasets-cache", cache, "--overwrite")
    assert code == 0, err
    # the earlier export's de configs are gone, other files stay
    assert sorted(get_dataset_config_names(str(out))) == ["en-corpus", "en-qrels", "en-queries"]
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "en-corpus", "en-qrels", "en-queries", "export.json",
                                                     "notes.txt"]


MTEB_OFFLINE = """
import json, sys
import mteb
from sentence_transformers import SentenceTransformer

task = mteb.get_task("XQuADRetrieval", hf_subsets=sys.argv[2].split(","))
assert task.metadata.dataset["path"] == "mteb/XQuADRetrieval"  # the task as MTEB ships it
result = mteb.evaluate(SentenceTransformer(sys.argv[1], device="cpu"), task, cache=None, show_progress_bar=False)
print("SCORES " + json.dumps(result.task_results[0].scores))
"""


def test_mteb_task_offline_gives_the_toolkit_scores(tiny_model_dir, tmp_path):
    """MTEB's own XQuADRetrieval, offline on the exported copy == the toolkit's monolingual scores, to 1e-4."""
    pytest.importorskip("mteb")
    import torch

    from hf_hybrid.data.parallel_qa import load_xquad
    from hf_hybrid.evaluation.retrieval import ParallelBenchmark, evaluate_parallel
    from hf_hybrid.models.encoder import Encoder

    source = shared_data("xquad")
    cache = tmp_path / "datasets-cache"
    export_xquad_retrieval(source, tmp_path / "xquad-retrieval", LANGS, datasets_cache=cache)
    # datasets reads HF_HUB_OFFLINE and HF_DATASETS_CACHE when imported: a fresh process, as a user runs it
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", MTEB_OFFLINE, str(tiny_model_dir), ",".join(LANGS)],
                         check=False, env=env, capture_output=True, text=True, timeout=900)
    line = next((out for out in run.stdout.splitlines() if out.startswith("SCORES ")), None)
    assert line, run.stderr[-3000:]
    scores = {s["hf_subset"]: s for s in json.loads(line[len("SCORES "):])["validation"]}
    assert sorted(scores) == LANGS

    encoder = Encoder.from_pretrained(str(tiny_model_dir))
    bench = ParallelBenchmark.from_rows(load_xquad(source, LANGS))
    ours = evaluate_parallel(encoder, bench, settings=("monolingual",), progress=False)["monolingual"]["per_setting"]
    for lang in LANGS:
        # ids only break ties (MTEB by doc id, the toolkit in the query's favour): there are none
        candidates = encoder.encode(bench.candidates[lang], "passage")
        assert len(torch.unique(candidates, dim=0)) == len(candidates)
        # The tiny random model scores many paragraphs within float noise of each other, and the two encoders'
        # batches pad differently, so a few near-ties can swap (seen: 2.5e-4 on nDCG@10 once in several runs).
        # With multilingual-e5-small the two routes agree to 5e-6 (README).
        for metric in ("ndcg@10", "recall@1", "recall@5", "recall@10", "recall@100"):
            assert scores[lang][metric.replace("@", "_at_")] == pytest.approx(ours[lang][metric], abs=2e-3), \
                (lang, metric)


def test_parallel_qa_export_loads_back_as_the_same_benchmark(tmp_path, capsys):
    """The converted XQuAD-R (rows + every paragraph sentence) gives the benchmark of the raw folder."""
    from hf_hybrid.data.benchmark import load_benchmark

    source = shared_data("xquad-r")
    out = tmp_path / "xquad-r-converted"
    code, printed, _ = cli(capsys, "parallel-qa", "--source", str(source), "--out", str(out),
                           "--languages", "de", "zh")
    assert code == 0 and printed.strip() == str(out)
    for split in ("all", "test"):
        raw = load_benchmark(str(source), ["de", "zh"], split=split, n_folds=2)
        converted = load_benchmark(str(out), ["de", "zh"], split=split, n_folds=2)
        assert converted == raw
    assert len(raw.candidates["de"]) > len(raw.queries["de"]) // 2  # the pool is every sentence, not only answers
    assert_one_line_error(cli(capsys, "parallel-qa", "--source", str(source), "--out", str(out)),
                          "not an empty folder")
