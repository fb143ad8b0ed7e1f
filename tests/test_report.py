"""`hf-hybrid report`: real results.json files from the evaluator on synthetic vectors, one page with plots."""

import json
import re

import pytest
import torch

from hf_hybrid.cli import main
from hf_hybrid.evaluation.retrieval import ParallelBenchmark, evaluate_parallel

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class LookupEncoder:
    device = torch.device("cpu")

    def __init__(self, vectors):
        self.vectors = vectors

    def encode(self, texts, kind, batch_size=64, progress=False, lang=None):
        return torch.stack([self.vectors[t] for t in texts])


def results_for(langs, seed, noise, settings=("monolingual", "cross-lingual", "multilingual"), n=12):
    """Parallel topics with per-language offsets (a language bias) and noise; as `run_evaluation` writes them."""
    gen = torch.Generator().manual_seed(seed)
    offset = {lang: 0.8 * torch.randn(8, generator=gen) for lang in langs}
    vectors = {}
    for g in range(n):
        topic = torch.randn(8, generator=gen)
        for lang in langs:
            vectors[f"q{g}{lang}"] = topic + offset[lang] + noise * torch.randn(8, generator=gen)
            vectors[f"p{g}{lang}"] = topic + offset[lang] + noise * torch.randn(8, generator=gen)
    bench = ParallelBenchmark(languages=langs,
                              queries={lang: [(f"g{g}", f"q{g}{lang}") for g in range(n)] for lang in langs},
                              candidates={lang: [f"p{g}{lang}" for g in range(n)] for lang in langs},
                              relevant={lang: {f"g{g}": g for g in range(n)} for lang in langs})
    results = evaluate_parallel(LookupEncoder(vectors), bench, settings, progress=False)
    results["seconds"] = 0.5
    results["config"] = {"model": f"model-{seed}", "data": "synthetic", "split": "all"}
    results["sizes"] = {lang: {"queries": n, "candidates": n} for lang in langs}
    return results


def write(folder, results):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results))
    return results


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    langs = ["de", "en", "sw"]
    out = {"a": write(root / "a", results_for(langs, seed=1, noise=0.6)),
           "b": write(root / "b", results_for(langs, seed=2, noise=1.2)),
           "c": write(root / "c", results_for(["de", "en"], seed=3, noise=0.9,
                                              settings=("monolingual", "multilingual"))),
           "study": {}}
    (root / "study").mkdir()
    (root / "study" / "study.json").write_text(json.dumps({"config": {
        "model": "base-model", "data": "synthetic", "arms": ["base", "hybrid"], "folds": [0, 1],
        "eval_split": "test"}}))
    for fold in (0, 1):
        for i, arm in enumerate(["base", "hybrid"]):
            out["study"][arm, fold] = write(root / "study" / f"fold{fold}" / arm,
                                            results_for(langs, seed=10 + 2 * fold + i, noise=1.0 - 0.4 * i))
    return root, out


def table_after(page: str, heading: str) -> tuple[list[str], dict[str, list[str]]]:
    """The markdown table that follows `heading`: its header and its rows by first cell."""
    lines = page.splitlines()
    start = lines.index(heading) + 1
    while not lines[start].startswith("|"):
        start += 1
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([c.strip() for c in line.strip("|").split(" | ")])
    header, rows = table[0], table[2:]
    return header, {row[0]: row[1:] for row in rows}


def cells(values, fmt=".3f"):
    return [f"{v:{fmt}}" for v in values]


def mean(values):
    values = list(values)
    return sum(values) / len(values)


def test_report_of_runs_and_a_study(runs, tmp_path, capsys):
    root, res = runs
    out = tmp_path / "report"
    assert main(["report", str(root / "a"), str(root / "b"), str(root / "study"), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "report.md")
    page = (out / "report.md").read_text()
    study = res["study"]
    # a study arm is the mean over its folds of every number
    arm = {name: {"mono": lambda k, a=name: mean(study[a, f]["monolingual"]["per_setting"][k]["map"] for f in (0, 1)),
                  "avg": lambda s, m, a=name: mean(study[a, f][s]["average"][m] for f in (0, 1)),
                  "bias": lambda k, a=name: mean(study[a, f]["multilingual"]["bias"][k] for f in (0, 1))}
           for name in ("base", "hybrid")}

    header, summary = table_after(page, "## Averages per setting")
    assert header == ["average", "a", "b", "base", "hybrid"]
    for setting in ("monolingual", "cross-lingual", "multilingual"):
        for metric, label in (("map", "mAP"), ("ndcg@10", "nDCG@10"), ("recall@1", "Recall@1")):
            assert summary[f"{setting} {label}"] == cells(
                [res["a"][setting]["average"][metric], res["b"][setting]["average"][metric],
                 arm["base"]["avg"](setting, metric), arm["hybrid"]["avg"](setting, metric)])
    for key, label, fmt in (("same_language_share_mean", "same-language share of the top-k (mean)", ".2f"),
                            ("same_language_preference_mean", "same-language preference (mean; 1 = blind)", ".2f"),
                            ("rank_distance_mean", "rank distance (mean)", ".1f"),
                            ("rank_correlation_mean", "rank correlation (mean)", ".3f")):
        assert summary[f"multilingual {label}"] == cells(
            [res["a"]["multilingual"]["bias"][key], res["b"]["multilingual"]["bias"][key],
             arm["base"]["bias"](key), arm["hybrid"]["bias"](key)], fmt)
    assert len(set(summary["multilingual mAP"])) == 4  # the runs really differ

    _, mono = table_after(page, "### Monolingual")
    for lang in ("de", "en", "sw"):
        assert mono[lang] == cells([res["a"]["monolingual"]["per_setting"][lang]["map"],
                                    res["b"]["monolingual"]["per_setting"][lang]["map"],
                                    arm["base"]["mono"](lang), arm["hybrid"]["mono"](lang)])
    header, matrix = table_after(page, "#### a")
    assert header == ["query \\ candidate", "de", "en", "sw"]
    cross, mono_a = res["a"]["cross-lingual"]["per_setting"], res["a"]["monolingual"]["per_setting"]
    assert matrix["en"] == cells([cross["en-de"]["map"], mono_a["en"]["map"], cross["en-sw"]["map"]])
    _, matrix = table_after(page, "#### hybrid")
    sw_de = mean(study["hybrid", f]["cross-lingual"]["per_setting"]["sw-de"]["map"] for f in (0, 1))
    assert matrix["sw"][0] == f"{sw_de:.3f}"
    _, ranks = table_after(page, "### Mean rank of the relevant candidate, by candidate language")
    assert ranks["sw"][1] == f"{res['b']['multilingual']['bias']['mean_rank_by_candidate_language']['sw']:.1f}"

    assert "mean over folds 0, 1" in page and "all folds of an arm have the same languages" in page
    assert "24 queries and 24 candidates per language (summed over folds)" in page
    assert "model `model-1`, data `synthetic`" in page
    assert "Runs differ in languages" not in page

    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page)
    assert sorted(images) == sorted(["settings_map.png", "bias_profile.png", "cross_lingual_1_a.png",
                                     "cross_lingual_2_b.png", "cross_lingual_3_base.png",
                                     "cross_lingual_4_hybrid.png"])
    from matplotlib.image import imread

    for image in images:
        data = (out / image).read_bytes()
        assert data.startswith(PNG_MAGIC), image
        height, width = imread(out / image).shape[:2]
        assert width > 200 and height > 200, image


def test_names_metric_and_different_languages(runs, tmp_path, capsys):
    root, res = runs
    out = tmp_path / "report"
    args = ["report", str(root / "a"), str(root / "c"), str(root / "a" / "results.json"), "--out", str(out),
            "--metric", "ndcg@10", "--names", "x", "y|z", "x"]
    assert main(args) == 0
    page = (out / "report.md").read_text()
    header, summary = table_after(page, "## Averages per setting")
    assert header == ["average", "x", "y\\|z", "x-2"]  # made unique, escaped for the table
    # run c has no cross-lingual setting: a dash, not a zero, and no heatmap
    nd = res["a"]["cross-lingual"]["average"]["ndcg@10"]
    assert summary["cross-lingual nDCG@10"] == [f"{nd:.3f}", "–", f"{nd:.3f}"]
    assert "#### y|z" not in page and "#### x-2" in page
    assert "Runs differ in languages: x, x-2: de en sw; y|z: de en." in page
    _, multi = table_after(page, "### Multilingual pool, by query language")
    assert multi["sw"] == [f"{res['a']['multilingual']['per_setting']['sw']['ndcg@10']:.3f}", "–",
                           f"{res['a']['multilingual']['per_setting']['sw']['ndcg@10']:.3f}"]
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page):
        assert (out / image).read_bytes().startswith(PNG_MAGIC)


def bad_inputs(root, tmp):
    (tmp / "empty").mkdir()
    write(tmp / "malformed", {})
    (tmp / "malformed" / "results.json").write_text('{"languages": ["en"],')
    write(tmp / "unsupported", {"languages": ["en"], "map": 0.5})
    write(tmp / "wrong_pairs", {"languages": ["en", "de"], "cross-lingual": {
        "per_setting": {"en-fr": {"map": 0.5}}, "average": {"map": 0.5}}})
    study = tmp / "study"
    (study / "fold0" / "base").mkdir(parents=True)
    (study / "study.json").write_text(json.dumps({"config": {"arms": ["base"], "folds": [0, 1]}}))
    (study / "fold0" / "base" / "results.json").write_text((root / "a" / "results.json").read_text())
    mixed = tmp / "mixed_study"
    (mixed / "fold0").mkdir(parents=True)
    (mixed / "study.json").write_text(json.dumps({"config": {"arms": ["base"], "folds": [0, 1]}}))
    write(mixed / "fold0" / "base", json.loads((root / "a" / "results.json").read_text()))
    write(mixed / "fold1" / "base", json.loads((root / "c" / "results.json").read_text()))
    (tmp / "a_file").write_text("x")
    return {
        "missing": ([str(tmp / "nope")], "does not exist"),
        "empty": ([str(tmp / "empty")], "no results in"),
        "malformed": ([str(tmp / "malformed")], "not valid JSON"),
        "unsupported": ([str(tmp / "unsupported")], "none of the settings"),
        "wrong_pairs": ([str(tmp / "wrong_pairs")], "en-fr, outside the languages en de"),
        "study_missing_fold": ([str(study)], "missing fold1/base/results.json"),
        "study_mixed_languages": ([str(mixed)], "folds have different languages (fold0: de en sw; fold1: de en)"),
        "names": ([str(root / "a"), str(root / "study"), "--names", "one", "two"], "2 name(s) for 3 run(s)"),
        "metric": ([str(root / "a"), "--metric", "mrr"], "metric 'mrr' is in none of the results"),
        "out_is_a_file": ([str(root / "a"), "--out", str(tmp / "a_file")], "is a file, not a folder"),
    }


@pytest.mark.parametrize("case", ["missing", "empty", "malformed", "unsupported", "wrong_pairs", "study_missing_fold",
                                  "study_mixed_languages", "names", "metric", "out_is_a_file"])
def test_bad_input(case, runs, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HF_HYBRID_DEBUG", raising=False)
    args, fragment = bad_inputs(runs[0], tmp_path)[case]
    if "--out" not in args:
        args = [*args, "--out", str(tmp_path / "out")]
    assert main(["report", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert fragment in err[0]
    assert not (tmp_path / "out" / "report.md").exists()


def test_runs_keep_distinct_colours_past_ten():
    from hf_hybrid.evaluation.plots import run_colors

    assert run_colors(["a", "b"]) == {"a": "C0", "b": "C1"}
    many = run_colors([f"arm{i}" for i in range(14)])
    assert len(set(many.values())) == 14
